import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger } from '../log.ts';
import { BuiltinOci } from './builtin-oci.ts';

// tests run from the sources: the checkout is three levels up
const repoFile = (rel: string) => fileURLToPath(new URL(`../../../${rel}`, import.meta.url));
const handler = repoFile('bin/corral-oci');
const log = createLogger({ level: 'error' });

function runClient(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(handler, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d) => (stdout += d));
    c.stderr.on('data', (d) => (stderr += d));
    c.on('error', reject);
    c.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

test('only this build\'s corral-oci client is the built-in handler', () => {
  assert.equal(BuiltinOci.for('/usr/sbin/runc', log), null, 'runc is a foreign runtime');
  assert.equal(BuiltinOci.for('/nonexistent/corral-oci', log), null);
  assert.equal(BuiltinOci.for(repoFile('build/corral-exec'), log), null, 'an executable without a client config beside it');
  assert.ok(BuiltinOci.for(handler, log), 'bin/corral-oci of this checkout');
});

test('corrald hosts the handler\'s server: the client is served by this process, verbs run in-process, close removes the socket', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'corral-builtin-'));
  const serverDir = join(dir, 'server');
  const saved = process.env.CORRAL_OCI_SERVER_DIR;
  process.env.CORRAL_OCI_SERVER_DIR = serverDir;
  const a = BuiltinOci.for(handler, log)!;
  const b = BuiltinOci.for(handler, log)!;
  try {
    await a.host();
    assert.ok(a.hosting, 'hosting');
    assert.ok(a.sockPath.startsWith(serverDir + '/'));
    assert.equal(readFileSync(a.sockPath.replace(/\.sock$/, '.pid'), 'utf8').trim(), String(process.pid));
    await b.host();
    assert.ok(!b.hosting, 'a second host for the same socket defers to the first');

    // the static client reaches this process (it would start a server of its own, logging to <id>.log, otherwise)
    const root = join(dir, 'state');
    const r = await runClient(['--root', root, 'list', '--format', 'json'], { PATH: process.env.PATH, CORRAL_OCI_SERVER_DIR: serverDir });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), []);
    assert.ok(!readdirSync(serverDir).some((f) => f.endsWith('.log')), 'no standalone server was started');

    // in-process verbs: output and status as the CLI's
    const missing = await a.run(['--root', root, 'state', 'no-such-container']);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr.toString(), /no-such-container/);
    const list = await a.run(['--root', root, 'list', '-q']);
    assert.equal(list.code, 0);
    assert.equal(list.stdout.toString(), '');
    await assert.rejects(a.run(['--root', root, 'exec', 'x', 'true']).then((x) => { if (x.code !== 0) throw new Error(x.stderr.toString()); }));
  } finally {
    await a.close();
    await b.close();
    if (saved === undefined) delete process.env.CORRAL_OCI_SERVER_DIR;
    else process.env.CORRAL_OCI_SERVER_DIR = saved;
  }
  try {
    assert.ok(!existsSync(a.sockPath), 'socket removed');
    assert.ok(!existsSync(a.sockPath.replace(/\.sock$/, '.pid')), 'pid file removed');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
