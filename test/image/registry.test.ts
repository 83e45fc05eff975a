/**
 * The registry client against real registries: TLS with a generated CA (certs.d), basic
 * auth (config.json and per-request CRI AuthConfig), bearer tokens, mirrors from a
 * hosts.toml redirecting registry.k8s.io, fallback to the origin, resume of an interrupted
 * download through a connection-cutting proxy, redirects dropping auth on a host change.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, copyFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ImageService } from '../../src/image/service.ts';
import { RegistryClient } from '../../src/image/registry/client.ts';
import { closeIdleConnections } from '../../src/image/registry/transport.ts';
import { buildImage, busyboxEntries, pushImage } from '../helpers/image-builder.ts';
import { freePort, pidAlive, startRegistry, type TestRegistry } from '../helpers/registry.ts';

const root = mkdtempSync(join(tmpdir(), 'corral-registry-test-'));
const registries: TestRegistry[] = [];
const servers: http.Server[] = [];
after(async () => {
  closeIdleConnections();
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
  for (const r of registries) {
    await r.stop();
    assert.equal(pidAlive(r.pid), false);
    assert.equal(existsSync(r.dir), false);
  }
  rmSync(root, { recursive: true, force: true });
});

async function reg(opts: Parameters<typeof startRegistry>[0] = {}) {
  const r = await startRegistry(opts);
  registries.push(r);
  return r;
}

const small = () => buildImage([{ entries: busyboxEntries() }]);

test('TLS registry trusted through a certs.d CA directory', async () => {
  const r = await reg({ tls: true });
  const certs = join(root, 'certs.d');
  mkdirSync(join(certs, r.host), { recursive: true });
  copyFileSync(r.caCertPath!, join(certs, r.host, 'ca.crt'));
  const client = new RegistryClient({ hosts: { certsDirs: [certs] } });
  await client.ping(r.host);
  const img = small();
  await pushImage(client, `${r.host}/tls:1`, img);
  // without the CA the TLS handshake fails
  const untrusted = await ImageService.open({ root: join(root, 'tls-bad'), snapshotter: 'native', retries: 1 });
  try {
    await assert.rejects(untrusted.pull(`${r.host}/tls:1`), /certificate/);
  } finally {
    untrusted.close();
  }
  const svc = await ImageService.open({ root: join(root, 'tls'), snapshotter: 'native', hosts: { certsDirs: [certs] } });
  try {
    assert.equal((await svc.pull(`${r.host}/tls:1`)).digest, img.manifestDesc.digest);
  } finally {
    svc.close();
  }
});

test('basic auth: docker config.json and per-request credentials', async () => {
  const r = await reg({ basicAuth: { alice: 's3cret' } });
  const hosts = { insecure: [r.host] };
  const auth = { username: 'alice', password: 's3cret' };
  const img = small();
  await assert.rejects(pushImage(new RegistryClient({ hosts }), `${r.host}/basic:1`, img), { code: 'PERMISSION_DENIED' });
  await pushImage(new RegistryClient({ hosts }), `${r.host}/basic:1`, img, auth);
  const cfg = join(root, 'docker-config.json');
  writeFileSync(cfg, JSON.stringify({ auths: { [`http://${r.host}`]: { auth: Buffer.from('alice:s3cret').toString('base64') } } }));
  const svc = await ImageService.open({ root: join(root, 'basic'), snapshotter: 'native', hosts, dockerConfig: cfg });
  try {
    assert.equal((await svc.pull(`${r.host}/basic:1`)).digest, img.manifestDesc.digest);
  } finally {
    svc.close();
  }
  const svc2 = await ImageService.open({ root: join(root, 'basic2'), snapshotter: 'native', hosts });
  try {
    await assert.rejects(svc2.pull(`${r.host}/basic:1`), { code: 'PERMISSION_DENIED' });
    await assert.rejects(svc2.pull(`${r.host}/basic:1`, { auth: { username: 'alice', password: 'wrong' } }), { code: 'PERMISSION_DENIED' });
    const info = await svc2.pull(`${r.host}/basic:1`, { auth: { auth: Buffer.from('alice:s3cret').toString('base64'), serverAddress: r.host } });
    assert.equal(info.digest, img.manifestDesc.digest);
  } finally {
    svc2.close();
  }
});

test('bearer token auth: realm/service/scope, token cached', async () => {
  const r = await reg({ tokenAuth: { bob: 'pw' } });
  const hosts = { insecure: [r.host] };
  const img = small();
  const client = new RegistryClient({ hosts });
  await pushImage(client, `${r.host}/tok/app:1`, img, { username: 'bob', password: 'pw' });
  const pushes = r.tokenRequests();
  assert.ok(pushes >= 1);
  const svc = await ImageService.open({ root: join(root, 'token'), snapshotter: 'native', hosts });
  try {
    await assert.rejects(svc.pull(`${r.host}/tok/app:1`), { code: 'PERMISSION_DENIED' });
    const before = r.tokenRequests();
    const info = await svc.pull(`${r.host}/tok/app:1`, { auth: { username: 'bob', password: 'pw' } });
    assert.equal(info.digest, img.manifestDesc.digest);
    assert.ok(r.tokenRequests() - before <= 2, 'token reused for manifest and blobs');
  } finally {
    svc.close();
  }
});

test('mirrors: registry.k8s.io redirected to a local registry; a dead mirror falls back', async () => {
  const r = await reg();
  const img = small();
  await pushImage(new RegistryClient({ hosts: { insecure: [r.host] } }), `${r.host}/pause:3.9`, img);
  const hostsDir = join(root, 'hosts.d');
  const dead = await freePort();
  mkdirSync(join(hostsDir, 'registry.k8s.io'), { recursive: true });
  writeFileSync(
    join(hostsDir, 'registry.k8s.io', 'hosts.toml'),
    `server = "https://registry.k8s.io"\n\n[host."http://127.0.0.1:${dead}"]\n  capabilities = ["pull", "resolve"]\n\n[host."http://${r.host}"]\n  capabilities = ["pull", "resolve"]\n`,
  );
  const svc = await ImageService.open({ root: join(root, 'mirror'), snapshotter: 'native', hosts: { configDir: hostsDir }, retries: 1 });
  try {
    const info = await svc.pull('registry.k8s.io/pause:3.9');
    assert.equal(info.name, 'registry.k8s.io/pause:3.9');
    assert.equal(info.digest, img.manifestDesc.digest);
  } finally {
    svc.close();
  }
});

test('an interrupted blob download resumes with a Range request; redirects drop auth across hosts', async () => {
  const r = await reg();
  const big = randomBytes(3 << 20); // incompressible
  const img = buildImage([{ entries: [{ name: 'big.bin', data: big }], compression: 'none' }]);
  await pushImage(new RegistryClient({ hosts: { insecure: [r.host] } }), `${r.host}/big:1`, img);
  const layer = img.manifest.layers[0]!;
  const ranges: string[] = [];
  let cut = false;
  const authOnRedirect: Array<string | undefined> = [];
  // the proxy: blob GETs are redirected to "localhost" (another host name), which cuts the
  // first full download halfway
  const proxy = http.createServer((req, res) => {
    const isBlob = req.url!.includes(`/blobs/${layer.digest}`);
    if (isBlob && req.headers.host?.startsWith('127.0.0.1')) {
      res.writeHead(307, { Location: `http://localhost:${(proxy.address() as { port: number }).port}${req.url}` }).end();
      return;
    }
    if (isBlob) authOnRedirect.push(req.headers.authorization);
    if (isBlob) ranges.push(String(req.headers.range ?? ''));
    const up = http.request(`${r.url}${req.url}`, { method: req.method, headers: { ...req.headers, host: r.host } }, (ur) => {
      res.writeHead(ur.statusCode!, ur.headers);
      if (isBlob && !cut && !req.headers.range) {
        cut = true;
        let sent = 0;
        ur.on('data', (c: Buffer) => {
          if (sent > layer.size / 2) return;
          sent += c.length;
          res.write(c);
          if (sent > layer.size / 2) setImmediate(() => res.socket?.destroy());
        });
        return;
      }
      ur.pipe(res);
    });
    req.pipe(up);
  });
  servers.push(proxy);
  await new Promise<void>((res) => proxy.listen(0, '127.0.0.1', res));
  const ph = `127.0.0.1:${(proxy.address() as { port: number }).port}`;
  const svc = await ImageService.open({ root: join(root, 'resume'), snapshotter: 'native', hosts: { insecure: [ph] }, backoffMs: 10 });
  try {
    const info = await svc.pull(`${ph}/big:1`, { auth: { registryToken: 'secret-token' } });
    assert.equal(info.digest, img.manifestDesc.digest);
    assert.ok(cut);
    assert.equal(ranges[0], '');
    assert.match(ranges[1] ?? '', /^bytes=[1-9]\d*-$/, `resumed with a Range request (saw ${JSON.stringify(ranges)})`);
    assert.deepEqual(authOnRedirect.filter(Boolean), [], 'Authorization not sent to the other host');
    assert.deepEqual(await svc.content.ingests(), []);
  } finally {
    svc.close();
  }
});
