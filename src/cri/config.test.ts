import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultConfig, loadConfigFile, parseArgs, parseConfigText, resolveConfig } from './config.ts';

test('defaults are the documented ones', () => {
  const c = defaultConfig();
  assert.equal(c.socket, '/run/corral/corral.sock');
  assert.equal(c.default_runtime_handler, 'corral-oci');
  assert.match(c.runtime_handlers['corral-oci']!.path, /\/bin\/corral-oci$/);
  assert.equal(c.runtime_handlers['corral-oci']!.type, 'oci');
  assert.equal(c.stream.address, '127.0.0.1');
  assert.equal(c.metrics.address, '127.0.0.1:9464');
  assert.equal(c.logs.max_container_log_bytes, 10 * 1024 * 1024);
  // every default key is documented in config.md
  const doc = readFileSync(new URL('./config.md', import.meta.url), 'utf8');
  const keys = (o: object, prefix = ''): string[] =>
    Object.entries(o).flatMap(([k, v]) => (v && typeof v === 'object' && !Array.isArray(v) && prefix !== 'runtime_handlers.' && k !== 'mirrors' ? keys(v, `${prefix}${k}.`) : [`${prefix}${k}`]));
  for (const k of keys(c)) if (!k.startsWith('runtime_handlers.')) assert.ok(doc.includes(`\`${k}\``), `config.md documents ${k}`);
});

test('a TOML file overlays the defaults', () => {
  const c = parseConfigText(
    `
socket = "/tmp/x.sock"
log_level = "debug"
default_runtime_handler = "runc"

[runtime_handlers.runc]
path = "/usr/sbin/runc"

[cni]
bin_dirs = ["/opt/a", "/opt/b"]

[registry.mirrors]
"docker.io" = ["https://mirror.test"]

[stream]
port = 10010

[metrics]
address = ""
`,
    'test.toml',
  );
  assert.equal(c.socket, '/tmp/x.sock');
  assert.equal(c.log_level, 'debug');
  assert.deepEqual(c.runtime_handlers.runc, { path: '/usr/sbin/runc', type: 'oci' });
  assert.ok(c.runtime_handlers['corral-oci'], 'built-in handler stays');
  assert.deepEqual(c.cni.bin_dirs, ['/opt/a', '/opt/b']);
  assert.equal(c.cni.conf_dir, '/etc/cni/net.d');
  assert.deepEqual(c.registry.mirrors, { 'docker.io': ['https://mirror.test'] });
  assert.equal(c.stream.port, 10010);
  assert.equal(c.metrics.address, '');
});

test('mistakes are reported with the file and key', () => {
  assert.throws(() => parseConfigText('sockett = "/x"', 'a.toml'), { code: 'INVALID_ARGUMENT', message: /a\.toml: unknown key sockett/ });
  assert.throws(() => parseConfigText('[stream]\nport = 70000', 'a.toml'), { message: /stream\.port must be an integer in 0\.\.65535/ });
  assert.throws(() => parseConfigText('socket = "relative.sock"', 'a.toml'), { message: /absolute path/ });
  assert.throws(() => parseConfigText('default_runtime_handler = "nope"', 'a.toml'), { message: /not in runtime_handlers/ });
  assert.throws(() => parseConfigText('[metrics]\naddress = "nohostport"', 'a.toml'), { message: /host:port/ });
  assert.throws(() => parseConfigText('[runtime_handlers.x]\npath = "/x"\ntype = "vm"', 'a.toml'), { message: /type must be "oci"/ });
  assert.throws(() => parseConfigText('[registry.mirrors]\n"docker.io" = ["ftp://x"]', 'a.toml'), { message: /http\(s\)/ });
  assert.throws(() => parseConfigText('socket = ', 'a.toml'), { message: /not valid TOML/ });
});

test('flags override the file; --config must exist, the default file may not', () => {
  const dir = mkdtempSync(join(tmpdir(), 'corral-cfg-'));
  try {
    const f = join(dir, 'c.toml');
    writeFileSync(f, 'socket = "/tmp/file.sock"\n[stream]\nport = 1234\n');
    const args = parseArgs(['--config', f, '--stream-port=0', '--cni-bin-dir', '/a', '--cni-bin-dir', '/b', '--log-level', 'warn']);
    const c = resolveConfig(args);
    assert.equal(c.socket, '/tmp/file.sock');
    assert.equal(c.stream.port, 0);
    assert.deepEqual(c.cni.bin_dirs, ['/a', '/b']);
    assert.equal(c.log_level, 'warn');
    assert.throws(() => resolveConfig(parseArgs(['--config', join(dir, 'missing.toml')])), { code: 'NOT_FOUND' });
    assert.deepEqual(loadConfigFile(join(dir, 'absent.toml'), false), defaultConfig());
    assert.throws(() => resolveConfig(parseArgs(['--config', f, '--log-level', 'loud'])), { message: /command line: log_level/ });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.throws(() => parseArgs(['--bogus']), { code: 'INVALID_ARGUMENT', message: /unknown argument/ });
  assert.throws(() => parseArgs(['--socket']), { message: /needs a value/ });
  assert.equal(parseArgs(['--version']).version, true);
});
