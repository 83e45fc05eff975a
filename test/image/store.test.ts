/**
 * The image store's edges against a real registry and the real kernel: non-distributable
 * (foreign) layers (containerd's behaviour: fetched from the descriptor's URLs without the
 * registry's credentials, then from the registry; never pushed), redirects to a second host
 * dropping Authorization, a 130-layer image mounted within the kernel's one-page
 * mount-options limit, and two pulls in two processes on one store (the cross-process store
 * lock: the second waits; a lock held too long fails clearly; a SIGKILLed holder leaves none).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImageService } from '../../src/image/service.ts';
import { Readable } from 'node:stream';
import { digestOf } from '../../src/image/digest.ts';
import { MediaType } from '../../src/image/media.ts';
import { parseReference } from '../../src/image/reference.ts';
import { RegistryClient } from '../../src/image/registry/client.ts';
import { closeIdleConnections } from '../../src/image/registry/transport.ts';
import { mountAll, unmount } from '../../src/image/snapshot/mount.ts';
import { MOUNT_OPTIONS_LIMIT } from '../../src/image/snapshot/overlay.ts';
import { buildImage, busyboxEntries, pushImage, type BuiltImage, type LayerSpec } from '../helpers/image-builder.ts';
import { pidAlive, startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { mountsUnder } from '../helpers/leaks.ts';

const root = mkdtempSync(join(tmpdir(), 'corral-image-store-test-'));
const registries: TestRegistry[] = [];
const servers: http.Server[] = [];
const children: ChildProcess[] = [];
let reg1: TestRegistry;
let n = 0;
const dir = (name: string) => join(root, `${name}-${n++}`);
const insecure = () => registries.map((r) => r.host);
const open = (name: string, extra: Partial<Parameters<typeof ImageService.open>[0]> = {}) =>
  ImageService.open({ root: dir(name), snapshotter: 'overlayfs', hosts: { insecure: insecure() }, backoffMs: 10, ...extra });
const client = () => new RegistryClient({ hosts: { insecure: insecure() } });


async function serve(handler: http.RequestListener): Promise<{ server: http.Server; host: string; port: number }> {
  const server = http.createServer(handler);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return { server, host: `127.0.0.1:${port}`, port };
}

before(async () => {
  spawnSync('make', ['-s', '-C', join(import.meta.dirname, '../../src/image/native'), `OUT=${join(import.meta.dirname, '../../build')}`], { stdio: 'inherit' });
  reg1 = await startRegistry({ allowLayerUrls: ['^http://127\\.0\\.0\\.1:[0-9]+/'] });
  registries.push(reg1);
});

after(async () => {
  closeIdleConnections();
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
  for (const r of registries) {
    await r.stop();
    assert.equal(pidAlive(r.pid), false, 'registry stopped');
  }
  for (const c of children) assert.equal(pidAlive(c.pid!), false, 'child process gone');
  assert.deepEqual(mountsUnder(root), [], 'no mounts left');
  rmSync(root, { recursive: true, force: true });
});

// ------------------------------------------------------------------------- foreign layers

test('non-distributable layers: fetched from their URLs without credentials; refused clearly otherwise; not pushed', async () => {
  const seen: Array<{ url: string; auth?: string }> = [];
  const served = new Map<string, Buffer>();
  const ext = await serve((req, res) => {
    seen.push({ url: req.url!, auth: req.headers.authorization });
    const b = served.get(req.url!);
    if (!b) return void res.writeHead(404).end();
    res.writeHead(200, { 'Content-Length': String(b.length) }).end(b);
  });
  const foreignImage = (tag: string, path: string): BuiltImage => {
    const img = buildImage([{ entries: busyboxEntries() }, { mediaType: MediaType.OciLayerNonDistGzip, entries: [{ name: 'foreign.txt', data: `foreign ${tag}\n` }] }]);
    const l = img.manifest.layers[1]!;
    l.urls = [`http://${ext.host}${path}`];
    img.manifestData = Buffer.from(JSON.stringify(img.manifest));
    img.manifestDesc = { ...img.manifestDesc, digest: digestOf(img.manifestData), size: img.manifestData.length };
    return img;
  };
  const pushWithout = async (ref: string, img: BuiltImage) => {
    const foreign = img.manifest.layers[1]!.digest;
    await pushImage(client(), ref, { ...img, blobs: new Map([...img.blobs].filter(([d]) => d !== foreign)) });
    assert.equal(await client().blobExists(parseReference(ref), foreign), false, 'the registry does not have the foreign layer');
  };

  // served from its URL: pulled, verified, unpacked; the registry's credentials are not sent there
  const ok = foreignImage('ok', '/layers/ok.tar.gz');
  served.set('/layers/ok.tar.gz', ok.blobs.get(ok.manifest.layers[1]!.digest)!);
  await pushWithout(`${reg1.host}/foreign:ok`, ok);
  const svc = await open('foreign');
  try {
    const info = await svc.pull(`${reg1.host}/foreign:ok`, { auth: { registryToken: 'registry-secret' } });
    assert.equal(info.digest, ok.manifestDesc.digest);
    assert.deepEqual(seen.map((s) => s.url), ['/layers/ok.tar.gz']);
    assert.equal(seen[0]!.auth, undefined, 'no Authorization to the foreign URL');
    const top = svc.db.getSnapshot(info.chainId)!;
    assert.equal(readFileSync(join(svc.snapshotter.fsDir(top.id), 'foreign.txt'), 'utf8'), 'foreign ok\n');

    // push: the foreign layer is not uploaded; the manifest still refers to it, by URL
    const target = `${reg1.host}/foreign-copy:1`;
    await svc.push(`${reg1.host}/foreign:ok`, { target });
    assert.equal(await client().blobExists(parseReference(target), ok.manifest.layers[1]!.digest), false, 'not pushed');
    assert.equal(await client().blobExists(parseReference(target), ok.manifest.layers[0]!.digest), true);
    const svc2 = await open('foreign-back');
    try {
      assert.equal((await svc2.pull(target)).digest, ok.manifestDesc.digest);
      assert.equal(seen.length, 2, 'fetched from its URL again');
    } finally {
      svc2.close();
    }

    // a URL that does not have it, nor the registry: NOT_FOUND naming both
    const gone = foreignImage('gone', '/layers/gone.tar.gz');
    await pushWithout(`${reg1.host}/foreign:gone`, gone);
    await assert.rejects(svc.pull(`${reg1.host}/foreign:gone`), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'NOT_FOUND');
      assert.match(e.message, /non-distributable layer .* not available from the registry nor from its URLs/);
      assert.match(e.message, /gone\.tar\.gz/);
      return true;
    });
    // a URL serving other bytes: the digest check refuses it, nothing is kept
    const lie = foreignImage('lie', '/layers/lie.tar.gz');
    const real = lie.blobs.get(lie.manifest.layers[1]!.digest)!;
    served.set('/layers/lie.tar.gz', Buffer.alloc(real.length, 0x41));
    await pushWithout(`${reg1.host}/foreign:lie`, lie);
    await assert.rejects(svc.pull(`${reg1.host}/foreign:lie`), { code: 'INVALID_ARGUMENT' });
    assert.equal(await svc.content.has(lie.manifest.layers[1]!.digest), false);
    assert.deepEqual(await svc.content.ingests(), []);
    assert.deepEqual([...new Set(svc.list().map((i) => i.digest))], [ok.manifestDesc.digest], 'only the ok image was recorded');
  } finally {
    svc.close();
  }

  // policy "registry": the URLs are never contacted
  const before = seen.length;
  const svc3 = await open('foreign-registry-only', { foreignLayers: 'registry' });
  try {
    await assert.rejects(svc3.pull(`${reg1.host}/foreign:ok`), { code: 'NOT_FOUND', message: /foreignLayers: "registry"/ });
    assert.equal(seen.length, before);
    // with the layer in the registry as well, the registry serves it
    await client().pushBlob(parseReference(`${reg1.host}/foreign`), ok.manifest.layers[1]!, () => Readable.from([ok.blobs.get(ok.manifest.layers[1]!.digest)!]));
    assert.equal((await svc3.pull(`${reg1.host}/foreign:ok`)).digest, ok.manifestDesc.digest);
    assert.equal(seen.length, before);
  } finally {
    svc3.close();
  }
});


// ------------------------------------------------------------------------------ redirects

test('a blob redirect to a second host drops the Authorization header (token auth)', async () => {
  const r = await startRegistry({ tokenAuth: { bob: 'pw' } });
  registries.push(r);
  const img = buildImage([{ entries: busyboxEntries() }, { entries: [{ name: 'r.txt', data: 'redirected\n' }] }]);
  await pushImage(client(), `${r.host}/redir:1`, img, { username: 'bob', password: 'pw' });
  // the "storage" host: serves blobs by a signed-looking URL, records what it was sent
  const storageSeen: Array<{ url: string; auth?: string }> = [];
  const storage = await serve((req, res) => {
    storageSeen.push({ url: req.url!, auth: req.headers.authorization });
    const d = /\/blob\/(sha256:[0-9a-f]{64})\?sig=/.exec(req.url!)?.[1];
    const b = d ? img.blobs.get(d) : undefined;
    if (!b) return void res.writeHead(404).end();
    res.writeHead(200, { 'Content-Length': String(b.length) }).end(b);
  });
  // the front: the registry API, except that blob GETs answer 307 to the storage host
  const frontSeen: Array<{ url: string; auth?: string }> = [];
  const front = await serve((req, res) => {
    const blob = /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(req.url!)?.[1];
    if (blob && req.method === 'GET' && req.headers.authorization) {
      frontSeen.push({ url: req.url!, auth: req.headers.authorization });
      return void res.writeHead(307, { Location: `http://${storage.host}/blob/${blob}?sig=abc` }).end();
    }
    const up = http.request(`${r.url}${req.url}`, { method: req.method, headers: { ...req.headers, host: r.host } }, (ur) => {
      res.writeHead(ur.statusCode!, ur.headers);
      ur.pipe(res);
    });
    req.pipe(up);
  });
  const svc = await open('redirect', { hosts: { insecure: [front.host] } });
  try {
    const info = await svc.pull(`${front.host}/redir:1`, { auth: { username: 'bob', password: 'pw' } });
    assert.equal(info.digest, img.manifestDesc.digest);
    assert.equal(frontSeen.length, img.blobs.size, 'config and both layers were redirected');
    for (const f of frontSeen) assert.match(f.auth!, /^Bearer /, 'the registry host got the token');
    assert.equal(storageSeen.length, img.blobs.size);
    for (const s of storageSeen) assert.equal(s.auth, undefined, `no Authorization sent to the other host for ${s.url}`);
    const top = svc.db.getSnapshot(info.chainId)!;
    assert.equal(readFileSync(join(svc.snapshotter.fsDir(top.id), 'r.txt'), 'utf8'), 'redirected\n');
  } finally {
    svc.close();
  }
});

// ------------------------------------------------------------------------------ deep image

test('a 130-layer image mounts within the kernel mount-options page (relative lowerdirs)', async () => {
  const layers: LayerSpec[] = [{ entries: [...busyboxEntries(), { name: 'bottom.txt', data: 'from the bottom layer\n' }] }];
  for (let i = 1; i < 130; i++) layers.push({ compression: 'none', entries: [{ name: `l${i}.txt`, data: `${i}\n` }] });
  layers.push({ compression: 'none', entries: [{ name: 'l1.txt', data: 'overridden at the top\n' }] });
  const img = buildImage(layers);
  await pushImage(client(), `${reg1.host}/deep:130`, img);
  const svc = await open('deep-' + 'd'.repeat(40));
  try {
    const info = await svc.pull(`${reg1.host}/deep:130`);
    assert.equal(info.layers.length, 131);
    const mounts = await svc.snapshotter.prepare('deep-ctr', info.chainId);
    assert.equal(mounts.length, 1);
    const m = mounts[0]!;
    assert.equal(m.type, 'overlay');
    const absolute = svc.snapshotter.chain(info.chainId).map((s) => svc.snapshotter.fsDir(s.id)).join(':');
    assert.ok(absolute.length > 4096, `absolute lowerdir (${absolute.length} bytes) would not fit in a page`);
    assert.equal(m.cwd, svc.snapshotter.root, 'relative lowerdirs with the snapshotter root as working directory');
    assert.ok(m.options.join(',').length <= MOUNT_OPTIONS_LIMIT);
    const target = join(root, 'mnt-deep');
    mkdirSync(target);
    mountAll(mounts, target);
    try {
      assert.equal(readFileSync(join(target, 'bottom.txt'), 'utf8'), 'from the bottom layer\n');
      assert.equal(readFileSync(join(target, 'l129.txt'), 'utf8'), '129\n');
      assert.equal(readFileSync(join(target, 'l1.txt'), 'utf8'), 'overridden at the top\n');
      assert.equal(spawnSync(join(target, 'bin/busybox'), ['true']).status, 0);
      writeFileSync(join(target, 'written'), 'upper');
    } finally {
      unmount(target);
    }
    assert.equal(readFileSync(join(svc.snapshotter.applyDir('deep-ctr'), 'written'), 'utf8'), 'upper');
    await svc.snapshotter.remove('deep-ctr');
    await svc.remove(`${reg1.host}/deep:130`);
    assert.equal(svc.snapshotter.list().length, 0);
  } finally {
    svc.close();
  }
});

// ---------------------------------------------------------------------- two processes

const childScript = (storeRoot: string) => `
import { ImageService } from ${JSON.stringify(join(import.meta.dirname, '../../src/image/service.ts'))};
const [mode, arg, timeout] = process.argv.slice(2);
const waits = [];
const svc = await ImageService.open({ root: ${JSON.stringify(storeRoot)}, snapshotter: 'overlayfs', hosts: { insecure: ${JSON.stringify(insecure())} },
  lockTimeoutMs: timeout ? Number(timeout) : undefined, onLockWait: (pid) => waits.push(pid) });
if (mode === 'hold') {
  setInterval(() => {}, 1000); // keep the process alive while it holds the lock
  await svc.withStoreLock(async () => { process.stdout.write('locked\\n'); await new Promise(() => {}); });
} else {
  const info = await svc.pull(arg);
  process.stdout.write(JSON.stringify({ digest: info.digest, chainId: info.chainId, waits }) + '\\n');
  svc.close();
}
`;

function runChild(script: string, args: string[]): { child: ChildProcess; out: Promise<{ code: number | null; stdout: string; stderr: string }>; line: Promise<string> } {
  const child = spawn(process.execPath, ['--no-warnings', script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stdout = '';
  let stderr = '';
  let resolveLine!: (s: string) => void;
  const line = new Promise<string>((r) => (resolveLine = r));
  child.stdout!.on('data', (d: Buffer) => {
    stdout += d;
    if (stdout.includes('\n')) resolveLine(stdout.split('\n')[0]!);
  });
  child.stderr!.on('data', (d: Buffer) => (stderr += d));
  const out = new Promise<{ code: number | null; stdout: string; stderr: string }>((r) => child.on('exit', (code) => r({ code, stdout, stderr })));
  return { child, out, line };
}

test('two pulls in two processes on one store: both complete, the store is consistent', async () => {
  const a = buildImage([{ entries: busyboxEntries() }, { entries: [{ name: 'a', data: 'a' }] }, { entries: [{ name: 'a2', data: 'a2' }] }]);
  const b = buildImage([{ entries: busyboxEntries() }, { entries: [{ name: 'b', data: 'b' }] }]);
  await pushImage(client(), `${reg1.host}/proc:a`, a);
  await pushImage(client(), `${reg1.host}/proc:b`, b);
  const storeRoot = dir('two-procs');
  mkdirSync(storeRoot, { recursive: true });
  const script = join(root, `child-${n++}.ts`);
  writeFileSync(script, childScript(storeRoot));
  for (let round = 0; round < 3; round++) {
    // the same image and an image sharing its base layer, at once, from two processes
    const runs = [runChild(script, ['pull', `${reg1.host}/proc:a`]), runChild(script, ['pull', `${reg1.host}/proc:a`]), runChild(script, ['pull', `${reg1.host}/proc:b`])];
    const res = await Promise.all(runs.map((r) => r.out));
    for (const r of res) assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(res[0]!.stdout).digest, a.manifestDesc.digest);
    assert.equal(JSON.parse(res[1]!.stdout).digest, a.manifestDesc.digest);
    assert.equal(JSON.parse(res[2]!.stdout).digest, b.manifestDesc.digest);
    const svc = await ImageService.open({ root: storeRoot, snapshotter: 'overlayfs', hosts: { insecure: insecure() } });
    try {
      assert.deepEqual(await svc.reconcile(), { snapshots: 0, blobs: 0, ingests: 0, records: 0 }, 'nothing for a reconcile to repair');
      assert.equal(svc.list().filter((i) => !i.name.includes('@')).length, 2);
      assert.equal(svc.snapshotter.list().length, 4, 'the shared base layer unpacked once');
      assert.deepEqual(svc.listLeases(), [], 'no pull lease left behind');
      const ids = new Set(svc.db.listSnapshots().map((s) => String(s.id)));
      assert.deepEqual(readdirSync(svc.snapshotter.root).filter((d) => !ids.has(d)), [], 'no stray snapshot dirs');
      assert.equal((await svc.content.list()).length, 2 + 3 + 2 + 1, 'two manifests, two configs, four distinct layers');
      assert.ok(svc.get(`${reg1.host}/proc:a`).unpacked && svc.get(`${reg1.host}/proc:b`).unpacked);
      if (round < 2) await svc.prune({ all: true });
    } finally {
      svc.close();
    }
  }
});

test('the store lock: a busy store makes an operation wait, then fail clearly; a killed holder leaves no stale lock', async () => {
  const img = buildImage([{ entries: [{ name: 'lock', data: 'lock' }] }]);
  await pushImage(client(), `${reg1.host}/lock:1`, img);
  const storeRoot = dir('lock');
  mkdirSync(storeRoot, { recursive: true });
  const script = join(root, `child-${n++}.ts`);
  writeFileSync(script, childScript(storeRoot));
  const holder = runChild(script, ['hold']);
  assert.equal(await holder.line, 'locked');
  // another process waits and gives up with the holder's pid
  const waiter = runChild(script, ['pull', `${reg1.host}/lock:1`, '300']);
  const w = await waiter.out;
  assert.notEqual(w.code, 0);
  assert.match(w.stderr, new RegExp(`held by another process \\(pid ${holder.child.pid}\\)`));
  // in this process too (the lock is fcntl-based: per process)
  const waits: string[] = [];
  await assert.rejects(ImageService.open({ root: storeRoot, hosts: { insecure: insecure() }, lockTimeoutMs: 200, onLockWait: (p) => waits.push(p) }), { code: 'UNAVAILABLE', message: /store lock/ });
  assert.deepEqual(waits, [String(holder.child.pid)]);
  // a waiter started now completes once the holder dies, even by SIGKILL
  const late = runChild(script, ['pull', `${reg1.host}/lock:1`]);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(late.child.exitCode, null, 'still waiting while the lock is held');
  holder.child.kill('SIGKILL');
  await holder.out;
  const l = await late.out;
  assert.equal(l.code, 0, l.stderr);
  const res = JSON.parse(l.stdout);
  assert.equal(res.digest, img.manifestDesc.digest);
  assert.deepEqual(res.waits, [String(holder.child.pid)], 'it waited for the holder');
  const svc = await ImageService.open({ root: storeRoot, hosts: { insecure: insecure() }, lockTimeoutMs: 1000 });
  try {
    assert.equal(svc.get(`${reg1.host}/lock:1`).digest, img.manifestDesc.digest);
  } finally {
    svc.close();
  }
  assert.equal(existsSync(join(storeRoot, 'store.lock')), true);
});
