#!/usr/bin/env bash
# scripts/critest.sh - run the CRI validation suite (critest from cri-tools v1.26.1, built elsewhere;
# this script never builds it) against a corrald it starts, fully offline:
#
#   1. a plain-HTTP registry on $REGISTRY (loopback) holding stand-ins for every image critest pulls
#      (a registry already serving them is used as is; otherwise this script starts Debian's
#      docker-registry and fills it with ../shared/tools/critest-images.sh beside the clone)
#   2. corrald with its own socket/state/root under $WORK/run, mirroring registry.k8s.io, gcr.io and
#      k8s.gcr.io to that registry, its built-in pod network on bridge $BRIDGE / $SUBNET
#   3. critest -runtime-endpoint/-image-endpoint on corrald's socket (benchmarks are not run)
#   4. teardown of everything it started, by PID: pods, corrald, leftover conmon/containers,
#      mounts, cgroups, netns, the bridge and CNI iptables chains that appeared, the registry
#
# It ends with one line:  critest: N passed, N failed, N skipped   (exit 0 only if none failed).
#
# usage: CRITEST=/path/to/critest scripts/critest.sh [extra critest/ginkgo flags...]
#   CRITEST      critest binary (default: `critest` on PATH)
#   CRICTL       crictl binary, used only to remove pods before stopping corrald (default: on PATH; optional)
#   CORRALD      the corrald to start (default <repo>/bin/corrald)
#   REGISTRY     registry host:port (default 127.0.0.1:5055)
#   SHARED       the shared tools dir beside the clone (default <repo>/../shared)
#   WORK         scratch + logs (default /var/tmp/corral-critest); logs stay in $WORK/logs
#   BRIDGE, SUBNET  built-in pod network (default crtcorral0, 10.93.0.0/16)
#   TIMEOUT      ginkgo suite timeout (default 45m); FOCUS / SKIP: -ginkgo.focus / -ginkgo.skip regexes
#   KEEP=1       keep $WORK/run (corrald state) after the run
# Host needs: root, docker-registry (to start one), ipcmk, free host ports 12000-12003.
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
CRITEST=${CRITEST:-$(command -v critest || true)}
CRICTL=${CRICTL:-$(command -v crictl || true)}
CORRALD=${CORRALD:-$top/bin/corrald}
REGISTRY=${REGISTRY:-127.0.0.1:5055}
SHARED=${SHARED:-$top/../shared}
WORK=${WORK:-/var/tmp/corral-critest}
BRIDGE=${BRIDGE:-crtcorral0}
SUBNET=${SUBNET:-10.93.0.0/16}
TIMEOUT=${TIMEOUT:-45m}
CGROUP_ROOT=/corral-critest
RUN=$WORK/run
LOGS=$WORK/logs
SOCK=$RUN/corrald.sock
log() { echo "critest.sh: $*" >&2; }
die() { log "ERROR: $*"; echo "critest: 0 passed, 0 failed, 0 skipped (not run: $*)"; exit 2; }

[ "$(id -u)" = 0 ] || die "must run as root"
[ -n "$CRITEST" ] && [ -x "$CRITEST" ] || die "no critest binary: set CRITEST=/path/to/critest (cri-tools v1.26.1)"
[ -x "$CORRALD" ] || die "no $CORRALD: run scripts/setup.sh"
command -v curl >/dev/null || die "curl missing"
case $REGISTRY in 127.0.0.1:*|localhost:*) ;; *) die "REGISTRY must be a loopback host:port, got $REGISTRY";; esac
mkdir -p "$WORK" "$LOGS"
exec 9>"$WORK/.lock"
flock -n 9 || die "another critest.sh run holds $WORK/.lock"

REGISTRY_PID=
CORRALD_PID=
BRIDGE_EXISTED=0
ip link show "$BRIDGE" >/dev/null 2>&1 && BRIDGE_EXISTED=1
IP_FORWARD=$(cat /proc/sys/net/ipv4/ip_forward)
cni_chains() { { iptables -t nat -S; iptables -t filter -S; } 2>/dev/null | awk '$1=="-N" && $2 ~ /^CNI-/ {print $2}' | sort -u; }
CHAINS_BEFORE=$(cni_chains)
shm_ids() { awk 'NR>1 {print $2}' /proc/sysvipc/shm 2>/dev/null | sort; }
SHM_BEFORE=$(shm_ids)

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
stop_pid() { # pid name
  alive "$1" || return 0
  kill -TERM "$1" 2>/dev/null
  for _ in $(seq 100); do alive "$1" || return 0; sleep 0.2; done
  log "$2 (pid $1) did not exit on SIGTERM; SIGKILL"
  kill -KILL "$1" 2>/dev/null || true
}
cri() { "$CRICTL" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" --timeout 60s "$@"; }

teardown() {
  set +e
  if alive "$CORRALD_PID"; then
    if [ -n "$CRICTL" ] && [ -x "$CRICTL" ]; then
      for p in $(cri pods -q 2>/dev/null); do cri stopp "$p" >/dev/null 2>&1; cri rmp -f "$p" >/dev/null 2>&1; done
    fi
    stop_pid "$CORRALD_PID" corrald
    log "stopped corrald (pid $CORRALD_PID)"
  fi
  # conmon processes of this run (matched by our state dir in their arguments), by PID
  local pids
  pids=$(ps -eo pid=,args= | awk -v r="$RUN/" '$2 ~ /conmon$/ && index($0, r) {print $1}')
  [ -n "$pids" ] && { log "killing leftover conmon: $pids"; kill -KILL $pids 2>/dev/null; sleep 0.5; }
  # containers left in the runtime roots of this run
  local root id
  for root in $(find "$RUN/state/runtimes" -mindepth 1 -maxdepth 2 -type d 2>/dev/null); do
    for id in $("$top/bin/corral-oci" --root "$root" list --quiet 2>/dev/null); do
      "$top/bin/corral-oci" --root "$root" delete --force "$id" >/dev/null 2>&1 && log "deleted leftover container $id"
    done
  done
  # mounts below $RUN (deepest first): overlay rootfs, pinned namespaces, shm
  local m
  for m in $(awk -v b="$RUN/" 'index($5, b)==1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done
  # cgroups under our cgroup root, every hierarchy, deepest first
  local h
  for h in /sys/fs/cgroup /sys/fs/cgroup/*; do
    [ -d "$h$CGROUP_ROOT" ] && find "$h$CGROUP_ROOT" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  # network: bridge and CNI chains that appeared during the run, ip_forward
  if [ "$BRIDGE_EXISTED" = 0 ] && ip link show "$BRIDGE" >/dev/null 2>&1; then ip link delete "$BRIDGE" && log "deleted bridge $BRIDGE"; fi
  local t c new
  new=$(comm -13 <(echo "$CHAINS_BEFORE") <(cni_chains))
  for t in nat filter; do
    for c in $new; do
      iptables -t $t -S 2>/dev/null | awk -v c="$c" '$1=="-A" && $2!=c { for (i=1;i<=NF;i++) if ($i=="-j" && $(i+1)==c) print }' |
        while read -r rule; do eval "iptables -t $t ${rule/-A/-D}" 2>/dev/null; done
    done
    for c in $new; do iptables -t $t -F "$c" 2>/dev/null; done
    for c in $new; do iptables -t $t -X "$c" 2>/dev/null; done
  done
  [ "$(cat /proc/sys/net/ipv4/ip_forward)" = "$IP_FORWARD" ] || echo "$IP_FORWARD" > /proc/sys/net/ipv4/ip_forward
  # SysV shm segments the HostIpc specs leave behind (new ids, unattached only)
  for id in $(comm -13 <(echo "$SHM_BEFORE") <(shm_ids)); do
    awk -v id="$id" 'NR>1 && $2==id && $7==0 {f=1} END{exit !f}' /proc/sysvipc/shm && ipcrm -m "$id" 2>/dev/null
  done
  if [ -n "$REGISTRY_PID" ]; then stop_pid "$REGISTRY_PID" docker-registry; log "stopped docker-registry (pid $REGISTRY_PID)"; fi
  [ "${KEEP:-0}" = 1 ] || rm -rf "$RUN"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- 1. registry with the stand-ins
has_images() {
  curl -sf -m 5 -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REGISTRY/v2/e2e-test-images/busybox/manifests/1.29-2" &&
  curl -sf -m 5 -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REGISTRY/v2/k8s-staging-cri-tools/test-image-tags/manifests/3"
}
if ! curl -sf -m 3 "http://$REGISTRY/v2/" >/dev/null; then
  command -v docker-registry >/dev/null || die "no registry at $REGISTRY and no docker-registry binary (apt-get install docker-registry)"
  mkdir -p "$WORK/registry/data"
  printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n' \
    "$WORK/registry/data" "$REGISTRY" > "$WORK/registry/config.yml"
  setsid docker-registry serve "$WORK/registry/config.yml" > "$LOGS/registry.log" 2>&1 < /dev/null &
  REGISTRY_PID=$!
  for _ in $(seq 50); do curl -sf -m 1 "http://$REGISTRY/v2/" >/dev/null && break; alive "$REGISTRY_PID" || break; sleep 0.2; done
  curl -sf -m 3 "http://$REGISTRY/v2/" >/dev/null || die "docker-registry did not come up on $REGISTRY (see $LOGS/registry.log)"
  log "started docker-registry on $REGISTRY (pid $REGISTRY_PID, data $WORK/registry/data)"
fi
if ! has_images; then
  tool=$SHARED/tools/critest-images.sh
  [ -x "$tool" ] || die "registry $REGISTRY lacks critest's images and $tool is not there to build them (set SHARED=)"
  log "building and pushing the stand-in images with $tool (log: $LOGS/images.log)"
  # WORK of the tool must be writable even when $SHARED is a read-only copy
  REGISTRY=$REGISTRY WORK=$WORK/images bash "$tool" > "$LOGS/images.log" 2>&1 || { tail -5 "$LOGS/images.log" >&2; die "critest-images.sh failed"; }
  has_images || die "images still missing from $REGISTRY after critest-images.sh"
fi

# ---------------------------------------------------------------- 2. corrald
if [ -d "$RUN" ]; then
  awk -v b="$RUN/" 'index($5, b)==1 {f=1} END{exit !f}' /proc/self/mountinfo && die "$RUN still has mounts from an earlier run; unmount them first"
  rm -rf "$RUN"
fi
mkdir -p "$RUN/cni/net.d" "$RUN/certs.d"
if ip -4 route show to match "${SUBNET%/*}" | grep -v -e '^default' -e "dev $BRIDGE" | grep -q .; then
  log "WARNING: a host route already covers $SUBNET (set SUBNET=...)"
fi
cat > "$RUN/corrald.toml" <<EOF
# generated by scripts/critest.sh
socket = "$SOCK"
state_dir = "$RUN/state"
root_dir = "$RUN/root"
log_level = "${LOG_LEVEL:-info}"

[cni]
conf_dir = "$RUN/cni/net.d"
bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]

[registry]
hosts_dir = "$RUN/certs.d"

[registry.mirrors]
"registry.k8s.io" = ["http://$REGISTRY"]
"gcr.io" = ["http://$REGISTRY"]
"k8s.gcr.io" = ["http://$REGISTRY"]

[stream]
address = "127.0.0.1"
port = 0

[metrics]
address = ""
EOF
for p in 12000 12001 12002 12003; do
  ss -ltn "sport = :$p" 2>/dev/null | grep -q LISTEN && log "WARNING: host port $p in use (port mapping specs will fail)"
done
command -v ipcmk >/dev/null || log "WARNING: ipcmk missing, HostIpc specs will fail"

setsid "$CORRALD" --config "$RUN/corrald.toml" --pod-bridge "$BRIDGE" --pod-subnet "$SUBNET" --cgroup-root "$CGROUP_ROOT" \
  > "$LOGS/corrald.log" 2>&1 < /dev/null &
CORRALD_PID=$!
for _ in $(seq 300); do
  grep -q '"corrald ready"' "$LOGS/corrald.log" 2>/dev/null && break
  alive "$CORRALD_PID" || break
  sleep 0.1
done
grep -q '"corrald ready"' "$LOGS/corrald.log" || { tail -20 "$LOGS/corrald.log" >&2; die "corrald did not start (log: $LOGS/corrald.log)"; }
log "corrald ready (pid $CORRALD_PID), endpoint unix://$SOCK, log $LOGS/corrald.log"

# ---------------------------------------------------------------- 3. critest
LOG=$LOGS/critest.log
args=(-runtime-endpoint "unix://$SOCK" -image-endpoint "unix://$SOCK"
      -ginkgo.timeout "$TIMEOUT" -ginkgo.no-color -ginkgo.v -ginkgo.json-report "$LOG.json")
[ -n "${FOCUS:-}" ] && args+=(-ginkgo.focus "$FOCUS")
[ -n "${SKIP:-}" ] && args+=(-ginkgo.skip "$SKIP")
secs=$(awk -v t="$TIMEOUT" 'BEGIN{n=t+0; u=substr(t,length(t)); if(u=="h")n*=3600; else if(u=="m")n*=60; print int(n)}')
start=$(date +%s)
{
  echo "# critest.sh: $(date -u +%FT%TZ) critest=$("$CRITEST" -version 2>/dev/null | head -1) registry=$REGISTRY"
  echo "# args: ${args[*]} $*"
  # critest reads /etc/crictl.yaml if present; the explicit endpoints take precedence
  (cd "$RUN" && timeout -k 30 $((secs + 180)) "$CRITEST" "${args[@]}" "$@" 2>&1)
  echo "# critest exit status: $?  wall: $(( $(date +%s) - start ))s"
} > "$LOG" 2>&1

# ---------------------------------------------------------------- 4. summary (teardown runs on exit)
line=$(grep -E '[0-9]+ Passed \| [0-9]+ Failed' "$LOG" | tail -1)
if [ -z "$line" ]; then
  tail -5 "$LOG" >&2
  echo "critest: 0 passed, 0 failed, 0 skipped (no ginkgo summary; see $LOG)"
  exit 1
fi
get() { grep -oE "[0-9]+ $1" <<<"$line" | grep -oE '^[0-9]+' || echo 0; }
P=$(get Passed); F=$(get Failed); S=$(get Skipped)
grep -E '^Ran [0-9]+ of [0-9]+ Specs' "$LOG" | tail -1 >&2
if [ "$F" -gt 0 ]; then
  echo "failed specs:" >&2
  sed -n '/^Summarizing [0-9]* Failure/,$p' "$LOG" | grep -E '^\s*\[(FAIL|TIMEDOUT|PANICKED|INTERRUPTED)\]' | sed 's/^/  /' >&2
fi
echo "logs: $LOG, $LOGS/corrald.log" >&2
echo "critest: $P passed, $F failed, $S skipped"
[ "$F" = 0 ]
