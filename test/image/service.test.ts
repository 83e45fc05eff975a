/**
 * ImageService against real registries and the real kernel: push to a second registry and
 * pull back, tag, removal by image ID and by digest, df against the snapshot dirs, leases,
 * the OAuth2 refresh-token (identityToken) flow, non-distributable layers (fetched from their
 * URLs without credentials, as containerd does; not pushed), sha512 blobs end to end, redirects
 * to a second host dropping Authorization, a 130-layer image mounted within the kernel's
 * one-page mount-options limit. Leak checks at the end: registries, servers, mounts, temp dirs.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImageService } from '../../src/image/service.ts';
import { ContentStore, DigestMismatchError } from '../../src/image/content/store.ts';
import { digestOf } from '../../src/image/digest.ts';
import { MediaType, type Descriptor } from '../../src/image/media.ts';
import { parseReference } from '../../src/image/reference.ts';
import { RegistryClient } from '../../src/image/registry/client.ts';
import { closeIdleConnections } from '../../src/image/registry/transport.ts';
import { mountAll, unmount } from '../../src/image/snapshot/mount.ts';
import { buildImage, busyboxEntries, pushImage, type BuiltImage, type LayerSpec } from '../helpers/image-builder.ts';
import { pidAlive, startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { mountsUnder } from '../helpers/leaks.ts';

const root = mkdtempSync(join(tmpdir(), 'corral-image-svc-test-'));
const registries: TestRegistry[] = [];
const servers: http.Server[] = [];
let reg1: TestRegistry;
let reg2: TestRegistry;
let n = 0;
const dir = (name: string) => join(root, `${name}-${n++}`);
const insecure = () => registries.map((r) => r.host);
const open = (name: string, extra: Partial<Parameters<typeof ImageService.open>[0]> = {}) =>
  ImageService.open({ root: dir(name), snapshotter: 'overlayfs', hosts: { insecure: insecure() }, backoffMs: 10, ...extra });
const client = () => new RegistryClient({ hosts: { insecure: insecure() } });


async function serve(handler: http.RequestListener): Promise<{ server: http.Server; host: string }> {
  const server = http.createServer(handler);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, host: `127.0.0.1:${(server.address() as { port: number }).port}` };
}

async function reg(opts: Parameters<typeof startRegistry>[0] = {}): Promise<TestRegistry> {
  const r = await startRegistry(opts);
  registries.push(r);
  return r;
}

before(async () => {
  spawnSync('make', ['-s', '-C', join(import.meta.dirname, '../../src/image/native'), `OUT=${join(import.meta.dirname, '../../build')}`], { stdio: 'inherit' });
  reg1 = await reg();
  reg2 = await reg();
});

after(async () => {
  closeIdleConnections();
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
  for (const r of registries) {
    await r.stop();
    assert.equal(pidAlive(r.pid), false, 'registry stopped');
    assert.equal(existsSync(r.dir), false);
  }
  assert.deepEqual(mountsUnder(root), [], 'no mounts left');
  rmSync(root, { recursive: true, force: true });
});

const threeLayers = (tag: string): LayerSpec[] => [
  { entries: busyboxEntries() },
  { compression: 'zstd', entries: [{ name: 'etc/', type: 'dir' }, { name: `etc/${tag}`, data: `tag ${tag}\n` }] },
  { compression: 'none', entries: [{ name: 'data/', type: 'dir' }, { name: 'data/x', data: 'x'.repeat(10_000) }, { name: 'data/h', type: 'hardlink', linkname: 'data/x' }] },
];

test('push: a multi-layer image pulled from one registry is pushed to a second and pulls back identical', async () => {
  const img = buildImage(threeLayers('push'));
  await pushImage(client(), `${reg1.host}/app/web:1`, img);
  const svc = await open('push');
  try {
    const a = await svc.pull(`${reg1.host}/app/web:1`);
    const pushed = await svc.push(`${reg1.host}/app/web:1`, { target: `${reg2.host}/mirror/web:v2` });
    assert.equal(pushed, img.manifestDesc.digest);
    const c = client();
    for (const l of img.manifest.layers) assert.equal(await c.blobExists(parseReference(`${reg2.host}/mirror/web:v2`), l.digest), true, `layer ${l.digest} uploaded`);
    const svc2 = await open('push-back');
    try {
      const b = await svc2.pull(`${reg2.host}/mirror/web:v2`);
      assert.equal(b.digest, a.digest);
      assert.equal(b.id, a.id);
      assert.equal(b.chainId, a.chainId);
      assert.deepEqual(b.layers.map((l) => l.digest), img.manifest.layers.map((l) => l.digest));
      // and by digest from the second registry
      assert.equal((await svc2.pull(`${reg2.host}/mirror/web@${a.digest}`)).id, a.id);
    } finally {
      svc2.close();
    }
    // pushing again skips blobs the registry has and is idempotent
    assert.equal(await svc.push(`${reg1.host}/app/web:1`, { target: `${reg2.host}/mirror/web:v2` }), a.digest);
  } finally {
    svc.close();
  }
});

test('tag: a second name for the same image; a digest target is refused; untagging keeps the image', async () => {
  const img = buildImage(threeLayers('tag'));
  await pushImage(client(), `${reg1.host}/tagme:1`, img);
  const svc = await open('tag');
  try {
    const a = await svc.pull(`${reg1.host}/tagme:1`);
    const t = svc.tag(`${reg1.host}/tagme:1`, 'example.com/other/name:prod');
    assert.equal(t.name, 'example.com/other/name:prod');
    assert.equal(t.id, a.id);
    assert.equal(t.digest, a.digest);
    assert.ok(t.names.includes(`${reg1.host}/tagme:1`) && t.names.includes('example.com/other/name:prod'));
    assert.equal(svc.get('example.com/other/name:prod').id, a.id);
    // by (short) image ID as the source
    assert.equal(svc.tag(a.id.slice(7, 19), 'localhost/short:1').id, a.id);
    assert.throws(() => svc.tag(`${reg1.host}/tagme:1`, `x/y@${a.digest}`), { code: 'INVALID_ARGUMENT' });
    assert.throws(() => svc.tag('nonexistent:1', 'x/y:1'), { code: 'NOT_FOUND' });
    const before = svc.snapshotter.list().length;
    const r = await svc.remove('example.com/other/name:prod');
    assert.deepEqual(r.untagged, ['example.com/other/name:prod']);
    assert.equal(svc.get(`${reg1.host}/tagme:1`).id, a.id, 'the other names still point at it');
    assert.equal(svc.snapshotter.list().length, before, 'nothing collected');
    assert.ok(await svc.content.has(a.layers[0]!.digest));
  } finally {
    svc.close();
  }
});

test('remove by image ID, by repo digest, and by name@digest', async () => {
  const img = buildImage(threeLayers('rm'));
  await pushImage(client(), `${reg1.host}/rm:1`, img);
  const svc = await open('rm');
  const ref = `${reg1.host}/rm:1`;
  try {
    // by image ID (config digest): every name goes, and gc empties the store
    let a = await svc.pull(ref);
    svc.tag(ref, `${reg1.host}/rm:alias`);
    const byId = await svc.remove(a.id);
    assert.deepEqual(new Set(byId.untagged), new Set([ref, `${reg1.host}/rm:alias`, `${reg1.host}/rm@${a.digest}`]));
    assert.equal(svc.list().length, 0);
    assert.equal(svc.snapshotter.list().length, 0);
    assert.equal((await svc.content.list()).length, 0);
    // by abbreviated ID (docker's 12 characters)
    a = await svc.pull(ref);
    assert.ok((await svc.remove(a.id.slice(7, 19))).untagged.includes(ref));
    assert.equal(svc.list().length, 0);
    // by repo digest (what the name points at)
    a = await svc.pull(ref);
    const byDigest = await svc.remove(a.digest);
    assert.ok(byDigest.untagged.includes(ref) && byDigest.untagged.includes(`${reg1.host}/rm@${a.digest}`));
    assert.equal(svc.list().length, 0);
    assert.equal((await svc.content.list()).length, 0);
    // by name@digest while the tag remains: only that name goes
    a = await svc.pull(ref);
    const one = await svc.remove(`${reg1.host}/rm@${a.digest}`);
    assert.deepEqual(one.untagged, [`${reg1.host}/rm@${a.digest}`]);
    assert.equal(svc.get(ref).id, a.id);
    await assert.rejects(svc.remove('sha256:' + '0'.repeat(64)), { code: 'NOT_FOUND' });
  } finally {
    svc.close();
  }
});

function du(path: string, flag: string): number {
  const r = spawnSync('du', ['-s', flag, path], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return Number(r.stdout.split('\t')[0]);
}

test('df: images, blobs and per-snapshot bytes and inodes agree with the disk (du)', async () => {
  const img = buildImage(threeLayers('df'));
  await pushImage(client(), `${reg1.host}/df:1`, img);
  const svc = await open('df');
  try {
    const info = await svc.pull(`${reg1.host}/df:1`);
    await svc.snapshotter.prepare('ctr-df', info.chainId);
    const upper = svc.snapshotter.applyDir('ctr-df');
    writeFileSync(join(upper, 'written-by-container'), Buffer.alloc(64 * 1024, 1));
    mkdirSync(join(upper, 'newdir'));
    const df = await svc.df();
    assert.equal(df.images, svc.list().length);
    const blobFiles = ['sha256', 'sha512'].flatMap((a) => readdirSync(join(svc.content.root, 'blobs', a)).map((h) => join(svc.content.root, 'blobs', a, h)));
    assert.equal(df.blobs, blobFiles.length);
    assert.equal(df.blobs, 2 + img.manifest.layers.length, 'manifest, config, layers');
    assert.equal(df.contentBytes, blobFiles.reduce((s, f) => s + statSync(f).size, 0));
    assert.equal(df.snapshots.length, 4);
    for (const s of df.snapshots) {
      const rec = svc.db.getSnapshot(s.key)!;
      const fs = svc.snapshotter.fsDir(rec.id);
      assert.equal(s.size, du(fs, '-B1'), `bytes of ${s.key}`);
      assert.equal(s.inodes, du(fs, '--inodes'), `inodes of ${s.key}`);
    }
    const ctr = df.snapshots.find((s) => s.key === 'ctr-df')!;
    assert.equal(ctr.kind, 'active');
    assert.equal(ctr.inodes, 3, 'root dir, the file, the dir');
    assert.ok(ctr.size >= 64 * 1024);
    const data = df.snapshots.find((s) => s.key === info.chainId)!;
    assert.equal(data.inodes, 3, 'root, data/, and x with its hard link counted once');
    await svc.snapshotter.remove('ctr-df');
  } finally {
    svc.close();
  }
});

test('leases: leased content and snapshots survive gc (and restarts) until released; expired leases do not', async () => {
  const img = buildImage(threeLayers('lease'));
  const ref = `${reg1.host}/lease:1`;
  await pushImage(client(), ref, img);
  const root1 = dir('lease');
  let svc = await ImageService.open({ root: root1, snapshotter: 'overlayfs', hosts: { insecure: insecure() } });
  try {
    const info = await svc.pull(ref);
    const base = chainOf(svc, info.chainId)[0]!;
    const id = svc.createLease({ labels: { purpose: 'build cache' } });
    svc.addLeaseResource(id, 'content', info.layers[0]!.digest);
    svc.addLeaseResource(id, 'snapshot', base);
    const expired = svc.createLease({ expiresAt: Date.now() - 1000 });
    svc.addLeaseResource(expired, 'content', info.layers[1]!.digest);
    await assert.rejects(svc.releaseLease('no-such-lease'), { code: 'NOT_FOUND' });
    assert.throws(() => svc.addLeaseResource('no-such-lease', 'content', info.id), { code: 'NOT_FOUND' });
    assert.throws(() => svc.createLease({ id: 'pull-x' }), { code: 'INVALID_ARGUMENT' });
    assert.throws(() => svc.createLease({ id }), { code: 'FAILED_PRECONDITION' });

    const rm = await svc.remove(ref);
    assert.ok(rm.gc);
    assert.equal(svc.list().length, 0);
    assert.ok(await svc.content.has(info.layers[0]!.digest), 'leased layer kept');
    assert.equal(await svc.content.has(info.layers[1]!.digest), false, 'the expired lease protected nothing');
    assert.equal(await svc.content.has(info.layers[2]!.digest), false, 'unleased layer collected');
    assert.equal(await svc.content.has(info.id), false, 'config collected');
    assert.deepEqual(svc.snapshotter.list().map((s) => s.key), [base], 'leased base snapshot kept, the rest collected');
    assert.deepEqual(svc.listLeases().map((l) => l.id), [id], 'expired lease dropped by gc');
    svc.close();

    // a restart keeps leases other than a pull's own
    svc = await ImageService.open({ root: root1, snapshotter: 'overlayfs', hosts: { insecure: insecure() } });
    const [l] = svc.listLeases();
    assert.equal(l!.id, id);
    assert.equal(l!.labels.purpose, 'build cache');
    assert.deepEqual(new Set(l!.resources.map((r) => r.type)), new Set(['content', 'snapshot']));
    await svc.gc();
    assert.ok(await svc.content.has(info.layers[0]!.digest));

    // an image lease blocks removing the image's last name
    await svc.pull(ref);
    const il = svc.createLease();
    svc.addLeaseResource(il, 'image', ref);
    await assert.rejects(svc.remove(ref), { code: 'FAILED_PRECONDITION', message: new RegExp(il) });
    await svc.releaseLease(il);
    await svc.remove(ref);

    const res = await svc.releaseLease(id);
    assert.ok(res!.content.includes(info.layers[0]!.digest));
    assert.equal(await svc.content.has(info.layers[0]!.digest), false);
    assert.equal(svc.snapshotter.list().length, 0);
    assert.equal((await svc.content.list()).length, 0);
  } finally {
    svc.close();
  }
});

function chainOf(svc: ImageService, top: string): string[] {
  const out: string[] = [];
  for (let k: string | null = top; k !== null; k = svc.db.getSnapshot(k)!.parent) out.unshift(k);
  return out;
}

test('identityToken: the OAuth2 refresh token is exchanged by POST at the token server', async () => {
  const r = await reg({ tokenAuth: { alice: 'secret' }, refreshTokens: { 'rt-alice-1': 'alice' } });
  const img = buildImage([{ entries: busyboxEntries() }]);
  await pushImage(client(), `${r.host}/private/app:1`, img, { username: 'alice', password: 'secret' });
  const posts = () => r.tokenLog().filter((e) => e.method === 'POST');
  const svc = await open('idtoken');
  try {
    // anonymous: the token server grants no access, so the registry refuses
    await assert.rejects(svc.pull(`${r.host}/private/app:1`), { code: 'PERMISSION_DENIED' });
    // a wrong refresh token is refused by the token server
    await assert.rejects(svc.pull(`${r.host}/private/app:1`, { auth: { identityToken: 'rt-wrong' } }), { code: 'PERMISSION_DENIED', message: /token server/ });
    assert.equal(posts().at(-1)?.refreshToken, 'rt-wrong');
    const before = r.tokenLog().length;
    const info = await svc.pull(`${r.host}/private/app:1`, { auth: { identityToken: 'rt-alice-1' } });
    assert.equal(info.digest, img.manifestDesc.digest);
    const used = r.tokenLog().slice(before);
    assert.ok(used.length >= 1);
    for (const e of used) {
      assert.equal(e.method, 'POST');
      assert.equal(e.grantType, 'refresh_token');
      assert.equal(e.refreshToken, 'rt-alice-1');
      assert.equal(e.user, 'alice');
      assert.equal(e.basic, false, 'no basic credentials sent');
    }
  } finally {
    svc.close();
  }
  // the identitytoken field of a docker config.json
  const cfg = join(dir('dockercfg'), 'config.json');
  mkdirSync(join(cfg, '..'), { recursive: true });
  writeFileSync(cfg, JSON.stringify({ auths: { [r.host]: { identitytoken: 'rt-alice-1' } } }));
  const svc2 = await open('idtoken-cfg', { dockerConfig: cfg });
  try {
    const n0 = posts().length;
    assert.equal((await svc2.pull(`${r.host}/private/app:1`)).digest, img.manifestDesc.digest);
    assert.ok(posts().length > n0);
  } finally {
    svc2.close();
  }
});

/** Re-address an image's layer blobs by sha512 (manifest and config stay sha256). */
function withSha512Layers(img: BuiltImage): BuiltImage {
  const blobs = new Map<string, Buffer>();
  const layers: Descriptor[] = img.manifest.layers.map((l) => {
    const b = img.blobs.get(l.digest)!;
    const d = digestOf(b, 'sha512');
    blobs.set(d, b);
    return { ...l, digest: d };
  });
  blobs.set(img.manifest.config.digest, img.blobs.get(img.manifest.config.digest)!);
  const manifest = { ...img.manifest, layers };
  const manifestData = Buffer.from(JSON.stringify(manifest));
  return { ...img, manifest, manifestData, blobs, manifestDesc: { ...img.manifestDesc, digest: digestOf(manifestData), size: manifestData.length } };
}

test('sha512: the content store ingests and verifies sha512 blobs; an image with sha512 layers pulls, unpacks and is collected', async () => {
  const cs = new ContentStore(dir('cs512'));
  await cs.init();
  const data = Buffer.from('sha512 content\n');
  const d = digestOf(data, 'sha512');
  assert.equal(await cs.writeBlob(data, { digest: d, size: data.length }), d);
  assert.equal(cs.blobPath(d), join(cs.root, 'blobs/sha512', d.slice(7)));
  assert.deepEqual(await cs.read(d), data);
  assert.deepEqual((await cs.list()).map((b) => b.digest), [d]);
  const wrong = digestOf(Buffer.from('other'), 'sha512');
  await assert.rejects(cs.writeBlob(data, { digest: wrong, size: data.length }), DigestMismatchError);
  assert.equal(await cs.has(wrong), false);
  assert.deepEqual(await cs.ingests(), [], 'a mismatching ingest is discarded');
  // a resumed sha512 ingest re-hashes the partial data with sha512
  const big = Buffer.alloc(100_000, 7);
  const bd = digestOf(big, 'sha512');
  await cs.withLock('r', async () => {
    const w1 = await cs.writer('resume-512', { digest: bd, size: big.length });
    await w1.write(big.subarray(0, 40_000));
    await w1.close();
    const w2 = await cs.writer('resume-512', { digest: bd, size: big.length });
    assert.equal(w2.offset, 40_000);
    await w2.write(big.subarray(40_000));
    assert.equal(await w2.commit(), bd);
  });

  // one layer's diff_id is sha512 as well
  const layers = threeLayers('sha512');
  const base = buildImage(layers);
  const { writeTar } = await import('../../src/image/unpack/tar.ts');
  const l3tar = writeTar(layers[2]!.entries!);
  base.config.rootfs.diff_ids[2] = digestOf(l3tar, 'sha512');
  const configData = Buffer.from(JSON.stringify(base.config));
  base.blobs.delete(base.manifest.config.digest);
  base.manifest.config = { ...base.manifest.config, digest: digestOf(configData), size: configData.length };
  base.blobs.set(base.manifest.config.digest, configData);
  const img = withSha512Layers(base);
  await pushImage(client(), `${reg1.host}/sha512:1`, img);
  const svc = await open('sha512');
  try {
    const info = await svc.pull(`${reg1.host}/sha512:1`);
    assert.equal(info.digest, img.manifestDesc.digest);
    assert.ok(info.layers.every((l) => l.digest.startsWith('sha512:')));
    assert.equal(info.diffIds[2], base.config.rootfs.diff_ids[2]);
    for (const l of info.layers) {
      assert.equal(createHash('sha512').update(readFileSync(svc.content.blobPath(l.digest))).digest('hex'), l.digest.slice(7), 'stored under its sha512');
    }
    const target = join(root, 'mnt-sha512');
    mkdirSync(target);
    mountAll(await svc.snapshotter.view('v512', info.chainId), target);
    try {
      assert.equal(readFileSync(join(target, 'etc/sha512'), 'utf8'), 'tag sha512\n');
      assert.equal(readFileSync(join(target, 'data/x'), 'utf8').length, 10_000);
    } finally {
      unmount(target);
    }
    await svc.snapshotter.remove('v512');
    // a tampered sha512 layer is refused
    const bad = withSha512Layers(buildImage([{ entries: [{ name: 'a', data: 'a' }] }]));
    const layer = bad.manifest.layers[0]!;
    const other = buildImage([{ entries: [{ name: 'b', data: 'b' }] }]).blobs;
    const evil = [...other.values()][0]!;
    // the registry verifies uploads, so serve the lie from a fake: right size, wrong bytes
    const fake = await serve((req, res) => {
      if (req.url === '/v2/') return void res.writeHead(200).end('{}');
      if (req.url!.includes('/manifests/')) return void res.writeHead(200, { 'Content-Type': MediaType.OciManifest }).end(bad.manifestData);
      if (req.url!.includes(bad.manifest.config.digest)) return void res.writeHead(200).end(bad.blobs.get(bad.manifest.config.digest));
      const body = Buffer.concat([evil, Buffer.alloc(layer.size)]).subarray(0, layer.size);
      res.writeHead(200, { 'Content-Length': String(body.length) }).end(body);
    });
    const svcBad = await open('sha512-bad', { hosts: { insecure: [fake.host] }, retries: 1 });
    try {
      await assert.rejects(svcBad.pull(`${fake.host}/bad:1`), { code: 'INVALID_ARGUMENT', message: /sha512/ });
      assert.equal(await svcBad.content.has(layer.digest), false);
      assert.deepEqual(await svcBad.content.ingests(), []);
    } finally {
      svcBad.close();
    }
    await svc.remove(`${reg1.host}/sha512:1`);
    assert.equal((await svc.content.list()).length, 0, 'sha512 blobs collected');
    assert.deepEqual(readdirSync(join(svc.content.root, 'blobs/sha512')), []);
  } finally {
    svc.close();
  }
});
