/**
 * Pull from a real registry (docker-registry) into a real store: unpack fidelity for the
 * overlay and copy snapshotters, malicious layers refused with nothing left behind, GC,
 * concurrent pulls sharing work. Leak checks at the end: mounts, processes, temp dirs.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImageService } from '../../src/image/service.ts';
import { RegistryClient } from '../../src/image/registry/client.ts';
import { closeIdleConnections } from '../../src/image/registry/transport.ts';
import { mountAll, unmount } from '../../src/image/snapshot/mount.ts';
import { writeTar } from '../../src/image/unpack/tar.ts';
import { NativeHelper } from '../../src/image/unpack/native.ts';
import { buildImage, busyboxEntries, pushImage, pushIndex, type LayerSpec } from '../helpers/image-builder.ts';
import { startRegistry, pidAlive, type TestRegistry } from '../helpers/registry.ts';

const root = mkdtempSync(join(tmpdir(), 'corral-image-test-'));
let reg: TestRegistry;
let client: RegistryClient;
const hosts = () => ({ insecure: [reg.host] });

function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m.startsWith(dir));
}

async function xattr(rootDir: string, rel: string, name: string): Promise<string | null> {
  const h = new NativeHelper(rootDir);
  try {
    const v = await h.getxattr(rel, name);
    return v === null ? null : v.toString('hex');
  } finally {
    await h.close();
  }
}

before(async () => {
  spawnSync('make', ['-s', '-C', join(import.meta.dirname, '../../src/image/native'), `OUT=${join(import.meta.dirname, '../../build')}`], { stdio: 'inherit' });
  reg = await startRegistry();
  client = new RegistryClient({ hosts: hosts() });
});

after(async () => {
  closeIdleConnections();
  await reg?.stop();
  assert.equal(pidAlive(reg.pid), false, 'registry process stopped');
  assert.deepEqual(mountsUnder(root), [], 'no mounts left');
  rmSync(root, { recursive: true, force: true });
  assert.equal(existsSync(reg.dir), false);
});

const cap = Buffer.from('0100000200200000000000000000000000000000', 'hex'); // cap_net_bind_service effective

function fidelityLayers(): LayerSpec[] {
  return [
    { entries: busyboxEntries() },
    {
      compression: 'zstd',
      entries: [
        { name: 'data/', type: 'dir', mode: 0o750, uid: 1000, gid: 1001, mtime: 1600000000 },
        { name: 'data/file', data: 'hello\n', mode: 0o4755, uid: 1000, gid: 1001, mtime: 1500000000 },
        { name: 'data/hard', type: 'hardlink', linkname: 'data/file' },
        { name: 'data/sym', type: 'symlink', linkname: '../etc/passwd', uid: 7, gid: 8 },
        { name: 'data/fifo', type: 'fifo', mode: 0o640 },
        { name: 'data/null', type: 'char', mode: 0o666, devmajor: 1, devminor: 3 },
        { name: 'data/cap', data: 'x', mode: 0o755, xattrs: { 'security.capability': cap, 'user.note': 'v' } },
        { name: 'data/' + 'long/'.repeat(30) + 'deep.txt', data: 'deep' },
        { name: 'gone/', type: 'dir' },
        { name: 'gone/a', data: 'a' },
        { name: 'opq/', type: 'dir' },
        { name: 'opq/old', data: 'old' },
      ],
    },
    {
      compression: 'none',
      entries: [
        { name: '.wh.gone', data: '' },
        { name: 'opq/', type: 'dir' },
        { name: 'opq/.wh..wh..opq', data: '' },
        { name: 'opq/new', data: 'new' },
        { name: 'etc/.wh.group', data: '' },
      ],
    },
  ];
}

for (const kind of ['overlayfs', 'native'] as const) {
  test(`pull and unpack preserves everything (${kind})`, async () => {
    const img = buildImage(fidelityLayers());
    await pushImage(client, `${reg.host}/fidelity:${kind}`, img);
    const svc = await ImageService.open({ root: join(root, `fid-${kind}`), snapshotter: kind, hosts: hosts() });
    try {
      const events: string[] = [];
      const info = await svc.pull(`${reg.host}/fidelity:${kind}`, { onProgress: (e) => events.push(e.type) });
      assert.equal(info.digest, img.manifestDesc.digest);
      assert.equal(info.id, img.manifest.config.digest);
      assert.ok(info.unpacked);
      assert.ok(events.includes('resolved') && events.includes('done') && events.includes('unpacked'));
      const mounts = await svc.snapshotter.prepare('ctr-1', info.chainId);
      const target = join(root, `mnt-${kind}`);
      mkdirSync(target);
      mountAll(mounts, target);
      try {
        const r = spawnSync(join(target, 'bin/busybox'), ['true']);
        assert.equal(r.status, 0);
        const f = lstatSync(join(target, 'data/file'));
        assert.equal(f.mode & 0o7777, 0o4755);
        assert.equal(f.uid, 1000);
        assert.equal(f.gid, 1001);
        assert.equal(f.mtimeMs, 1500000000 * 1000);
        assert.equal(statSync(join(target, 'data')).mtimeMs, 1600000000 * 1000);
        assert.equal(lstatSync(join(target, 'data/hard')).ino, f.ino);
        assert.equal(readlinkSync(join(target, 'data/sym')), '../etc/passwd');
        assert.equal(lstatSync(join(target, 'data/sym')).uid, 7);
        assert.ok(lstatSync(join(target, 'data/fifo')).isFIFO());
        const n = lstatSync(join(target, 'data/null'));
        assert.ok(n.isCharacterDevice());
        assert.equal(n.rdev, (1 << 8) | 3);
        assert.equal(await xattr(target, 'data/cap', 'security.capability'), cap.toString('hex'));
        assert.equal(await xattr(target, 'data/cap', 'user.note'), '76');
        assert.equal(readFileSync(join(target, 'data/' + 'long/'.repeat(30) + 'deep.txt'), 'utf8'), 'deep');
        assert.equal(existsSync(join(target, 'gone')), false, 'whiteout removed the directory');
        assert.equal(existsSync(join(target, 'etc/group')), false, 'whiteout removed the file');
        assert.ok(existsSync(join(target, 'etc/passwd')));
        assert.deepEqual(readdirSync(join(target, 'opq')), ['new'], 'opaque dir hides lower entries');
      } finally {
        unmount(target);
      }
      // the in-use image cannot be removed; after removing the container it can
      await assert.rejects(svc.remove(`${reg.host}/fidelity:${kind}`), { code: 'FAILED_PRECONDITION' });
      await svc.snapshotter.remove('ctr-1');
      const rm = await svc.remove(`${reg.host}/fidelity:${kind}`);
      assert.ok(rm.untagged.length >= 1);
      assert.equal(svc.list().length, 0);
      assert.equal(svc.snapshotter.list().length, 0, 'gc removed the snapshots');
      assert.equal((await svc.content.list()).length, 0, 'gc removed the blobs');
    } finally {
      svc.close();
    }
  });
}

test('overlay upper dirs carry overlayfs whiteouts and opaque markers', async () => {
  const img = buildImage(fidelityLayers());
  await pushImage(client, `${reg.host}/wh:1`, img);
  const svc = await ImageService.open({ root: join(root, 'wh'), snapshotter: 'overlayfs', hosts: hosts() });
  try {
    const info = await svc.pull(`${reg.host}/wh:1`);
    const top = svc.db.getSnapshot(info.chainId)!;
    const upper = svc.snapshotter.fsDir(top.id);
    const wh = lstatSync(join(upper, 'gone'));
    assert.ok(wh.isCharacterDevice());
    assert.equal(wh.rdev, 0);
    assert.equal(await xattr(upper, 'opq', 'trusted.overlay.opaque'), Buffer.from('y').toString('hex'));
    const usage = await svc.snapshotter.usage(info.chainId);
    assert.ok(usage.inodes >= 5 && usage.size > 0);
  } finally {
    svc.close();
  }
});

const evil: Array<[string, LayerSpec[], RegExp]> = [
  ['path traversal', [{ tar: writeTar([{ name: '../escape', data: 'x' }]) }], /escape the layer root/],
  ['absolute name', [{ tar: writeTar([{ name: '/etc/evil', data: 'x' }]) }], /absolute/],
  ['symlink parent escape', [{ tar: writeTar([{ name: 'link', type: 'symlink', linkname: '/tmp' }, { name: 'link/evil', data: 'x' }]) }], /symlinked parent/],
  ['symlink parent in lower layer (copy)', [{ entries: [{ name: 'lnk', type: 'symlink', linkname: '/tmp' }] }, { entries: [{ name: 'lnk/evil', data: 'x' }] }], /symlinked parent/],
  ['hard link escape', [{ tar: writeTar([{ name: 'h', type: 'hardlink', linkname: '../../etc/passwd' }]) }], /escape the layer root/],
  ['hard link through symlink', [{ tar: writeTar([{ name: 'l', type: 'symlink', linkname: '/etc' }, { name: 'h', type: 'hardlink', linkname: 'l/passwd' }]) }], /symlinked parent/],
  ['diff id mismatch', [{ entries: [{ name: 'a', data: 'a' }], diffId: 'sha256:' + '0'.repeat(64) }], /diff_id/],
  ['truncated gzip', [{ entries: busyboxEntries(), mangle: (b) => b.subarray(0, Math.floor(b.length / 2)) }], /gzip|truncated|end of/],
];

for (const [name, layers, re] of evil) {
  test(`malicious layer refused with nothing left behind: ${name}`, async () => {
    const img = buildImage(layers);
    const tag = name.replace(/[^a-z]+/g, '-');
    await pushImage(client, `${reg.host}/evil:${tag}`, img);
    for (const kind of ['overlayfs', 'native'] as const) {
      if (name.includes('(copy)') && kind === 'overlayfs') continue; // overlay layers never share a tree
      const dir = join(root, `evil-${tag}-${kind}`);
      const svc = await ImageService.open({ root: dir, snapshotter: kind, hosts: hosts() });
      try {
        await assert.rejects(svc.pull(`${reg.host}/evil:${tag}`), (e: Error) => {
          assert.match(e.message, re);
          return true;
        });
        assert.equal(existsSync('/escape'), false);
        assert.equal(existsSync('/tmp/evil'), false);
        assert.deepEqual(svc.snapshotter.list().filter((s) => s.kind !== 'committed'), [], 'no half-unpacked snapshot');
        assert.equal(svc.list().length, 0, 'no image recorded');
        const snapIds = new Set(svc.db.listSnapshots().map((s) => String(s.id)));
        assert.deepEqual(readdirSync(svc.snapshotter.root).filter((d) => !snapIds.has(d)), [], 'no snapshot dirs left');
        await svc.gc();
        assert.equal(svc.snapshotter.list().length, 0);
      } finally {
        svc.close();
      }
    }
  });
}

test('blob digest mismatch and oversized manifests are refused', async () => {
  const svc = await ImageService.open({ root: join(root, 'bad-blob'), snapshotter: 'native', hosts: hosts(), retries: 1 });
  try {
    // a manifest whose layer descriptor names a digest the registry stores different bytes under
    const good = buildImage([{ entries: [{ name: 'a', data: 'a' }] }]);
    const bad = buildImage([{ entries: [{ name: 'b', data: 'b' }] }]);
    await pushImage(client, `${reg.host}/mismatch:src`, good);
    const layer = good.manifest.layers[0]!;
    const lie = { ...bad, manifest: { ...bad.manifest, layers: [{ ...bad.manifest.layers[0]!, size: layer.size + 1, digest: layer.digest }] } };
    lie.manifestData = Buffer.from(JSON.stringify(lie.manifest));
    const { digestOf } = await import('../../src/image/digest.ts');
    lie.manifestDesc = { ...lie.manifestDesc, digest: digestOf(lie.manifestData), size: lie.manifestData.length };
    await pushImage(client, `${reg.host}/mismatch:lie`, { ...lie, blobs: new Map([...bad.blobs].filter(([d]) => d !== bad.manifest.layers[0]!.digest)) });
    await assert.rejects(svc.pull(`${reg.host}/mismatch:lie`), /bytes|digest/);
    assert.deepEqual(await svc.content.ingests(), [], 'mismatching download discarded');
    assert.equal(svc.list().length, 0);

    // oversized manifest: the registry itself refuses > 4 MiB, so serve one from a tiny fake
    const http = await import('node:http');
    const srv = http.createServer((req, res) => {
      if (req.url === '/v2/') return void res.writeHead(200).end('{}');
      res.writeHead(200, { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json', 'Content-Length': String(5 << 20) });
      res.end(Buffer.alloc(5 << 20, 0x20));
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as { port: number }).port;
    const svc2 = await ImageService.open({ root: join(root, 'big-manifest'), snapshotter: 'native', hosts: { insecure: [`127.0.0.1:${port}`] }, retries: 1 });
    try {
      await assert.rejects(svc2.pull(`127.0.0.1:${port}/big:1`), { code: 'INVALID_ARGUMENT', message: /4194304/ });
      assert.equal(svc2.list().length, 0);
    } finally {
      svc2.close();
      closeIdleConnections();
      srv.closeAllConnections();
      await new Promise<void>((r) => srv.close(() => r()));
    }
  } finally {
    svc.close();
  }
});

test('multi-platform index: the configured platform is selected', async () => {
  const amd = buildImage([{ entries: [{ name: 'arch', data: 'amd64' }] }], { platform: { os: 'linux', architecture: 'amd64' } });
  const arm = buildImage([{ entries: [{ name: 'arch', data: 'arm64' }] }], { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } });
  const idx = await pushIndex(client, `${reg.host}/multi:1`, [amd, arm]);
  const svc = await ImageService.open({ root: join(root, 'multi'), snapshotter: 'native', hosts: hosts(), platform: { os: 'linux', architecture: 'arm64' } });
  try {
    const info = await svc.pull(`${reg.host}/multi:1`);
    assert.equal(info.digest, idx.digest);
    assert.equal(info.manifestDigest, arm.manifestDesc.digest);
    assert.equal(info.platform, 'linux/arm64/v8');
    await assert.rejects(svc.pull(`${reg.host}/multi:1`, { platform: { os: 'linux', architecture: 's390x' } }), { code: 'NOT_FOUND', message: /s390x/ });
    // by digest too
    const again = await svc.pull(`${reg.host}/multi@${idx.digest}`, { platform: { os: 'linux', architecture: 'amd64' } });
    assert.equal(again.manifestDigest, amd.manifestDesc.digest);
  } finally {
    svc.close();
  }
});

test('two concurrent pulls of the same image share the work; reconcile cleans crash leftovers', async () => {
  const img = buildImage([{ entries: busyboxEntries() }, { entries: [{ name: 'x', data: 'y' }] }]);
  await pushImage(client, `${reg.host}/shared:1`, img);
  const dir = join(root, 'shared');
  const svc = await ImageService.open({ root: dir, snapshotter: 'overlayfs', hosts: hosts() });
  let downloads = 0;
  try {
    const count = (e: { type: string }) => e.type === 'downloaded' && downloads++;
    const [a, b] = await Promise.all([svc.pull(`${reg.host}/shared:1`, { onProgress: count }), svc.pull(`${reg.host}/shared:1`, { onProgress: count })]);
    assert.equal(a, b, 'the second pull joined the first');
    assert.equal(svc.snapshotter.list().length, 2);
    // a layer pull of another image with a common base reuses the base snapshot
    const img2 = buildImage([{ entries: busyboxEntries() }, { entries: [{ name: 'z', data: 'z' }] }]);
    await pushImage(client, `${reg.host}/shared:2`, img2);
    await Promise.all([svc.pull(`${reg.host}/shared:2`), svc.pull(`${reg.host}/shared:1`)]);
    assert.equal(svc.snapshotter.list().length, 3, 'base layer unpacked once');
  } finally {
    svc.close();
  }
  // simulate a crash: an orphan blob, a half-unpacked snapshot, a stray snapshot dir
  const { ContentStore } = await import('../../src/image/content/store.ts');
  const { MetadataDB } = await import('../../src/image/metadata/db.ts');
  const cs = new ContentStore(join(dir, 'content'));
  const orphan = await cs.writeBlob(Buffer.from('orphan'));
  const db = new MetadataDB(join(dir, 'meta.db'));
  const half = db.insertSnapshot('extract-crashed', null, 'active', { 'corral.io/unpacking': 'sha256:x' });
  db.close();
  mkdirSync(join(dir, 'snapshots/overlayfs', String(half.id), 'fs'), { recursive: true });
  mkdirSync(join(dir, 'snapshots/overlayfs/9999/fs'), { recursive: true });
  const svc2 = await ImageService.open({ root: dir, snapshotter: 'overlayfs', hosts: hosts() });
  try {
    assert.equal(await svc2.content.has(orphan), false, 'orphan blob removed');
    assert.equal(svc2.db.getSnapshot('extract-crashed'), undefined);
    assert.equal(existsSync(join(dir, 'snapshots/overlayfs/9999')), false);
    assert.equal(existsSync(join(dir, 'snapshots/overlayfs', String(half.id))), false);
    assert.equal(svc2.list().filter((i) => !i.name.includes('@')).length, 2);
    const pruned = await svc2.prune({ all: true });
    assert.ok(pruned.removed.length >= 2);
    assert.equal(svc2.snapshotter.list().length, 0);
  } finally {
    svc2.close();
  }
});

test('deep images: overlay lowerdir falls back to paths relative to the snapshot root', async () => {
  const layers: LayerSpec[] = [{ entries: busyboxEntries() }];
  for (let i = 0; i < 12; i++) layers.push({ entries: [{ name: `l${i}`, data: String(i) }] });
  const img = buildImage(layers);
  await pushImage(client, `${reg.host}/deep:1`, img);
  const svc = await ImageService.open({ root: join(root, 'deep-' + 'x'.repeat(60)), snapshotter: 'overlayfs', hosts: hosts() });
  try {
    const info = await svc.pull(`${reg.host}/deep:1`);
    (svc.snapshotter as import('../../src/image/snapshot/overlay.ts').OverlaySnapshotter).optionsLimit = 700;
    const mounts = await svc.snapshotter.prepare('deep-ctr', info.chainId);
    assert.equal(mounts[0]!.cwd, svc.snapshotter.root);
    const target = join(root, 'mnt-deep');
    mkdirSync(target);
    mountAll(mounts, target);
    try {
      for (let i = 0; i < 12; i++) assert.equal(readFileSync(join(target, `l${i}`), 'utf8'), String(i));
    } finally {
      unmount(target);
    }
    await svc.snapshotter.remove('deep-ctr');
  } finally {
    svc.close();
  }
});
