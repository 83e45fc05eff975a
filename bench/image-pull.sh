#!/usr/bin/env bash
# image-pull.sh - pull + unpack of one multi-layer image (>= 100 MB, thousands of files) from a
# private local registry: corral (bin/corral pull) versus containerd 1.6 (ctr image pull
# --plain-http, private daemon), and unpack throughput versus plain `tar -xzf` of the same layers.
# Not a test: it times, it never asserts. Everything lives under one temp dir; the registry and
# containerd are stopped by PID, mounts under the temp dir are removed, and the dir is deleted.
#
# Fairness: every contender unpacks onto a tmpfs of the bench's own (corral's store, containerd's
# root and the tar output dir), so no contender pays for the previous one's deletes (ext4 without
# a journal makes creates right after ~4,300 deletes slow). Runs are interleaved (round-robin,
# order rotated each round) with a settle period (sync + SETTLE seconds) before each timed run.
# Reported per contender: median wall time and median CPU time (user+sys of the command and its
# children; for containerd plus the daemon's own CPU, where its pull and unpack run), and the
# ratios of the medians.
#
#   sudo bench/image-pull.sh                # 5 runs + 1 warmup each
#   sudo RUNS=7 FILES=2000 bench/image-pull.sh
# Env: RUNS (5), WARMUP (1), SETTLE (1 s), TMPFS_SIZE (4g), LAYERS (4 data layers), FILES (per data
#      layer, 1000), FILE_KB (26: 4 x 1000 x 26 kB = 104 MB of incompressible data), CONTAINERD, CTR.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
SETTLE=${SETTLE:-1}
TMPFS_SIZE=${TMPFS_SIZE:-4g}
LAYERS=${LAYERS:-4}
FILES=${FILES:-1000}
FILE_KB=${FILE_KB:-26}
CONTAINERD=${CONTAINERD:-/usr/bin/containerd}
CTR=${CTR:-/usr/bin/ctr}
CORRAL=$top/bin/corral
NODE=$top/node_modules/.bin/node
for t in skopeo docker-registry "$CONTAINERD" "$CTR" busybox; do command -v "$t" >/dev/null || { echo "image-pull: missing $t (run scripts/setup.sh)" >&2; exit 1; }; done
[ -x "$CORRAL" ] || { echo "image-pull: no bin/corral (run scripts/setup.sh)" >&2; exit 1; }

W=$(mktemp -d /tmp/corral-bench-pull.XXXXXX)
REG_PID= CTD_PID=
cleanup() {
  set +e
  [ -n "$CTD_PID" ] && kill -TERM "$CTD_PID" 2>/dev/null && for _ in $(seq 50); do kill -0 "$CTD_PID" 2>/dev/null || break; sleep 0.1; done
  [ -n "$CTD_PID" ] && kill -0 "$CTD_PID" 2>/dev/null && kill -KILL "$CTD_PID"
  [ -n "$REG_PID" ] && kill -TERM "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null
  for m in $(awk -v b="$W/" 'index($5, b)==1 {print $5}' /proc/self/mountinfo | sort -r); do umount "$m" || umount -l "$m"; done
  rm -rf "$W"
  left=$(awk -v b="$W/" 'index($5, b)==1' /proc/self/mountinfo | wc -l)
  [ "$left" = 0 ] && [ ! -e "$W" ] || { echo "image-pull: LEFT BEHIND: $left mounts or $W" >&2; exit 1; }
}
trap cleanup EXIT

# ---- registry ---------------------------------------------------------------------------
PORT=$("$NODE" -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
HOST=127.0.0.1:$PORT
cat > "$W/registry.yml" <<EOF
version: 0.1
log: { level: error, accesslog: { disabled: true } }
storage: { filesystem: { rootdirectory: $W/registry }, delete: { enabled: true } }
http: { addr: $HOST, secret: bench }
EOF
OTEL_TRACES_EXPORTER=none docker-registry serve "$W/registry.yml" 2>"$W/registry.log" &
REG_PID=$!
for _ in $(seq 100); do curl -sf "http://$HOST/v2/" >/dev/null && break; sleep 0.1; done

# ---- the image: busybox base + LAYERS data layers of FILES random files each --------------
echo "image-pull: building the image (busybox + $LAYERS x $FILES files x ${FILE_KB} kB)" >&2
L=$W/layers; mkdir -p "$L" "$W/oci/blobs/sha256"
mkdir -p "$L/0/bin" "$L/0/etc" "$L/0/tmp"
cp /bin/busybox "$L/0/bin/busybox"
for a in $(busybox --list); do [ "$a" = busybox ] || ln -s busybox "$L/0/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$L/0/etc/passwd"
for i in $(seq 1 "$LAYERS"); do
  mkdir -p "$L/$i/data/$i"
  head -c $((FILES * FILE_KB * 1024)) /dev/urandom > "$W/rand"
  (cd "$L/$i/data/$i" && split -a 4 -b "${FILE_KB}k" "$W/rand" f-)
done
rm -f "$W/rand"
diffs=() layers=()
for i in $(seq 0 "$LAYERS"); do
  tar --numeric-owner --owner=0 --group=0 -C "$L/$i" -cf "$W/l$i.tar" .
  diff=$(sha256sum < "$W/l$i.tar" | cut -d' ' -f1)
  gzip -1 -c "$W/l$i.tar" > "$W/l$i.tar.gz"; rm "$W/l$i.tar"
  dg=$(sha256sum < "$W/l$i.tar.gz" | cut -d' ' -f1)
  cp "$W/l$i.tar.gz" "$W/oci/blobs/sha256/$dg"
  diffs+=("\"sha256:$diff\"")
  layers+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$dg\",\"size\":$(stat -c %s "$W/l$i.tar.gz")}")
done
join() { local IFS=,; echo "$*"; }
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":[%s]}}' "$(join "${diffs[@]}")" > "$W/config.json"
cd_=$(sha256sum < "$W/config.json" | cut -d' ' -f1); cp "$W/config.json" "$W/oci/blobs/sha256/$cd_"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
  "$cd_" "$(stat -c %s "$W/config.json")" "$(join "${layers[@]}")" > "$W/manifest.json"
md=$(sha256sum < "$W/manifest.json" | cut -d' ' -f1); cp "$W/manifest.json" "$W/oci/blobs/sha256/$md"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"1"}}]}' "$md" "$(stat -c %s "$W/manifest.json")" > "$W/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$W/oci/oci-layout"
REF=$HOST/bench:1
skopeo copy -q --dest-tls-verify=false "oci:$W/oci:1" "docker://$REF" >&2
BYTES=$(cat "$W"/l*.tar.gz | wc -c)
NFILES=$(find "$L" -mindepth 1 | wc -l)
UNBYTES=$(du -sb "$L" | cut -f1)
rm -rf "$L"
echo "image-pull: $REF: $((LAYERS + 1)) layers, $NFILES entries, $((UNBYTES / 1000000)) MB unpacked, $((BYTES / 1000000)) MB compressed" >&2

# ---- the bench's own tmpfs: every contender's output lives here ------------------------------
T=$W/tmpfs
mkdir -p "$T"
mount -t tmpfs -o "size=$TMPFS_SIZE,mode=0755" corral-bench-tmpfs "$T"

# ---- private containerd 1.6 (no CRI plugin) -----------------------------------------------
mkdir -p "$T/ctd-root" "$W/ctd/state"
cat > "$W/ctd/config.toml" <<EOF
version = 2
root = "$T/ctd-root"
state = "$W/ctd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$W/ctd/containerd.sock"
[ttrpc]
  address = "$W/ctd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$W/ctd/opt"
EOF
"$CONTAINERD" --config "$W/ctd/config.toml" >"$W/ctd/log" 2>&1 &
CTD_PID=$!
for _ in $(seq 100); do "$CTR" -a "$W/ctd/containerd.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
CT="$CTR -a $W/ctd/containerd.sock -n bench"

# ---- the runs ------------------------------------------------------------------------------
TCK=$(getconf CLK_TCK)
daemon_cpu() { awk -v t="$TCK" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$CTD_PID/stat"; }
# layers are applied in order, as both runtimes do (0..LAYERS)
untar="for i in \$(seq 0 $LAYERS); do tar --numeric-owner -xzf $W/l\$i.tar.gz -C $T/tarout; done"
prepare() {
  case $1 in
    corral) rm -rf "$T/corral" ;;
    containerd) $CT images rm --sync "$REF" >/dev/null 2>&1 || true ;;
    tar) rm -rf "$T/tarout" && mkdir "$T/tarout" ;;
  esac
}
cmd() {
  case $1 in
    corral) echo "$CORRAL --root $T/corral --insecure-registry $HOST pull -q $REF >/dev/null" ;;
    containerd) echo "$CT images pull --plain-http $REF >/dev/null" ;;
    tar) echo "$untar" ;;
  esac
}
# one timed run: prints "wall cpu" (seconds)
timed() {
  local name=$1 d0 d1 out
  prepare "$name"; sync; sleep "$SETTLE"
  d0=$(daemon_cpu)
  /usr/bin/time -f '%e %U %S' -o "$W/time.out" bash -c "$(cmd "$name")"
  d1=$(daemon_cpu)
  read -r e u s < "$W/time.out"
  if [ "$name" = containerd ]; then
    awk -v e="$e" -v u="$u" -v s="$s" -v a="$d0" -v b="$d1" 'BEGIN { printf "%.3f %.3f\n", e, u + s + b - a }'
  else
    awk -v e="$e" -v u="$u" -v s="$s" 'BEGIN { printf "%.3f %.3f\n", e, u + s }'
  fi
}
names=(corral containerd tar)
: > "$W/results.txt"
for round in $(seq 1 $((WARMUP + RUNS))); do
  for k in 0 1 2; do
    name=${names[$(( (k + round) % 3 ))]}
    r=$(timed "$name")
    if [ "$round" -gt "$WARMUP" ]; then echo "$name $r" >> "$W/results.txt"; tag=run; else tag=warmup; fi
    echo "image-pull: $tag $round $name: wall/cpu $r s" >&2
  done
done

"$NODE" -e '
const fs = require("fs");
const rows = fs.readFileSync(process.argv[1], "utf8").trim().split("\n").map((l) => l.split(" "));
const [entries, bytes, un] = [Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4])];
const med = (a) => { const s = [...a].sort((x, y) => x - y); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const by = {};
for (const [n, w, c] of rows) (by[n] ??= { wall: [], cpu: [] }), by[n].wall.push(Number(w)), by[n].cpu.push(Number(c));
const m = Object.fromEntries(Object.entries(by).map(([n, x]) => [n, { wall: med(x.wall), cpu: med(x.cpu), min: Math.min(...x.wall), max: Math.max(...x.wall), runs: x.wall.length }]));
console.log(`image: ${entries} entries, ${(un / 1e6).toFixed(0)} MB unpacked, ${(bytes / 1e6).toFixed(0)} MB compressed; output on tmpfs, interleaved runs`);
for (const n of ["corral", "containerd", "tar"]) {
  const x = m[n];
  console.log(`${(n === "tar" ? "tar -xzf" : n).padEnd(11)} median wall ${x.wall.toFixed(2)} s (min ${x.min.toFixed(2)}, max ${x.max.toFixed(2)}, ${x.runs} runs)  median cpu ${x.cpu.toFixed(2)} s  ${(un / 1e6 / x.wall).toFixed(0)} MB/s unpacked`);
}
const r = (a, b, k) => (m[a][k] / m[b][k]).toFixed(2);
console.log(`ratio of medians corral / containerd: wall ${r("corral", "containerd", "wall")}, cpu ${r("corral", "containerd", "cpu")}`);
console.log(`ratio of medians corral / tar -xzf:   wall ${r("corral", "tar", "wall")}, cpu ${r("corral", "tar", "cpu")}  (corral includes download, verify, snapshot bookkeeping)`);
' "$W/results.txt" "$NFILES" "$BYTES" "$UNBYTES"
