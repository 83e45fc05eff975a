// src/image/archive with archives built here (image-builder + the tar writer): docker save
// (legacy <id>/layer.tar with a symlinked duplicate, gzip-compressed), OCI layout tar with a
// multi-platform index, corrupt blobs refused with nothing left behind; export round trip.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { ImageService } from '../../src/image/service.ts';
import { exportImages, importImages } from '../../src/image/archive/index.ts';
import { digestOf } from '../../src/image/digest.ts';
import { writeTar, type TarWriteEntry } from '../../src/image/unpack/tar.ts';
import { buildImage, buildIndex, busyboxEntries } from '../helpers/image-builder.ts';

const dir = mkdtempSync(join(tmpdir(), 'corral-archive-test-'));
let n = 0;
const open = () => ImageService.open({ root: join(dir, `store-${++n}`), snapshotter: 'native' });

after(() => {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(dir));
  assert.deepEqual(mounts, []);
  rmSync(dir, { recursive: true, force: true });
});

const tarOf = (files: Array<[string, Buffer | string]>, extra: TarWriteEntry[] = []) => writeTar([...files.map(([name, data]) => ({ name, data })), ...extra]);

test('docker save (legacy layout, symlinked duplicate layer, gzip-compressed archive) imports and unpacks', async () => {
  const same = { entries: [{ name: 'dup', data: 'same layer twice' }], compression: 'none' as const };
  const img = buildImage([{ entries: busyboxEntries(), compression: 'none' }, same, { entries: [{ name: 'x', data: 'x' }], compression: 'none' }, same]);
  const layers = img.manifest.layers.map((l) => img.blobs.get(l.digest)!);
  const cfg = img.blobs.get(img.manifest.config.digest)!;
  const cfgName = `${img.manifest.config.digest.slice(7)}.json`;
  const archive = tarOf(
    [[cfgName, cfg], ['aaa/layer.tar', layers[0]!], ['aaa/VERSION', '1.0'], ['aaa/json', '{}'], ['bbb/layer.tar', layers[1]!], ['ccc/layer.tar', layers[2]!],
      ['manifest.json', JSON.stringify([{ Config: cfgName, RepoTags: ['example.com/legacy:1', 'legacy:latest'], Layers: ['aaa/layer.tar', 'bbb/layer.tar', 'ccc/layer.tar', 'ddd/layer.tar'] }])],
      ['repositories', '{}']],
    [{ name: 'ddd/layer.tar', type: 'symlink', linkname: '../bbb/layer.tar' }],
  );
  const f = join(dir, 'legacy.tar.gz');
  writeFileSync(f, gzipSync(archive));
  const svc = await open();
  try {
    const res = await importImages(svc, f);
    assert.equal(res.format, 'docker-archive');
    const info = res.images[0]!;
    assert.equal(info.id, img.manifest.config.digest, 'image id is the config digest');
    assert.ok(info.unpacked);
    assert.deepEqual(info.names.filter((x) => !x.includes('@')).sort(), ['docker.io/library/legacy:latest', 'example.com/legacy:1']);
    assert.equal(svc.list().length, 4, 'two tags + two repo@digest names');
    // nothing but the image's own blobs stayed (VERSION and json files are dropped)
    const blobs = (await svc.content.list()).map((b) => b.digest).sort();
    const want = [info.digest, img.manifest.config.digest, ...img.manifest.layers.map((l) => l.digest)];
    assert.deepEqual(blobs, [...new Set(want)].sort());
    assert.deepEqual(await svc.content.ingests(), []);
    // export as docker again: same config and layers, readable by skopeo
    const out = join(dir, 'legacy-out.tar');
    await exportImages(svc, ['example.com/legacy:1'], out, 'docker');
    const sk = spawnSync('skopeo', ['inspect', '--config', `docker-archive:${out}`], { encoding: 'utf8' });
    assert.equal(sk.status, 0, sk.stderr);
    assert.deepEqual(JSON.parse(sk.stdout).rootfs.diff_ids, img.config.rootfs.diff_ids);
  } finally {
    svc.close();
  }
});

test('OCI layout tar with a multi-platform index: the host platform is unpacked, names from annotations', async () => {
  const amd = buildImage([{ entries: [{ name: 'arch', data: 'amd64' }] }], { platform: { os: 'linux', architecture: 'amd64' } });
  const arm = buildImage([{ entries: [{ name: 'arch', data: 'arm64' }] }], { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } });
  const idx = buildIndex([amd, arm]);
  const files: Array<[string, Buffer | string]> = [['oci-layout', '{"imageLayoutVersion":"1.0.0"}']];
  for (const i of [amd, arm]) {
    files.push([`blobs/sha256/${i.manifestDesc.digest.slice(7)}`, i.manifestData]);
    for (const [d, b] of i.blobs) files.push([`blobs/sha256/${d.slice(7)}`, b]);
  }
  files.push([`blobs/sha256/${idx.desc.digest.slice(7)}`, idx.data]);
  files.push(['index.json', JSON.stringify({ schemaVersion: 2, manifests: [{ ...idx.desc, annotations: { 'org.opencontainers.image.ref.name': 'v1' } }, { ...idx.desc, annotations: { 'io.containerd.image.name': 'example.com/multi:full' } }] })]);
  const f = join(dir, 'multi.tar');
  writeFileSync(f, tarOf(files));
  const svc = await ImageService.open({ root: join(dir, `store-${++n}`), snapshotter: 'native', platform: { os: 'linux', architecture: 'arm64' } });
  try {
    await assert.rejects(importImages(svc, f), { code: 'INVALID_ARGUMENT', message: /only by the tag "v1".*--name/ });
    const res = await importImages(svc, f, { name: 'example.com/multi' });
    assert.equal(res.format, 'oci-archive');
    assert.equal(res.images.length, 1, 'two entries of one index: one image');
    const info = svc.get('example.com/multi:v1');
    assert.equal(info.digest, idx.desc.digest);
    assert.equal(info.manifestDigest, arm.manifestDesc.digest);
    assert.equal(svc.get('example.com/multi:full').id, arm.manifest.config.digest);
    const mounted = svc.snapshotter.applyDir(info.chainId.length ? (await svc.snapshotter.prepare('probe', info.chainId), 'probe') : '');
    assert.equal(readFileSync(join(mounted, 'arch'), 'utf8'), 'arm64');
    await svc.snapshotter.remove('probe');
    // only this platform was imported, so the OCI export holds its manifest (not the incomplete index)
    const out = join(dir, 'multi-out.tar');
    await exportImages(svc, ['example.com/multi:v1'], out, 'oci');
    const list = spawnSync('tar', ['-tf', out], { encoding: 'utf8' }).stdout;
    assert.match(list, new RegExp(arm.manifestDesc.digest.slice(7)));
    assert.doesNotMatch(list, new RegExp(amd.manifestDesc.digest.slice(7)));
  } finally {
    svc.close();
  }
});

test('a blob whose content does not match its name is refused; nothing is left in the store', async () => {
  const img = buildImage([{ entries: [{ name: 'a', data: 'a' }] }]);
  const files: Array<[string, Buffer | string]> = [['oci-layout', '{"imageLayoutVersion":"1.0.0"}'], [`blobs/sha256/${img.manifestDesc.digest.slice(7)}`, img.manifestData]];
  for (const [d, b] of img.blobs) files.push([`blobs/sha256/${d.slice(7)}`, d === img.manifest.layers[0]!.digest ? Buffer.from('evil') : b]);
  files.push(['index.json', JSON.stringify({ schemaVersion: 2, manifests: [{ ...img.manifestDesc, annotations: { 'io.containerd.image.name': 'example.com/bad:1' } }] })]);
  const f = join(dir, 'bad.tar');
  writeFileSync(f, tarOf(files));
  const svc = await open();
  try {
    await assert.rejects(importImages(svc, f), { code: 'INVALID_ARGUMENT', message: /does not hold the content its name says/ });
    assert.deepEqual(svc.list(), []);
    assert.deepEqual(await svc.content.list(), [], 'blobs written before the failure removed');
    assert.deepEqual(await svc.content.ingests(), []);
    assert.deepEqual(readdirSync(svc.snapshotter.root), []);
    await assert.rejects(importImages(svc, join(dir, 'missing.tar')), { code: 'NOT_FOUND' });
    writeFileSync(join(dir, 'junk.tar'), tarOf([['hello', 'world']]));
    await assert.rejects(importImages(svc, join(dir, 'junk.tar')), { message: /neither a docker save archive/ });
    assert.equal(digestOf('x').length, 71);
  } finally {
    svc.close();
  }
});
