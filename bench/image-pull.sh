#!/usr/bin/env bash
# image-pull.sh - pull + unpack of one multi-layer image (>= 100 MB, thousands of files) from a
# private local registry: corral (bin/corral pull) versus containerd 1.6 (ctr image pull
# --plain-http, private daemon), and unpack throughput versus plain `tar -xzf` of the same layers.
# Not a test: it times, it never asserts. Everything lives under one temp dir; the registry and
# containerd are stopped by PID, mounts under the temp dir are removed, and the dir is deleted.
#
#   sudo bench/image-pull.sh                # 3 runs + 1 warmup each
#   sudo RUNS=5 FILES=2000 bench/image-pull.sh
# Env: RUNS (3), WARMUP (1), LAYERS (4 data layers), FILES (per data layer, 1000),
#      FILE_KB (26: 4 x 1000 x 26 kB = 104 MB of incompressible data), CONTAINERD, CTR.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-1}
LAYERS=${LAYERS:-4}
FILES=${FILES:-1000}
FILE_KB=${FILE_KB:-26}
CONTAINERD=${CONTAINERD:-/usr/bin/containerd}
CTR=${CTR:-/usr/bin/ctr}
CORRAL=$top/bin/corral
NODE=$top/node_modules/.bin/node
for t in hyperfine skopeo docker-registry "$CONTAINERD" "$CTR" busybox; do command -v "$t" >/dev/null || { echo "image-pull: missing $t (run scripts/setup.sh)" >&2; exit 1; }; done
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

# ---- private containerd 1.6 (no CRI plugin) -----------------------------------------------
mkdir -p "$W/ctd/root" "$W/ctd/state"
cat > "$W/ctd/config.toml" <<EOF
version = 2
root = "$W/ctd/root"
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
mkdir -p "$W/tarout"
# layers are applied in order, as both runtimes do (0..LAYERS)
untar="for i in \$(seq 0 $LAYERS); do tar --numeric-owner -xzf $W/l\$i.tar.gz -C $W/tarout; done"
hyperfine --runs "$RUNS" --warmup "$WARMUP" --export-json "$W/results.json" --style basic \
  --command-name corral --prepare "rm -rf $W/corral" "$CORRAL --root $W/corral --insecure-registry $HOST pull -q $REF" \
  --command-name containerd --prepare "$CT images rm --sync $REF >/dev/null 2>&1 || true" "$CT images pull --plain-http $REF >/dev/null" \
  --command-name 'tar -xzf' --prepare "rm -rf $W/tarout && mkdir $W/tarout" "bash -c '$untar'" >&2

"$NODE" -e '
const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).results;
const [mb, bytes, un] = [Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4])];
const by = Object.fromEntries(r.map((x) => [x.command, x]));
const line = (n) => { const x = by[n]; return `${n.padEnd(11)} mean ${x.mean.toFixed(2)} s ± ${x.stddev?.toFixed(2) ?? "0"}  (min ${x.min.toFixed(2)}, max ${x.max.toFixed(2)})  ${(un / 1e6 / x.mean).toFixed(0)} MB/s unpacked, ${(bytes / 1e6 / x.mean).toFixed(0)} MB/s compressed`; };
console.log(`image: ${mb} entries, ${(un / 1e6).toFixed(0)} MB unpacked, ${(bytes / 1e6).toFixed(0)} MB compressed`);
for (const n of ["corral", "containerd", "tar -xzf"]) console.log(line(n));
console.log(`ratio corral / containerd (pull + unpack): ${(by.corral.mean / by.containerd.mean).toFixed(2)}`);
console.log(`ratio corral / tar -xzf (corral includes download, verify, snapshot bookkeeping): ${(by.corral.mean / by["tar -xzf"].mean).toFixed(2)}`);
' "$W/results.json" "$NFILES" "$BYTES" "$UNBYTES"
