/**
 * Benchmark: the container lifecycle (create, start, wait for exit, delete) of /bin/true through
 * the runtime library, in-process: N iterations in one Node process, no CLI start-up per verb.
 * In the same run, hyperfine measures runc doing the same lifecycle from the same bundle through
 * its CLI; the summary gives the library's mean ms per container and its ratio to runc's mean.
 *
 *   sudo node_modules/.bin/node bench/oci-library.ts          # ITERATIONS=50 WARMUP=3
 *   ITERATIONS=200 RUNC_RUNS=50 sudo -E node_modules/.bin/node bench/oci-library.ts
 *
 * Everything lives under one temp dir (bundle, the library's --root, runc's --root) and one cgroup
 * parent of its own (/corral-bench-library-<pid>); all of it is removed at the end, and the exit
 * status is 1 if anything leaked. Never run by the test suite.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { RuntimeContext } from '../src/oci/runtime/context.ts';
import { create } from '../src/oci/runtime/create.ts';
import { start } from '../src/oci/runtime/start.ts';
import { deleteContainer } from '../src/oci/runtime/delete.ts';

const iterations = Number(process.env.ITERATIONS ?? 50);
const warmup = Number(process.env.WARMUP ?? 3);
const runcRuns = Number(process.env.RUNC_RUNS ?? Math.min(iterations, 30));
const runc = process.env.RUNC ?? '/usr/bin/runc';

function die(msg: string): never {
  console.error(`oci-library: ${msg}`);
  process.exit(1);
}

if (process.getuid?.() !== 0) die('must run as root (containers and cgroups)');
if (!(iterations > 0) || !(runcRuns > 0) || !(warmup >= 0)) die('ITERATIONS and RUNC_RUNS must be positive, WARMUP ≥ 0');
if (!existsSync(runc)) die(`runc not found at ${runc}`);
if (spawnSync('hyperfine', ['--version']).status !== 0) die('hyperfine not found (apt-get install hyperfine)');
if (!existsSync('/bin/busybox')) die('/bin/busybox missing (apt-get install busybox-static)');

const tmp = mkdtempSync('/tmp/corral-bench-library.');
const cgParent = `corral-bench-library-${process.pid}`;
const bundle = join(tmp, 'bundle');
const libRoot = join(tmp, 'root-lib');
const runcRoot = join(tmp, 'root-runc');

function buildBundle(): void {
  const rootfs = join(bundle, 'rootfs');
  for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'etc']) mkdirSync(join(rootfs, d), { recursive: true });
  copyFileSync('/bin/busybox', join(rootfs, 'bin/busybox'));
  chmodSync(join(rootfs, 'bin/busybox'), 0o755);
  for (const applet of ['sh', 'true']) symlinkSync('busybox', join(rootfs, 'bin', applet));
  const spec = spawnSync(runc, ['spec', '--bundle', bundle], { encoding: 'utf8' });
  if (spec.status !== 0) throw new Error(`runc spec failed: ${spec.stderr}`);
  const file = join(bundle, 'config.json');
  const config = JSON.parse(readFileSync(file, 'utf8'));
  config.process.args = ['/bin/true'];
  config.process.terminal = false;
  config.linux.cgroupsPath = `/${cgParent}/ctr`;
  writeFileSync(file, JSON.stringify(config, null, 2));
}

/** runc's lifecycle for hyperfine: create, start, wait until the init is gone or a zombie, delete. */
const CYCLE = `#!/bin/sh
set -e
rt=$1 root=$2 id=$3 bundle=$4 pidfile=$5
"$rt" --root "$root" create --bundle "$bundle" --pid-file "$pidfile" "$id" </dev/null
"$rt" --root "$root" start "$id"
pid=; read -r pid <"$pidfile" || [ -n "$pid" ]
n=0
while [ -e "/proc/$pid" ]; do
  st=; { read -r _ _ st _ <"/proc/$pid/stat"; } 2>/dev/null || break
  [ "$st" = Z ] && break
  n=$((n + 1)); [ "$n" -lt 1000000 ] || { echo "cycle: $id did not exit" >&2; exit 1; }
done
"$rt" --root "$root" delete "$id"
`;

const ctx = new RuntimeContext({ root: libRoot });
const live = new Set<string>();

async function lifecycle(id: string): Promise<void> {
  live.add(id);
  const { executor } = await create(ctx, { id, bundle, stdio: ['ignore', 'ignore', 'ignore'] });
  executor.close();
  const record = await start(ctx, id);
  for (let spins = 0; ctx.status(record) !== 'stopped'; spins++) {
    if (spins > 1_000_000) throw new Error(`container ${id} did not exit`);
    await new Promise((r) => setImmediate(r));
  }
  await deleteContainer(ctx, id);
  live.delete(id);
}

interface Stats { mean: number; stddev: number; median: number; min: number }
function stats(xs: number[]): Stats {
  const s = [...xs].sort((a, b) => a - b);
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  const sd = Math.sqrt(s.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, s.length - 1));
  const mid = s.length >> 1;
  return { mean, stddev: sd, median: s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2, min: s[0] };
}

function runcHyperfine(): Stats {
  const script = join(tmp, 'cycle.sh');
  writeFileSync(script, CYCLE, { mode: 0o755 });
  const json = join(tmp, 'hyperfine.json');
  const cmd = `${script} ${runc} ${runcRoot} bench-runc ${bundle} ${join(tmp, 'bench-runc.pid')}`;
  const r = spawnSync('hyperfine', ['--style', 'basic', '--warmup', String(warmup), '--runs', String(runcRuns), '--export-json', json, '-n', 'runc', cmd], {
    stdio: ['ignore', 2, 2], // hyperfine's report goes to stderr; the summary is ours
  });
  if (r.status !== 0) throw new Error(`hyperfine (runc) failed with status ${r.status}`);
  const res = JSON.parse(readFileSync(json, 'utf8')).results[0];
  return { mean: res.mean * 1000, stddev: res.stddev * 1000, median: res.median * 1000, min: res.min * 1000 };
}

async function cleanup(): Promise<boolean> {
  let clean = true;
  for (const id of live) {
    try { await deleteContainer(ctx, id, { force: true }); } catch (e) { console.error(`oci-library: cleanup of ${id}: ${(e as Error).message}`); }
  }
  spawnSync(runc, ['--root', runcRoot, 'delete', '--force', 'bench-runc'], { stdio: 'ignore' });
  // Our cgroup parent in every hierarchy (v1 controllers, name=systemd, unified, or v2 root).
  const roots = ['/sys/fs/cgroup', ...readdirSync('/sys/fs/cgroup').map((d) => join('/sys/fs/cgroup', d))];
  const removeTree = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeTree(join(dir, e.name));
    rmdirSync(dir);
  };
  for (const r of roots) {
    const d = join(r, cgParent);
    if (!existsSync(d)) continue;
    try { removeTree(d); } catch (e) { console.error(`oci-library: WARNING: cgroup ${d} not removed: ${(e as Error).message}`); clean = false; }
  }
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4]).filter((m) => m?.startsWith(tmp + '/'));
  if (mounts.length) {
    console.error(`oci-library: WARNING: mounts left under ${tmp}:\n  ${mounts.join('\n  ')}`);
    return false;
  }
  if (existsSync(libRoot) && readdirSync(libRoot).length) {
    console.error(`oci-library: WARNING: state left in ${libRoot}: ${readdirSync(libRoot).join(' ')}`);
    clean = false;
  }
  if (statSync(tmp).isDirectory()) rmSync(tmp, { recursive: true, force: true });
  return clean;
}

let failed = false;
try {
  buildBundle();
  console.error(`oci-library: ${warmup} warmup + ${iterations} library lifecycles of /bin/true, then runc via hyperfine (${runcRuns} runs)`);
  for (let i = 0; i < warmup; i++) await lifecycle(`bench-lib-warmup-${i}`);
  const times: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const t0 = performance.now();
    await lifecycle(`bench-lib-${i}`);
    times.push(performance.now() - t0);
  }
  const lib = stats(times);
  const rc = runcHyperfine();
  const f = (x: number) => x.toFixed(1);
  console.log(`lifecycle of /bin/true (create+start+wait+delete)`);
  const row = (label: string, s: Stats) =>
    console.log(`  ${label.padEnd(40)} mean ${f(s.mean)} ms ± ${f(s.stddev)}  median ${f(s.median)} ms  min ${f(s.min)} ms`);
  row(`library (in-process, ${iterations} iterations)`, lib);
  row(`runc CLI (hyperfine, ${runcRuns} runs)`, rc);
  console.log(`  ratio library / runc (mean): ${(lib.mean / rc.mean).toFixed(2)}x`);
} catch (e) {
  console.error(`oci-library: ${(e as Error).stack ?? e}`);
  failed = true;
} finally {
  if (!(await cleanup())) failed = true;
}
process.exit(failed ? 1 : 0);
