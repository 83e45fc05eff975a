// The CRI ImageService (src/cri/image) behind a real CriServer socket, against real registries:
// Kubernetes semantics (ids, repo tags/digests, uid/username, absent images), auth, mirrors for
// registry.k8s.io / gcr.io over plain HTTP (inline mirrors and hosts.toml), ImageFsInfo.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { CriServer } from '../../src/cri/server.ts';
import { CriMetrics } from '../../src/cri/metrics.ts';
import { silentLogger } from '../../src/cri/log.ts';
import { defaultConfig } from '../../src/cri/config.ts';
import { createImageServiceImpl, imageServiceOptions, imageUser } from '../../src/cri/image/index.ts';
import { ImageService } from '../../src/image/service.ts';
import { RegistryClient } from '../../src/image/registry/client.ts';
import { closeIdleConnections } from '../../src/image/registry/transport.ts';
import { buildImage, busyboxEntries, pushImage, type BuiltImage } from '../helpers/image-builder.ts';
import { digestOf } from '../../src/image/digest.ts';
import { startRegistry, pidAlive, type TestRegistry } from '../helpers/registry.ts';
import { call, criClients } from '../cri/harness.ts';
import { mountsUnder } from '../helpers/leaks.ts';

const dir = mkdtempSync(join(tmpdir(), 'corral-cri-image-'));
let reg: TestRegistry;
let authReg: TestRegistry;
let svc: ImageService;
let server: CriServer;
let clients: ReturnType<typeof criClients>;
/** An image whose config has `User` set (config, manifest and digests rebuilt). */
function withUser(built: BuiltImage, user: string): BuiltImage {
  built.blobs.delete(built.manifest.config.digest);
  (built.config.config as Record<string, unknown>).User = user;
  const cfg = Buffer.from(JSON.stringify(built.config));
  built.manifest.config = { ...built.manifest.config, digest: digestOf(cfg), size: cfg.length };
  built.blobs.set(built.manifest.config.digest, cfg);
  built.manifestData = Buffer.from(JSON.stringify(built.manifest));
  built.manifestDesc = { ...built.manifestDesc, digest: digestOf(built.manifestData), size: built.manifestData.length };
  return built;
}
const img = withUser(buildImage([{ entries: busyboxEntries() }, { entries: [{ name: 'app', data: 'v1' }] }], { cmd: ['/app'] }), '1000:1000');
const named = withUser(buildImage([{ entries: [{ name: 'x', data: 'named' }] }]), 'nobody');


before(async () => {
  reg = await startRegistry();
  authReg = await startRegistry({ basicAuth: { kube: 'let-me-in' } });
  const c = new RegistryClient({ hosts: { insecure: [reg.host, authReg.host] } });
  await pushImage(c, `${reg.host}/app:1`, img);
  await pushImage(c, `${reg.host}/pause:3.9`, named);
  await pushImage(c, `${authReg.host}/private:1`, named, { username: 'kube', password: 'let-me-in' });
  // corrald-style options: hosts.toml for gcr.io, an inline mirror for registry.k8s.io
  const config = defaultConfig();
  config.root_dir = join(dir, 'store');
  config.registry.hosts_dir = join(dir, 'certs.d');
  config.registry.mirrors = { 'registry.k8s.io': [`http://${reg.host}`] };
  mkdirSync(join(dir, 'certs.d/gcr.io'), { recursive: true });
  writeFileSync(join(dir, 'certs.d/gcr.io/hosts.toml'), `server = "https://gcr.io"\n[host."http://${reg.host}"]\n  capabilities = ["pull", "resolve"]\n`);
  const opts = imageServiceOptions(config);
  opts.hosts!.insecure = [reg.host, authReg.host];
  opts.retries = 1;
  svc = await ImageService.open(opts);
  server = new CriServer({ socketPath: join(dir, 'cri.sock'), log: silentLogger, metrics: new CriMetrics() });
  let pulled = 0;
  server.use({ image: createImageServiceImpl(svc, { pinnedImages: ['registry.k8s.io/pause:3.9'], onPullBytes: (b) => (pulled += b), fsInfoCacheMs: 0 }) });
  await server.start();
  clients = criClients(join(dir, 'cri.sock'));
  void pulled;
});

after(async () => {
  clients?.close();
  await server?.stop();
  svc?.close();
  closeIdleConnections();
  await reg?.stop();
  await authReg?.stop();
  assert.equal(pidAlive(reg.pid), false);
  assert.equal(pidAlive(authReg.pid), false);
  assert.deepEqual(mountsUnder(dir), [], 'no mounts left');
  rmSync(dir, { recursive: true, force: true });
  assert.equal(existsSync(reg.dir), false);
});

type CriImage = { id: string; repo_tags: string[]; repo_digests: string[]; size: string; uid: { value: string } | null; username: string; pinned: boolean; spec: { image: string } };

test('imageUser: numeric users are uids, names are usernames', () => {
  assert.deepEqual(imageUser('1000:1000'), { uid: '1000' });
  assert.deepEqual(imageUser('0'), { uid: '0' });
  assert.deepEqual(imageUser('nobody:nogroup'), { username: 'nobody' });
  assert.deepEqual(imageUser(''), {});
  assert.deepEqual(imageUser(undefined), {});
});

test('PullImage returns the image id; ListImages and ImageStatus report Kubernetes fields', async () => {
  const ref = `${reg.host}/app:1`;
  const r = await call<{ image_ref: string }>(clients.image, 'PullImage', { image: { image: ref } });
  assert.equal(r.image_ref, img.manifest.config.digest, 'image_ref is the config digest');
  const list = await call<{ images: CriImage[] }>(clients.image, 'ListImages', {});
  const mine = list.images.find((i) => i.id === img.manifest.config.digest)!;
  assert.ok(mine, 'pulled image listed');
  assert.deepEqual(mine.repo_tags, [ref]);
  assert.deepEqual(mine.repo_digests, [`${reg.host}/app@${img.manifestDesc.digest}`]);
  const size = img.manifest.config.size + img.manifest.layers.reduce((a, l) => a + l.size, 0);
  assert.equal(mine.size, String(size));
  assert.equal(mine.uid?.value, '1000');
  assert.equal(mine.username, '');
  assert.equal(mine.pinned, false);
  // filter: by tag, by id, by digest; a miss is an empty list
  for (const f of [ref, img.manifest.config.digest, img.manifest.config.digest.slice(7, 19), `${reg.host}/app@${img.manifestDesc.digest}`]) {
    const l = await call<{ images: CriImage[] }>(clients.image, 'ListImages', { filter: { image: { image: f } } });
    assert.deepEqual(l.images.map((i) => i.id), [img.manifest.config.digest], `filter ${f}`);
  }
  const none = await call<{ images: CriImage[] }>(clients.image, 'ListImages', { filter: { image: { image: `${reg.host}/app:2` } } });
  assert.deepEqual(none.images, []);
  const st = await call<{ image: CriImage; info: Record<string, string> }>(clients.image, 'ImageStatus', { image: { image: ref }, verbose: true });
  assert.equal(st.image.id, img.manifest.config.digest);
  const info = JSON.parse(st.info.info!);
  assert.deepEqual(info.imageSpec.config.Cmd, ['/app']);
  assert.equal(info.manifestDigest, img.manifestDesc.digest);
  assert.equal(info.unpacked, true);
  const quiet = await call<{ image: CriImage; info: Record<string, string> }>(clients.image, 'ImageStatus', { image: { image: ref } });
  assert.deepEqual(quiet.info, {});
});

test('absent images: ImageStatus answers no image, RemoveImage succeeds; bad references are INVALID_ARGUMENT', async () => {
  const st = await call<{ image: CriImage | null }>(clients.image, 'ImageStatus', { image: { image: `${reg.host}/never:1` } });
  assert.equal(st.image, null);
  await call(clients.image, 'RemoveImage', { image: { image: `${reg.host}/never:1` } });
  for (const m of ['ImageStatus', 'RemoveImage', 'PullImage']) {
    await assert.rejects(call(clients.image, m, { image: { image: 'UPPER/Case:1' } }), (e: grpc.ServiceError) => {
      assert.equal(e.code, grpc.status.INVALID_ARGUMENT, m);
      assert.match(e.details, /invalid image reference/);
      return true;
    });
    await assert.rejects(call(clients.image, m, { image: { image: '' } }), (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT && /empty/.test(e.details));
  }
  await assert.rejects(call(clients.image, 'PullImage', { image: { image: `${reg.host}/never:1` } }), (e: grpc.ServiceError) => {
    assert.equal(e.code, grpc.status.NOT_FOUND);
    assert.match(e.details, /never/);
    return true;
  });
});

test('PullImage with CRI AuthConfig; without it the registry refuses (PERMISSION_DENIED)', async () => {
  const ref = `${authReg.host}/private:1`;
  await assert.rejects(call(clients.image, 'PullImage', { image: { image: ref } }), (e: grpc.ServiceError) => e.code === grpc.status.PERMISSION_DENIED && /credentials/.test(e.details));
  const auth = Buffer.from('kube:let-me-in').toString('base64');
  const r = await call<{ image_ref: string }>(clients.image, 'PullImage', { image: { image: ref }, auth: { auth }, sandbox_config: { metadata: { name: 'ignored' } } });
  assert.equal(r.image_ref, named.manifest.config.digest);
  const st = await call<{ image: CriImage }>(clients.image, 'ImageStatus', { image: { image: ref } });
  assert.equal(st.image.username, 'nobody');
  assert.equal(st.image.uid, null);
});

test('registry.k8s.io (inline mirror) and gcr.io (hosts.toml) are pulled from the local plain-HTTP registry', async () => {
  const a = await call<{ image_ref: string }>(clients.image, 'PullImage', { image: { image: 'registry.k8s.io/pause:3.9' } });
  assert.equal(a.image_ref, named.manifest.config.digest);
  const b = await call<{ image_ref: string }>(clients.image, 'PullImage', { image: { image: 'gcr.io/app:1' } });
  assert.equal(b.image_ref, img.manifest.config.digest);
  const st = await call<{ image: CriImage }>(clients.image, 'ImageStatus', { image: { image: 'registry.k8s.io/pause:3.9' } });
  assert.equal(st.image.pinned, true, 'the sandbox image is pinned');
  assert.ok(st.image.repo_tags.includes('registry.k8s.io/pause:3.9'));
  // one image, several names: all folded into one entry
  const l = await call<{ images: CriImage[] }>(clients.image, 'ListImages', { filter: { image: { image: img.manifest.config.digest } } });
  assert.deepEqual(l.images[0]!.repo_tags.sort(), [`${reg.host}/app:1`, 'gcr.io/app:1'].sort());
});

test('ImageFsInfo reports the snapshotter root with bytes and inodes; RemoveImage removes every name', async () => {
  const before = await call<{ image_filesystems: Array<{ fs_id: { mountpoint: string }; used_bytes: { value: string }; inodes_used: { value: string }; timestamp: string }> }>(clients.image, 'ImageFsInfo', {});
  const fs = before.image_filesystems[0]!;
  assert.equal(fs.fs_id.mountpoint, svc.snapshotter.root);
  assert.ok(Number(fs.used_bytes.value) > 1_000_000, `busybox layer counted (${fs.used_bytes.value})`);
  assert.ok(Number(fs.inodes_used.value) >= 10);
  assert.ok(BigInt(fs.timestamp) > 1_600_000_000_000_000_000n, 'timestamp in nanoseconds');
  // by one tag: the whole image goes (both tags), and its layers with it
  await call(clients.image, 'RemoveImage', { image: { image: 'gcr.io/app:1' } });
  const st = await call<{ image: CriImage | null }>(clients.image, 'ImageStatus', { image: { image: `${reg.host}/app:1` } });
  assert.equal(st.image, null);
  const afterInfo = await call<{ image_filesystems: Array<{ used_bytes: { value: string } }> }>(clients.image, 'ImageFsInfo', {});
  assert.ok(Number(afterInfo.image_filesystems[0]!.used_bytes.value) < Number(fs.used_bytes.value) - 1_000_000, 'usage dropped by the busybox layer');
  // by id
  await call(clients.image, 'RemoveImage', { image: { image: named.manifest.config.digest } });
  const l = await call<{ images: CriImage[] }>(clients.image, 'ListImages', {});
  assert.deepEqual(l.images, []);
  assert.equal(svc.snapshotter.list().length, 0);
});
