#!/usr/bin/env bash
# Benchmark: one container lifecycle (create, start, wait for exit, delete) of /bin/true from the
# same busybox bundle, driven through the CLI of runc and of bin/corral-oci, measured by hyperfine
# in the same run. Prints both means and the ratio corral-oci / runc.
#
#   sudo bench/oci-lifecycle.sh            # RUNS=30 WARMUP=3 by default
#   RUNS=100 RUNC=/usr/bin/runc CORRAL=bin/corral-oci sudo -E bench/oci-lifecycle.sh
#
# Everything it creates lives under one temp dir (bundle, both --root state dirs, pid files,
# hyperfine JSON) and one cgroup parent of its own (/corral-bench-lifecycle-<pid>); all of it is
# removed on exit, and the script fails if anything leaked. Never run by the test suite.
#
# bin/corral-oci is a client of a long-lived corral-oci server: this script gives it a server dir of
# its own ($tmp/server, via CORRAL_OCI_SERVER_DIR), so the first lifecycle below starts that server
# and the timed runs reuse it; it is stopped by pid on exit. CORRAL_OCI_NO_SERVER=1 times the
# per-verb Node path instead.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-30}
warmup=${WARMUP:-3}
runc=${RUNC:-/usr/bin/runc}
corral=${CORRAL:-$here/bin/corral-oci}
node=$here/node_modules/.bin/node

die() { echo "oci-lifecycle: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (containers and cgroups)"
command -v hyperfine >/dev/null || die "hyperfine not found (apt-get install hyperfine)"
[ -x "$runc" ] || die "runc not found at $runc"
[ -x "$corral" ] || die "$corral missing: run bash scripts/setup.sh"
[ -x "$node" ] || die "$node missing: run bash scripts/setup.sh"
[ -x /bin/busybox ] || die "/bin/busybox missing (apt-get install busybox-static)"
file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || die "/bin/busybox is not statically linked (install busybox-static)"

tmp=$(mktemp -d /tmp/corral-bench-lifecycle.XXXXXX)
cgparent=corral-bench-lifecycle-$$
export CORRAL_OCI_SERVER_DIR=$tmp/server

cleanup() {
  set +e
  "$runc" --root "$tmp/root-runc" delete --force bench-runc >/dev/null 2>&1
  "$corral" --root "$tmp/root-corral" delete --force bench-corral >/dev/null 2>&1
  local leaked=0 spid
  for pidfile in "$tmp"/server/*.pid; do
    [ -f "$pidfile" ] || continue
    read -r spid <"$pidfile" || true
    [ -n "$spid" ] && grep -qa -- --server "/proc/$spid/cmdline" 2>/dev/null && kill -TERM "$spid"
    for _ in $(seq 100); do [ -e "/proc/$spid" ] || break; sleep 0.05; done
    [ -e "/proc/$spid" ] && { echo "oci-lifecycle: WARNING: corral-oci server $spid still runs" >&2; leaked=1; }
  done
  # Our cgroup parent in every hierarchy (v1 controllers, name=systemd, unified): leaves first.
  for d in /sys/fs/cgroup/*/"$cgparent" /sys/fs/cgroup/"$cgparent"; do
    [ -d "$d" ] || continue
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    [ -d "$d" ] && { echo "oci-lifecycle: WARNING: cgroup $d could not be removed" >&2; leaked=1; }
  done
  if grep -q " $tmp/" /proc/self/mountinfo; then
    echo "oci-lifecycle: WARNING: mounts left under $tmp:" >&2
    awk -v t="$tmp/" 'index($5, t) == 1 { print "  " $5 }' /proc/self/mountinfo >&2
    leaked=1
  else
    rm -rf --one-file-system "$tmp"
  fi
  [ "$leaked" = 0 ] || exit 1
}
trap cleanup EXIT

# The bundle: a static busybox rootfs with /bin/true, and runc's template config adjusted.
bundle=$tmp/bundle
mkdir -p "$bundle/rootfs"/{bin,proc,sys,dev,tmp,etc}
cp /bin/busybox "$bundle/rootfs/bin/busybox"
for applet in sh true; do ln -s busybox "$bundle/rootfs/bin/$applet"; done
"$runc" spec --bundle "$bundle"
"$node" -e '
  const fs = require("node:fs");
  const [file, cgroupsPath] = process.argv.slice(1);
  const c = JSON.parse(fs.readFileSync(file, "utf8"));
  c.process.args = ["/bin/true"];
  c.process.terminal = false;
  c.linux.cgroupsPath = cgroupsPath;
  fs.writeFileSync(file, JSON.stringify(c, null, 2));
' "$bundle/config.json" "/$cgparent/ctr"

# One lifecycle: create (with a pid file), start, wait until the init is gone or a zombie
# (shell builtins only, so the wait costs no extra process), delete.
cat >"$tmp/cycle.sh" <<'SH'
#!/bin/sh
set -e
rt=$1 root=$2 id=$3 bundle=$4 pidfile=$5
"$rt" --root "$root" create --bundle "$bundle" --pid-file "$pidfile" "$id" </dev/null
"$rt" --root "$root" start "$id"
pid=; read -r pid <"$pidfile" || [ -n "$pid" ]  # pid files have no trailing newline
n=0
while [ -e "/proc/$pid" ]; do
  st=; { read -r _ _ st _ <"/proc/$pid/stat"; } 2>/dev/null || break
  [ "$st" = Z ] && break
  n=$((n + 1)); [ "$n" -lt 1000000 ] || { echo "cycle: $id did not exit" >&2; exit 1; }
done
"$rt" --root "$root" delete "$id"
SH
chmod +x "$tmp/cycle.sh"

# Fail early, with the runtime's own message, if either runtime cannot run the bundle at all.
for pair in "$runc:$tmp/root-runc:bench-runc" "$corral:$tmp/root-corral:bench-corral"; do
  IFS=: read -r rt root id <<<"$pair"
  "$tmp/cycle.sh" "$rt" "$root" "$id" "$bundle" "$tmp/$id.pid" || die "one lifecycle with $rt failed (see above)"
done

echo "oci-lifecycle: $runs runs (+$warmup warmup) of create+start+wait+delete of /bin/true" >&2
hyperfine --style basic --warmup "$warmup" --runs "$runs" --export-json "$tmp/hyperfine.json" \
  -n runc "$tmp/cycle.sh $runc $tmp/root-runc bench-runc $bundle $tmp/bench-runc.pid" \
  -n corral-oci "$tmp/cycle.sh $corral $tmp/root-corral bench-corral $bundle $tmp/bench-corral.pid" >&2

"$node" -e '
  const r = JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8")).results;
  const by = Object.fromEntries(r.map((x) => [x.command, x]));
  const ms = (s) => (s * 1000).toFixed(1);
  const a = by["runc"], b = by["corral-oci"];
  console.log("lifecycle of /bin/true (create+start+wait+delete), CLI, " + a.times.length + " runs each");
  for (const x of [a, b]) {
    console.log(`  ${x.command.padEnd(11)} mean ${ms(x.mean)} ms ± ${ms(x.stddev)}  median ${ms(x.median)} ms  min ${ms(x.min)} ms`);
  }
  console.log(`  ratio corral-oci / runc (mean): ${(b.mean / a.mean).toFixed(2)}x`);
' "$tmp/hyperfine.json"
