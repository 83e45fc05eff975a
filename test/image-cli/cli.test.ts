// bin/corral against real registries (plain, basic auth, TLS): pull progress on a TTY and in
// plain mode, images/inspect/tag/rmi/push/system df/image prune, errors a user can act on, and
// export/import cross-checked with skopeo and umoci. Each test has its own store; the suite
// checks that no mount, registry process or temp dir is left.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RegistryClient } from '../../src/image/registry/client.ts';
import { closeIdleConnections } from '../../src/image/registry/transport.ts';
import { buildImage, busyboxEntries, pushImage } from '../helpers/image-builder.ts';
import { freePort, startRegistry, pidAlive, type TestRegistry } from '../helpers/registry.ts';
import { mountsUnder } from '../helpers/leaks.ts';

const CORRAL = join(import.meta.dirname, '../../bin/corral');
const dir = mkdtempSync(join(tmpdir(), 'corral-cli-test-'));
let reg: TestRegistry;
let authReg: TestRegistry;
let tlsReg: TestRegistry;
const img = buildImage([{ entries: busyboxEntries() }, { entries: [{ name: 'etc/app.conf', data: 'answer=42\n' }] }], { cmd: ['/bin/sh', '-c', 'cat /etc/app.conf'] });
let n = 0;
const store = () => join(dir, `store-${++n}`);

function corral(root: string, args: string[], opts: { input?: Buffer } = {}): { status: number | null; stdout: string; stderr: string; out: Buffer } {
  const r = spawnSync(CORRAL, ['--root', root, ...args], { input: opts.input, maxBuffer: 1 << 28 });
  return { status: r.status, stdout: r.stdout.toString(), stderr: r.stderr.toString(), out: r.stdout };
}
const ok = (r: ReturnType<typeof corral>, what: string) => assert.equal(r.status, 0, `${what}: ${r.stderr}`);


before(async () => {
  assert.ok(existsSync(CORRAL), 'bin/corral exists (scripts/setup.sh generates it)');
  reg = await startRegistry();
  authReg = await startRegistry({ basicAuth: { alice: 's3cret' } });
  tlsReg = await startRegistry({ tls: true });
  const c = new RegistryClient({ hosts: { insecure: [reg.host, authReg.host] } });
  await pushImage(c, `${reg.host}/app:1`, img);
  await pushImage(c, `${authReg.host}/secret:1`, img, { username: 'alice', password: 's3cret' });
  closeIdleConnections();
});

after(async () => {
  closeIdleConnections();
  for (const r of [reg, authReg, tlsReg]) {
    await r?.stop();
    if (r) assert.equal(pidAlive(r.pid), false, 'registry stopped');
  }
  assert.deepEqual(mountsUnder(dir), [], 'no mounts left');
  rmSync(dir, { recursive: true, force: true });
  assert.deepEqual(readdirSync(tmpdir()).filter((d) => d.startsWith('corral-registry-') && [reg, authReg, tlsReg].some((r) => r && join(tmpdir(), d) === r.dir)), []);
});

test('pull prints plain progress lines and a summary; images, inspect, tag, rmi', () => {
  const root = store();
  const ref = `${reg.host}/app:1`;
  const r = corral(root, ['--insecure-registry', reg.host, 'pull', ref]);
  ok(r, 'pull');
  assert.doesNotMatch(r.stderr, /\x1b\[/, 'no escape sequences when not on a terminal');
  for (const l of img.manifest.layers) {
    const short = l.digest.slice(7, 19);
    assert.match(r.stderr, new RegExp(`${short}: waiting`));
    assert.match(r.stderr, new RegExp(`${short}: downloaded`));
    assert.match(r.stderr, new RegExp(`${short}: unpacked`));
  }
  assert.match(r.stdout, new RegExp(`Digest: ${img.manifestDesc.digest}`));
  assert.match(r.stdout, /Pulled 2 layer\(s\) \(2 new, 0 already present\)/);
  assert.equal(r.stdout.trim().split('\n').pop(), ref, 'last line: the full name');
  const again = corral(root, ['--insecure-registry', reg.host, 'pull', ref]);
  ok(again, 'pull again');
  assert.match(again.stdout, /Image is up to date/);
  assert.match(again.stderr, /already exists/);

  const tbl = corral(root, ['images']);
  ok(tbl, 'images');
  const lines = tbl.stdout.trim().split('\n');
  assert.match(lines[0]!, /^REPOSITORY\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE$/);
  assert.match(lines[1]!, new RegExp(`^${reg.host}/app\\s+1\\s+${img.manifest.config.digest.slice(7, 19)}\\s`));
  ok(corral(root, ['tag', ref, 'example.com/team/app:stable']), 'tag');
  const js = corral(root, ['images', '--format', 'json']);
  const objs = js.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(objs.length, 1);
  assert.equal(objs[0].ID, img.manifest.config.digest);
  assert.deepEqual(objs[0].RepoTags.sort(), [ref, 'example.com/team/app:stable'].sort());
  const ins = corral(root, ['inspect', 'example.com/team/app:stable']);
  ok(ins, 'inspect');
  const doc = JSON.parse(ins.stdout);
  assert.deepEqual(doc[0].Config.Cmd, ['/bin/sh', '-c', 'cat /etc/app.conf']);
  assert.deepEqual(doc[0].RootFS.Layers, img.config.rootfs.diff_ids);
  // by ID with two repositories: refused without --force, like docker
  const id = img.manifest.config.digest.slice(7, 19);
  const refused = corral(root, ['rmi', id]);
  assert.equal(refused.status, 1);
  assert.match(refused.stderr, /referenced in 2 repositories/);
  const untag = corral(root, ['rmi', 'example.com/team/app:stable']);
  ok(untag, 'rmi tag');
  assert.match(untag.stdout, /Untagged: example.com\/team\/app:stable/);
  const rm = corral(root, ['rmi', id]);
  ok(rm, 'rmi id');
  assert.match(rm.stdout, /Deleted: sha256:/);
  assert.equal(corral(root, ['images', '-q']).stdout, '');
  const df = corral(root, ['system', 'df']);
  ok(df, 'system df');
  assert.match(df.stdout, /^Images\s+0\s+0\s+0B/m);
});

test('pull on a terminal draws a progress bar per layer, redrawn in place', () => {
  const root = store();
  // util-linux script(1) gives the CLI a pseudo-terminal
  const cmd = `${CORRAL} --root ${root} --insecure-registry ${reg.host} pull ${reg.host}/app:1`;
  const r = spawnSync('script', ['-qefc', cmd, '/dev/null'], { encoding: 'utf8', env: { ...process.env, COLUMNS: '120' } });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /\x1b\[2K/, 'lines are cleared and redrawn');
  assert.match(r.stdout, /\x1b\[\d+A/, 'the cursor moves back up over the layer lines');
  for (const l of img.manifest.layers) assert.match(r.stdout, new RegExp(`${l.digest.slice(7, 19)}: Pull complete`));
  assert.match(r.stdout, /Pulled 2 layer\(s\)/);
});

test('errors a user can act on: unknown image, auth required, TLS failure, unreachable, disk full', async () => {
  const root = store();
  const unknown = corral(root, ['--insecure-registry', reg.host, 'pull', `${reg.host}/app:nope`]);
  assert.equal(unknown.status, 1);
  assert.match(unknown.stderr, /not found in 127\.0\.0\.1:\d+/);
  assert.match(unknown.stderr, /Hint: check the repository name and the tag/);
  const local = corral(root, ['inspect', 'nothing-here:1']);
  assert.equal(local.status, 1);
  assert.match(local.stderr, /No such image: nothing-here:1/);

  const auth = corral(root, ['--insecure-registry', authReg.host, 'pull', `${authReg.host}/secret:1`]);
  assert.equal(auth.status, 1);
  assert.match(auth.stderr, /authentication required by 127\.0\.0\.1/);
  assert.match(auth.stderr, /--creds USER:PASSWORD/);
  ok(corral(root, ['--insecure-registry', authReg.host, 'pull', '--creds', 'alice:s3cret', `${authReg.host}/secret:1`]), 'pull with creds');

  // TLS with a private CA: refused until the CA is in the hosts dir
  const hosts = join(dir, 'hosts');
  mkdirSync(join(hosts, tlsReg.host), { recursive: true });
  copyFileSync(tlsReg.caCertPath!, join(hosts, tlsReg.host, 'ca.crt'));
  await pushImage(new RegistryClient({ hosts: { configDir: hosts } }), `${tlsReg.host}/tls:1`, img);
  closeIdleConnections();
  const tls = corral(root, ['pull', `${tlsReg.host}/tls:1`]);
  assert.equal(tls.status, 1);
  assert.match(tls.stderr, /TLS failure talking to 127\.0\.0\.1/);
  assert.match(tls.stderr, /ca\.crt/);
  ok(corral(root, ['--hosts-dir', hosts, 'pull', `${tlsReg.host}/tls:1`]), 'pull with the CA in the hosts dir');
  // plain HTTP registry spoken to with TLS: the hint names --insecure-registry
  const plain = corral(root, ['pull', `${reg.host}/app:1`]);
  assert.equal(plain.status, 1);
  assert.match(plain.stderr, /TLS failure/);
  assert.match(plain.stderr, new RegExp(`--insecure-registry ${reg.host.replace(/\./g, '\\.')}`));

  const port = await freePort();
  const down = corral(root, ['pull', `127.0.0.1:${port}/x:1`]);
  assert.equal(down.status, 1);
  assert.match(down.stderr, /registry 127\.0\.0\.1:\d+ is unreachable/);

  // disk full: a 4 MiB tmpfs as the store, an image with 6 MB of incompressible data
  const big = buildImage([{ entries: [{ name: 'blob', data: randomBytes(6_000_000) }] }]);
  await pushImage(new RegistryClient({ hosts: { insecure: [reg.host] } }), `${reg.host}/big:1`, big);
  closeIdleConnections();
  const small = join(dir, 'small');
  mkdirSync(small);
  assert.equal(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', small]).status, 0);
  try {
    const full = corral(small, ['--insecure-registry', reg.host, 'pull', `${reg.host}/big:1`]);
    assert.equal(full.status, 1);
    assert.match(full.stderr, /disk holding the image store is full/);
    assert.match(full.stderr, /Hint: free space/);
  } finally {
    assert.equal(spawnSync('umount', [small]).status, 0);
  }
  const usage = corral(root, ['pull']);
  assert.equal(usage.status, 2, 'usage error');
  assert.equal(corral(root, ['frobnicate']).status, 2);
});

test('export/import round trips, cross-checked with skopeo and umoci; push', () => {
  const root = store();
  const ref = `${reg.host}/app:1`;
  ok(corral(root, ['--insecure-registry', reg.host, 'pull', ref]), 'pull');
  // docker archive → skopeo reads it, and converts it to an OCI layout that we import back
  const dockerTar = join(dir, 'rt-docker.tar');
  ok(corral(root, ['export', '-o', dockerTar, ref]), 'export docker');
  const insp = spawnSync('skopeo', ['inspect', `docker-archive:${dockerTar}`], { encoding: 'utf8' });
  assert.equal(insp.status, 0, insp.stderr);
  assert.deepEqual(JSON.parse(insp.stdout).Layers, img.config.rootfs.diff_ids, 'skopeo sees the uncompressed layers by diff_id');
  const skOci = join(dir, 'sk-oci');
  const cp = spawnSync('skopeo', ['copy', `docker-archive:${dockerTar}`, `oci:${skOci}:v9`], { encoding: 'utf8' });
  assert.equal(cp.status, 0, cp.stderr);
  const root2 = store();
  const noName = corral(root2, ['import', skOci]);
  assert.equal(noName.status, 1);
  assert.match(noName.stderr, /named only by the tag "v9".*--name REPO/);
  const imp = corral(root2, ['import', '--name', 'example.com/copied', skOci]);
  ok(imp, 'import skopeo OCI layout');
  assert.match(imp.stdout, /Loaded image: example.com\/copied:v9 .*oci-dir/);
  // skopeo's docker-archive output imports too
  const skDocker = join(dir, 'sk-docker.tar');
  const cp2 = spawnSync('skopeo', ['copy', `oci:${skOci}:v9`, `docker-archive:${skDocker}:example.com/sk:2`], { encoding: 'utf8' });
  assert.equal(cp2.status, 0, cp2.stderr);
  const imp2 = corral(root2, ['import', skDocker]);
  ok(imp2, 'import skopeo docker archive');
  assert.match(imp2.stdout, /Loaded image: example.com\/sk:2 .*docker-archive/);
  const js = corral(root2, ['images', '--format', 'json']).stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.ok(js.every((o) => o.Unpacked), 'imported images are unpacked');
  // OCI tar: digests survive; umoci unpacks it; importing it gives the same repo digest
  const ociTar = join(dir, 'rt-oci.tar');
  ok(corral(root, ['export', '--format', 'oci', '-o', ociTar, ref]), 'export oci');
  const layout = join(dir, 'umoci-layout');
  mkdirSync(layout);
  assert.equal(spawnSync('tar', ['-xf', ociTar, '-C', layout]).status, 0);
  const bundle = join(dir, 'umoci-bundle');
  const um = spawnSync('umoci', ['unpack', '--image', `${layout}:1`, bundle], { encoding: 'utf8' });
  assert.equal(um.status, 0, um.stderr);
  assert.equal(readFileSync(join(bundle, 'rootfs/etc/app.conf'), 'utf8'), 'answer=42\n');
  const root3 = store();
  ok(corral(root3, ['import', ociTar]), 'import our OCI tar');
  const i3 = JSON.parse(corral(root3, ['inspect', ref]).stdout)[0];
  assert.equal(i3.Digest, img.manifestDesc.digest, 'repo digest kept');
  // stdin import and OCI layout dir export
  const root4 = store();
  ok(corral(root4, ['import', '-'], { input: readFileSync(dockerTar) }), 'import from stdin');
  const outDir = join(dir, 'our-layout');
  ok(corral(root, ['export', '--oci-dir', outDir, ref]), 'export oci dir');
  const um2 = spawnSync('umoci', ['ls', '--layout', outDir], { encoding: 'utf8' });
  assert.equal(um2.status, 0, um2.stderr);
  assert.equal(um2.stdout.trim(), '1', 'umoci sees the tag');
  // push what was imported to a new name, pull it into a fresh store
  ok(corral(root4, ['--insecure-registry', reg.host, 'push', ref, `${reg.host}/pushed:7`]), 'push');
  const root5 = store();
  ok(corral(root5, ['--insecure-registry', reg.host, 'pull', `${reg.host}/pushed:7`]), 'pull pushed');
  // image prune -a empties a store; its content and snapshots are gone
  const pr = corral(root5, ['image', 'prune', '-a', '-f']);
  ok(pr, 'prune');
  assert.match(pr.stdout, /Total reclaimed space: [1-9]/);
  assert.deepEqual(readdirSync(join(root5, 'content/blobs/sha256')), []);
  assert.deepEqual(readdirSync(join(root5, 'content/ingest')), [], 'no ingest left');
});
