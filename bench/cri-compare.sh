#!/usr/bin/env bash
# bench/cri-compare.sh - corrald versus containerd 1.6 (CRI plugin + runc), both driven by the same
# crictl in the same run, pulling the same busybox + pause images from one local registry on loopback.
# A benchmark: never part of the test suite, asserts nothing on time. See bench/README.md.
#
# usage: sudo CRICTL=/path/to/crictl bench/cri-compare.sh
#   CRICTL          crictl binary (cri-tools v1.26.1; default: `crictl` on PATH)
#   RUNS=10         runs per single-pod step (median, min, max reported); one warm-up cycle before
#   NPODS=50        pods in the batch (one busybox `sleep` container each)
#   PARALLEL=4      batch workers; each runs RunPodSandbox -> CreateContainer -> StartContainer for
#                   its pods one after the other (kubelet pod workers: per-pod sequence, a few pods at once)
#   CORRALD         default <repo>/bin/corrald;  CORRAL_OCI default <repo>/bin/corral-oci
#   CONMON          default /usr/bin/conmon
#   CONTAINERD RUNC SHIM   default /usr/bin/containerd, /usr/sbin/runc, /usr/bin/containerd-shim-runc-v2
#   CORRAL_BRIDGE/CORRAL_SUBNET  default ccmp-corral0 / 10.97.0.0/16
#   CTRD_BRIDGE/CTRD_SUBNET      default ccmp-ctrd0 / 10.98.0.0/16
#   FLOOR_BRIDGE/FLOOR_SUBNET    default ccmp-floor0 / 10.96.0.0/16 (the bench's own CNI floor network)
#   WORK            scratch dir (default: mktemp -d /var/tmp/corral-cri-compare.XXXXXX); KEEP=1 keeps it
#   REGISTRY_PORT   loopback port of the private docker-registry (default: a free one from 45000)
# Besides the two daemons it measures, in the same run, the floors both share: the CNI chain executed
# directly (own netns, bridge, subnet) and a cgroup v1 attach (see bench/README.md).
# Needs root, docker-registry, umoci, skopeo, catatonit, busybox-static, conmon, containerd, runc,
# CNI plugins in /usr/lib/cni, iptables. Everything it starts is stopped by PID (corrald's corral-oci
# server, in a private CORRAL_OCI_SERVER_DIR, too); pods, mounts, netns, bridges, iptables rules/chains,
# cgroups and WORK are removed; exit 1 if anything was left behind.
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
CRICTL=${CRICTL:-$(command -v crictl || true)}
RUNS=${RUNS:-10}
NPODS=${NPODS:-50}
PARALLEL=${PARALLEL:-4}
CORRALD=${CORRALD:-$top/bin/corrald}
CORRAL_OCI=${CORRAL_OCI:-$top/bin/corral-oci}
CONMON=${CONMON:-/usr/bin/conmon}
CONTAINERD=${CONTAINERD:-/usr/bin/containerd}
RUNC=${RUNC:-/usr/sbin/runc}
SHIM=${SHIM:-/usr/bin/containerd-shim-runc-v2}
CNI_BIN=/usr/lib/cni
NODE=${NODE:-$top/node_modules/node/bin/node}   # only to split the floor's conflist, once, untimed
CORRAL_BRIDGE=${CORRAL_BRIDGE:-ccmp-corral0}
CORRAL_SUBNET=${CORRAL_SUBNET:-10.97.0.0/16}
CTRD_BRIDGE=${CTRD_BRIDGE:-ccmp-ctrd0}
CTRD_SUBNET=${CTRD_SUBNET:-10.98.0.0/16}
FLOOR_BRIDGE=${FLOOR_BRIDGE:-ccmp-floor0}
FLOOR_SUBNET=${FLOOR_SUBNET:-10.96.0.0/16}
# network names carry the pid, so that rules/chains (their comments name the network) of another run
# are never taken for ours
CORRAL_NET=ccmp$$-corral
CTRD_NET=ccmp$$-ctrd
FLOOR_NET=ccmp$$-floor
FLOOR_NETNS=cri-compare-$$-floor
CG_CORRAL=/corral-cri-compare-$$-corrald
CG_CTRD=/corral-cri-compare-$$-containerd
CG_FLOOR=/corral-cri-compare-$$-floor
NS=cri-compare-$$

log() { echo "cri-compare: $*" >&2; }
die() { log "ERROR: $*"; exit 2; }

[ "$(id -u)" = 0 ] || die "must run as root"
[ -n "$CRICTL" ] && [ -x "$CRICTL" ] || die "no crictl: set CRICTL=/path/to/crictl (cri-tools v1.26.1)"
for b in "$CORRALD" "$CORRAL_OCI" "$CONMON" "$CONTAINERD" "$RUNC" "$SHIM" "$CNI_BIN/bridge" "$CNI_BIN/host-local" \
         "$CNI_BIN/portmap" "$CNI_BIN/firewall" "$CNI_BIN/loopback" "$NODE"; do
  [ -x "$b" ] || die "missing $b (run scripts/setup.sh / apt-get install containerd runc conmon containernetworking-plugins)"
done
for t in docker-registry umoci skopeo catatonit curl iptables ss; do command -v $t >/dev/null || die "missing tool: $t"; done
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || die "need a static /bin/busybox (busybox-static)"
[ "$NPODS" -ge 1 ] && [ "$RUNS" -ge 1 ] && [ "$PARALLEL" -ge 1 ] || die "RUNS, NPODS and PARALLEL must be >= 1"
BRIDGES=("$CORRAL_BRIDGE" "$CTRD_BRIDGE" "$FLOOR_BRIDGE")
SUBNETS=("$CORRAL_SUBNET" "$CTRD_SUBNET" "$FLOOR_SUBNET")
[ "$(printf '%s\n' "${BRIDGES[@]}" | sort -u | wc -l)" = 3 ] || die "CORRAL_BRIDGE, CTRD_BRIDGE and FLOOR_BRIDGE must differ"
[ "$(printf '%s\n' "${SUBNETS[@]}" | sort -u | wc -l)" = 3 ] || die "CORRAL_SUBNET, CTRD_SUBNET and FLOOR_SUBNET must differ"
for s in "${SUBNETS[@]}"; do
  ip -4 route show to match "${s%/*}" | grep -v -e '^default' -e "dev $CORRAL_BRIDGE" -e "dev $CTRD_BRIDGE" -e "dev $FLOOR_BRIDGE" | grep -q . &&
    die "a host route already covers $s (set CORRAL_SUBNET= / CTRD_SUBNET= / FLOOR_SUBNET=)"
done
for b in "${BRIDGES[@]}"; do ip link show "$b" >/dev/null 2>&1 && die "bridge $b already exists (another run? set CORRAL_BRIDGE= / CTRD_BRIDGE= / FLOOR_BRIDGE=)"; done
ip netns list 2>/dev/null | awk '{print $1}' | grep -qxF "$FLOOR_NETNS" && die "netns $FLOOR_NETNS already exists"
for h in /sys/fs/cgroup/pids /sys/fs/cgroup/cpu; do [ -f "$h/cgroup.procs" ] || die "no cgroup v1 hierarchy at $h (the cgroup attach floor needs pids and cpu)"; done

if [ -n "${WORK:-}" ]; then mkdir -p "$WORK"; [ -z "$(ls -A "$WORK")" ] || die "WORK=$WORK is not empty"
else WORK=$(mktemp -d /var/tmp/corral-cri-compare.XXXXXX); fi
WORK=$(cd "$WORK" && pwd)
LOGS=$WORK/logs
RES=$WORK/results
mkdir -p "$LOGS" "$RES"
# corrald's run gets a corral-oci server dir of its own (bin/corral-oci: mode 0700, owned by us), so the
# one server process that serves exactly this corrald can be found (its argv names the socket), measured
# and stopped; nothing shares it with other corral-oci users on the host
SRVDIR=$WORK/oci-server
mkdir -m 0700 "$SRVDIR"
[ $(( ${#SRVDIR} + 24 )) -lt 108 ] || die "WORK path too long for the corral-oci server socket ($SRVDIR/<id>.sock)"

# ---------------------------------------------------------------- host state before the run
IP_FORWARD=$(cat /proc/sys/net/ipv4/ip_forward)
all_chains() { for t in nat filter; do iptables -t $t -S 2>/dev/null | awk -v t=$t '$1=="-N" {print t "/" $2}'; done | sort -u; }
CHAINS_BEFORE=$(all_chains)
NETNS_BEFORE=$(ls /var/run/netns 2>/dev/null | sort)
RUN_CTRD_EXISTED=0; [ -e /run/containerd ] && RUN_CTRD_EXISTED=1
NETNS_DIR_EXISTED=0; [ -e /var/run/netns ] && NETNS_DIR_EXISTED=1
# cgroups named corral-oci-server-<id>-<pid> (one per server, under each hierarchy root) that exist already
# belong to servers of other users (same build, default dir): never ours to remove
server_cgroups() { find /sys/fs/cgroup /sys/fs/cgroup/* -mindepth 1 -maxdepth 1 -type d -name 'corral-oci-server-*' 2>/dev/null | sort -u; }
SRVCG_BEFORE=$(server_cgroups)
FLOOR_NETNS_MADE=0

REGISTRY_PID= CORRALD_PID= CTRD_PID= CPID= FLOOR_SLEEP_PID=
CSOCK=$WORK/corrald/corrald.sock
DSOCK=$WORK/ctrd/containerd.sock
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
stop_pid() { # pid name
  alive "$1" || return 0
  kill -TERM "$1" 2>/dev/null
  for _ in $(seq 100); do alive "$1" || return 0; sleep 0.1; done
  log "$2 (pid $1) did not exit on SIGTERM; SIGKILL"
  kill -KILL "$1" 2>/dev/null
  for _ in $(seq 50); do alive "$1" || return 0; sleep 0.1; done
}
cri_c() { "$CRICTL" --runtime-endpoint "unix://$CSOCK" --image-endpoint "unix://$CSOCK" --timeout 120s "$@"; }
cri_d() { "$CRICTL" --runtime-endpoint "unix://$DSOCK" --image-endpoint "unix://$DSOCK" --timeout 120s "$@"; }
# processes of this run, by their arguments (our WORK dir / our socket), never by name alone
conmon_pids() { ps -eo pid=,args= | awk -v r="$WORK/" '$2 ~ /conmon$/ && index($0, r) {print $1}'; }
shim_pids() { ps -eo pid=,args= | awk -v a="$DSOCK" '$2 ~ /containerd-shim/ && index($0 " ", "-address " a " ") {print $1}'; }
our_procs() { ps -eo pid=,args= | awk -v r="$WORK/" -v me=$$ '$1 != me && index($0, r) && $0 !~ /awk -v r=/ {print}'; }
# the corral-oci server(s) of this run's corrald: node .../corral-oci.cjs --server $SRVDIR/<id>.sock (the
# pattern goes through the environment, so this awk does not match itself)
oci_server_pids() { ps -eo pid=,args= | PAT="corral-oci.cjs --server $SRVDIR/" awk 'index($0, ENVIRON["PAT"]) {print $1}'; }
# ids of those servers: from the socket/pid files in the private dir and from the live processes' argv
oci_server_ids() {
  { ls "$SRVDIR" 2>/dev/null | sed -n 's/\.\(sock\|pid\|lock\|log\)$//p'
    ps -eo args= | PAT="corral-oci.cjs --server $SRVDIR/" awk 'i = index($0, ENVIRON["PAT"]) { s = substr($0, i + length(ENVIRON["PAT"])); sub(/\.sock.*/, "", s); print s }'
  } | grep -E '^[A-Za-z0-9._-]+$' | sort -u
}
# iptables rules of this run: anything naming our subnets or our network names
our_rule_filter() {
  grep -F -e " ${CORRAL_SUBNET%.0.0/*}." -e "$CORRAL_NET" -e " ${CTRD_SUBNET%.0.0/*}." -e "$CTRD_NET" \
          -e " ${FLOOR_SUBNET%.0.0/*}." -e "$FLOOR_NET"
}
our_rules() {
  local t
  for t in nat filter; do
    iptables -t $t -S 2>/dev/null | our_rule_filter | sed "s|^|$t |"
  done
}

teardown() {
  local st=$?
  set +e
  trap - EXIT INT TERM
  local p
  if alive "$CORRALD_PID"; then
    for p in $(cri_c pods -q 2>/dev/null); do cri_c stopp "$p" >/dev/null 2>&1; cri_c rmp -f "$p" >/dev/null 2>&1; done
    stop_pid "$CORRALD_PID" corrald
  fi
  if alive "$CTRD_PID"; then
    for p in $(cri_d pods -q 2>/dev/null); do cri_d stopp "$p" >/dev/null 2>&1; cri_d rmp -f "$p" >/dev/null 2>&1; done
    stop_pid "$CTRD_PID" containerd
  fi
  local pids
  pids=$( { conmon_pids; shim_pids; } | tr '\n' ' ')
  if [ -n "${pids// }" ]; then log "killing leftover monitors: $pids"; kill -KILL $pids 2>/dev/null; sleep 0.5; fi
  # containers left in the runtime roots of this run
  local root id
  for root in $(find "$WORK/corrald/state/runtimes" -mindepth 1 -maxdepth 2 -type d 2>/dev/null); do
    # (each in a Node of its own: these must not start a server)
    for id in $(CORRAL_OCI_NO_SERVER=1 CORRAL_OCI_SERVER_DIR=$SRVDIR "$CORRAL_OCI" --root "$root" list --quiet 2>/dev/null); do
      CORRAL_OCI_NO_SERVER=1 CORRAL_OCI_SERVER_DIR=$SRVDIR "$CORRAL_OCI" --root "$root" delete --force "$id" >/dev/null 2>&1 &&
        log "deleted leftover corral-oci container $id"
    done
  done
  # corrald's corral-oci server(s), by PID (SIGTERM: the server leaves and removes its cgroup itself)
  local srv_ids; srv_ids=$(oci_server_ids)
  for p in $(oci_server_pids); do stop_pid "$p" "corral-oci server"; done
  for id in $srv_ids; do
    for cg in $(find /sys/fs/cgroup /sys/fs/cgroup/* -mindepth 1 -maxdepth 1 -type d -name "corral-oci-server-$id*" 2>/dev/null | sort -u); do
      grep -qxF "$cg" <<< "$SRVCG_BEFORE" && continue
      if [ -n "$(cat "$cg/cgroup.procs" 2>/dev/null)" ]; then log "note: $cg is in use by pid(s) $(tr '\n' ' ' < "$cg/cgroup.procs")(not this run's server; left alone)"
      else rmdir "$cg" 2>/dev/null && log "server left its cgroup $cg behind; removed it"; fi
    done
  done
  if [ -d "$WORK/ctrd/runc" ]; then
    for root in "$WORK"/ctrd/runc "$WORK"/ctrd/runc/*; do
      [ -d "$root" ] || continue
      for id in $("$RUNC" --root "$root" list -q 2>/dev/null); do
        "$RUNC" --root "$root" delete --force "$id" >/dev/null 2>&1 && log "deleted leftover runc container $id"
      done
    done
  fi
  stop_pid "$REGISTRY_PID" docker-registry
  # the floor measurements: a sleep in flight, the netns (any veth in it goes with it)
  if alive "$FLOOR_SLEEP_PID"; then kill -KILL "$FLOOR_SLEEP_PID" 2>/dev/null; wait "$FLOOR_SLEEP_PID" 2>/dev/null; fi
  if [ "$FLOOR_NETNS_MADE" = 1 ] && [ -e "/var/run/netns/$FLOOR_NETNS" ]; then
    ip netns delete "$FLOOR_NETNS" 2>/dev/null || log "could not delete netns $FLOOR_NETNS"
  fi
  pids=$(our_procs | awk '{print $1}' | tr '\n' ' ')
  if [ -n "${pids// }" ]; then log "killing leftover processes of this run: $pids"; kill -KILL $pids 2>/dev/null; sleep 0.5; fi
  # network namespaces containerd made for our pods (recorded from inspectp), then any other new cni-* one
  # that no process uses any more and that appeared during the run... only ours are recorded, so use those
  local ns
  for ns in $(sort -u "$RES/netns" 2>/dev/null); do
    [ -e "$ns" ] || continue
    umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null; rm -f "$ns" && log "removed netns $ns"
  done
  # mounts below WORK (deepest first)
  local m
  for m in $(awk -v b="$WORK/" 'index($5, b)==1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done
  # cgroups of our pods, every hierarchy, deepest first
  local h cg
  for cg in "$CG_CORRAL" "$CG_CTRD" "$CG_FLOOR"; do
    for h in /sys/fs/cgroup /sys/fs/cgroup/*; do
      [ -d "$h$cg" ] && find "$h$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
  done
  # iptables: per-pod chains of our networks (their rules carry the network name in a comment; found
  # before anything is flushed), with the jumps into them; then any other rule naming our subnets or
  # networks (firewall's CNI-FORWARD entries); then shared CNI chains that did not exist before and
  # now hold nothing per-pod. Chains of other users are never touched.
  local t rule c mine
  mine=$(for t in nat filter; do iptables -t $t -S 2>/dev/null | awk '$1=="-A"' | grep -F -e "$CORRAL_NET" -e "$CTRD_NET" -e "$FLOOR_NET" |
    awk -v t=$t '$2 ~ /^CNI-/ && $2 !~ /^CNI-(FORWARD|ADMIN|HOSTPORT-)/ {print t "/" $2}'; done | sort -u)
  for c in $mine; do
    t=${c%%/*}; c=${c#*/}
    iptables -t $t -S 2>/dev/null | awk -v c="$c" '$1=="-A" && $2!=c { for (i=1;i<=NF;i++) if ($i=="-j" && $(i+1)==c) print }' |
      while read -r rule; do eval "iptables -t $t ${rule/-A/-D}" 2>/dev/null; done
    iptables -t $t -F "$c" 2>/dev/null; iptables -t $t -X "$c" 2>/dev/null && log "deleted leftover chain $t/$c"
  done
  for t in nat filter; do
    iptables -t $t -S 2>/dev/null | our_rule_filter |
      awk '$1=="-A"' | while read -r rule; do eval "iptables -t $t ${rule/-A/-D}" 2>/dev/null && log "deleted leftover rule $t $rule"; done
  done
  local new
  new=$(comm -13 <(echo "$CHAINS_BEFORE") <(all_chains))
  for c in $new; do   # shared chains we caused to exist, if nothing per-pod is left in them
    t=${c%%/*}; c=${c#*/}
    case $c in CNI-FORWARD|CNI-HOSTPORT-*) ;; *) continue;; esac
    iptables -t $t -S "$c" 2>/dev/null | awk '$1=="-A"' | grep -qE -- '(-s|-d) [0-9]|-j CNI-(DN|[0-9a-f])' && continue
    iptables -t $t -S 2>/dev/null | awk -v c="$c" '$1=="-A" && $2!=c { for (i=1;i<=NF;i++) if ($i=="-j" && $(i+1)==c) print }' |
      while read -r rule; do eval "iptables -t $t ${rule/-A/-D}" 2>/dev/null; done
    iptables -t $t -F "$c" 2>/dev/null; iptables -t $t -X "$c" 2>/dev/null && log "deleted chain $t/$c (created during this run)"
  done
  for c in $new; do t=${c%%/*}; c=${c#*/}; [ "$c" = CNI-ADMIN ] || continue
    iptables -t $t -S 2>/dev/null | grep -q -- '-j CNI-ADMIN' || { iptables -t $t -F "$c" 2>/dev/null; iptables -t $t -X "$c" 2>/dev/null; }
  done
  local b
  for b in "${BRIDGES[@]}"; do ip link show "$b" >/dev/null 2>&1 && ip link delete "$b" && log "deleted bridge $b"; done
  [ "$(cat /proc/sys/net/ipv4/ip_forward)" = "$IP_FORWARD" ] || echo "$IP_FORWARD" > /proc/sys/net/ipv4/ip_forward
  # shared dirs containerd / ip netns create, if they did not exist before and are empty now
  if [ "$NETNS_DIR_EXISTED" = 0 ] && [ -d /var/run/netns ] && [ -z "$(ls -A /var/run/netns)" ]; then
    mountpoint -q /var/run/netns && umount /var/run/netns 2>/dev/null; rmdir /var/run/netns 2>/dev/null
  fi
  [ "$RUN_CTRD_EXISTED" = 0 ] && [ -d /run/containerd ] && find /run/containerd -depth -type d -empty -delete 2>/dev/null
  stop_pid "$REGISTRY_PID" docker-registry

  # ------------------------------------------------ leak check
  local leaks=0 x
  x=$(our_procs); [ -n "$x" ] && { log "LEAK: processes: $x"; leaks=1; }
  for p in "$CORRALD_PID" "$CTRD_PID" "$REGISTRY_PID"; do alive "$p" && { log "LEAK: pid $p still running"; leaks=1; }; done
  x=$( { conmon_pids; shim_pids; } ); [ -n "$x" ] && { log "LEAK: monitors still running: $x"; leaks=1; }
  x=$(awk -v b="$WORK/" 'index($5, b)==1 {print $5}' /proc/self/mountinfo); [ -n "$x" ] && { log "LEAK: mounts: $x"; leaks=1; }
  for ns in $(sort -u "$RES/netns" 2>/dev/null); do [ -e "$ns" ] && { log "LEAK: netns $ns"; leaks=1; }; done
  for cg in "$CG_CORRAL" "$CG_CTRD" "$CG_FLOOR"; do for h in /sys/fs/cgroup /sys/fs/cgroup/*; do [ -d "$h$cg" ] && { log "LEAK: cgroup $h$cg"; leaks=1; }; done; done
  x=$(oci_server_pids); [ -n "$x" ] && { log "LEAK: corral-oci server still running: $x"; leaks=1; }
  for id in $srv_ids; do
    for cg in $(find /sys/fs/cgroup /sys/fs/cgroup/* -mindepth 1 -maxdepth 1 -type d -name "corral-oci-server-$id*" 2>/dev/null | sort -u); do
      grep -qxF "$cg" <<< "$SRVCG_BEFORE" || [ -n "$(cat "$cg/cgroup.procs" 2>/dev/null)" ] || { log "LEAK: cgroup $cg"; leaks=1; }
    done
  done
  ip netns list 2>/dev/null | awk '{print $1}' | grep -qxF "$FLOOR_NETNS" && { log "LEAK: netns $FLOOR_NETNS"; leaks=1; }
  alive "$FLOOR_SLEEP_PID" && { log "LEAK: floor sleep pid $FLOOR_SLEEP_PID"; leaks=1; }
  x=$(our_rules); [ -n "$x" ] && { log "LEAK: iptables rules: $x"; leaks=1; }
  for b in "${BRIDGES[@]}"; do ip link show "$b" >/dev/null 2>&1 && { log "LEAK: bridge $b"; leaks=1; }; done
  if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"
  else
    [ -n "$(awk -v b="$WORK/" 'index($5, b)==1' /proc/self/mountinfo)" ] || rm -rf "$WORK"
    [ -e "$WORK" ] && { log "LEAK: $WORK not removed"; leaks=1; }
  fi
  [ "$leaks" = 0 ] && log "teardown complete, nothing left behind" || { log "teardown left things behind (see LEAK lines)"; exit 1; }
  exit "${EXIT_STATUS:-$st}"
}
trap teardown EXIT
trap 'EXIT_STATUS=130; exit 130' INT TERM

# ---------------------------------------------------------------- 1. registry + stand-in images
port=${REGISTRY_PORT:-}
if [ -z "$port" ]; then
  for p in $(seq 45000 45100); do ss -ltn "sport = :$p" 2>/dev/null | grep -q LISTEN || { port=$p; break; }; done
fi
REGISTRY=127.0.0.1:$port
mkdir -p "$WORK/registry/data"
printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
  "$WORK/registry/data" "$REGISTRY" > "$WORK/registry/config.yml"
setsid docker-registry serve "$WORK/registry/config.yml" > "$LOGS/registry.log" 2>&1 < /dev/null &
REGISTRY_PID=$!
for _ in $(seq 50); do curl -sf -m 1 "http://$REGISTRY/v2/" >/dev/null && break; alive "$REGISTRY_PID" || break; sleep 0.2; done
curl -sf -m 2 "http://$REGISTRY/v2/" >/dev/null || die "docker-registry did not come up on $REGISTRY (see $LOGS/registry.log)"
log "registry $REGISTRY (pid $REGISTRY_PID)"

BUSYBOX_IMAGE=$REGISTRY/cri-compare/busybox:1
PAUSE_IMAGE=$REGISTRY/cri-compare/pause:1
build_images() {  # busybox: static /bin/busybox + every applet hard-linked in /bin; pause: static catatonit -P
  local L=$WORK/images/oci R=$WORK/images/bb P=$WORK/images/pause a
  mkdir -p "$R"/{bin,etc,proc,dev,sys,tmp,root} "$P"
  chmod 1777 "$R/tmp"
  cp /bin/busybox "$R/bin/busybox"
  for a in $(/bin/busybox --list); do [ -e "$R/bin/$a" ] || ln "$R/bin/busybox" "$R/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$R/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$R/etc/group"
  cp "$(command -v catatonit)" "$P/pause"; chmod 755 "$P/pause"
  umoci init --layout "$L" && umoci new --image "$L:empty" || return 1
  tar -C "$R" --numeric-owner --owner=0 --group=0 -cf "$WORK/images/bb.tar" . &&
    umoci raw add-layer --image "$L:empty" --tag busybox "$WORK/images/bb.tar" &&
    umoci config --image "$L:busybox" --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin --config.cmd sh || return 1
  tar -C "$P" --numeric-owner --owner=0 --group=0 -cf "$WORK/images/pause.tar" . &&
    umoci raw add-layer --image "$L:empty" --tag pause "$WORK/images/pause.tar" &&
    umoci config --image "$L:pause" --config.entrypoint /pause --config.entrypoint -P --config.user 65535:65535 || return 1
  skopeo copy -q --format v2s2 --dest-tls-verify=false "oci:$L:busybox" "docker://$BUSYBOX_IMAGE" &&
    skopeo copy -q --format v2s2 --dest-tls-verify=false "oci:$L:pause" "docker://$PAUSE_IMAGE"
}
build_images > "$LOGS/images.log" 2>&1 || { tail -5 "$LOGS/images.log" >&2; die "building/pushing the images failed"; }
rm -rf "$WORK/images"
log "images $BUSYBOX_IMAGE, $PAUSE_IMAGE"

# ---------------------------------------------------------------- 2. the two daemons
# The same CNI chain for both (what corrald's built-in network is): bridge (gateway, masquerade,
# hairpin) + host-local + portmap + firewall; loopback is added by each daemon itself.
conflist() { # name bridge subnet ipamdir
  cat <<EOF
{"cniVersion": "1.0.0", "name": "$1", "plugins": [
  {"type": "bridge", "bridge": "$2", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$3"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$4"}},
  {"type": "portmap", "snat": true, "capabilities": {"portMappings": true}},
  {"type": "firewall"}
]}
EOF
}
C=$WORK/corrald
mkdir -p "$C/net.d" "$C/certs.d" "$C/ipam"
conflist "$CORRAL_NET" "$CORRAL_BRIDGE" "$CORRAL_SUBNET" "$C/ipam" > "$C/net.d/10-$CORRAL_NET.conflist"
cat > "$C/corrald.toml" <<EOF
# generated by bench/cri-compare.sh
socket = "$CSOCK"
state_dir = "$C/state"
root_dir = "$C/root"
log_level = "${CORRALD_LOG_LEVEL:-info}"
cgroup_parent = "$CG_CORRAL"
conmon_path = "$CONMON"
default_runtime_handler = "corral-oci"

[runtime_handlers.corral-oci]
path = "$CORRAL_OCI"
type = "oci"

[cni]
conf_dir = "$C/net.d"
bin_dirs = ["$CNI_BIN"]
default_network = false

[registry]
insecure = ["$REGISTRY"]
hosts_dir = "$C/certs.d"

[stream]
address = "127.0.0.1"
port = 0

[metrics]
address = ""
EOF
D=$WORK/ctrd
mkdir -p "$D"/{root,state,runc,opt,net.d,ipam,certs.d/$REGISTRY}
conflist "$CTRD_NET" "$CTRD_BRIDGE" "$CTRD_SUBNET" "$D/ipam" > "$D/net.d/10-$CTRD_NET.conflist"
printf 'server = "http://%s"\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$REGISTRY" "$REGISTRY" > "$D/certs.d/$REGISTRY/hosts.toml"
cat > "$D/config.toml" <<EOF
# generated by bench/cri-compare.sh
version = 2
root = "$D/root"
state = "$D/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$DSOCK"
[ttrpc]
  address = "$DSOCK.ttrpc"
[debug]
  level = "warn"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$D/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$PAUSE_IMAGE"
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    # root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj for sandboxes
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = "$RUNC"
          Root = "$D/runc"
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "$CNI_BIN"
      conf_dir = "$D/net.d"
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "$D/certs.d"
EOF

# corrald passes CORRAL_* on to conmon and the handler: every bin/corral-oci of this corrald uses $SRVDIR
CORRAL_OCI_SERVER_DIR=$SRVDIR setsid "$CORRALD" --config "$C/corrald.toml" > "$LOGS/corrald.log" 2>&1 < /dev/null &
CORRALD_PID=$!
# containerd finds containerd-shim-runc-v2 on PATH: put the chosen one first
mkdir -p "$D/bin"; ln -sf "$SHIM" "$D/bin/containerd-shim-runc-v2"
PATH="$D/bin:$PATH" setsid "$CONTAINERD" --config "$D/config.toml" > "$LOGS/containerd.log" 2>&1 < /dev/null &
CTRD_PID=$!
for _ in $(seq 300); do
  cready=0; dready=0
  grep -q '"corrald ready"' "$LOGS/corrald.log" 2>/dev/null && cready=1
  [ -S "$DSOCK" ] && cri_d version >/dev/null 2>&1 && dready=1
  [ $cready = 1 ] && [ $dready = 1 ] && break
  alive "$CORRALD_PID" && alive "$CTRD_PID" || break
  sleep 0.1
done
[ "$cready" = 1 ] || { tail -20 "$LOGS/corrald.log" >&2; die "corrald did not start (log: $LOGS/corrald.log)"; }
[ "$dready" = 1 ] || { tail -20 "$LOGS/containerd.log" >&2; die "containerd did not start (log: $LOGS/containerd.log)"; }
# the daemon process = the one listening on the socket (bin/corrald execs node, so it is CORRALD_PID)
listener() { ss -xlpn 2>/dev/null | grep -F " $1 " | grep -oE 'pid=[0-9]+' | head -1 | cut -d= -f2; }
CPID=$(listener "$CSOCK"); CPID=${CPID:-$CORRALD_PID}
DPID=$(listener "$DSOCK"); DPID=${DPID:-$CTRD_PID}
log "corrald pid $CPID ($(cat /proc/$CPID/comm)), containerd pid $DPID; logs in $LOGS"

# ---------------------------------------------------------------- 2b. the shared floors' own setup
# A third network with the same chain (the conflist above), its own bridge, subnet and IPAM dir, and a
# netns of the bench's own; its plugins are executed directly, as a runtime (libcni) does.
F=$WORK/floor
mkdir -p "$F/ipam"
conflist "$FLOOR_NET" "$FLOOR_BRIDGE" "$FLOOR_SUBNET" "$F/ipam" > "$F/floor.conflist"
ip netns add "$FLOOR_NETNS" || die "ip netns add $FLOOR_NETNS failed"
FLOOR_NETNS_MADE=1
FLOOR_NSPATH=/var/run/netns/$FLOOR_NETNS
# each plugin's config as libcni builds it: the plugin object plus the list's name and cniVersion (the
# prevResult is appended per call); loopback as both daemons add it: a config of its own, ifname lo
FLOOR_LO='{"cniVersion":"1.0.0","name":"cni-loopback","type":"loopback"}'
FLOOR_TYPES=() FLOOR_CONFS=()
while IFS=$'\t' read -r t c; do FLOOR_TYPES+=("$t"); FLOOR_CONFS+=("$c"); done < <("$NODE" -e '
  const l = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  for (const p of l.plugins) console.log(p.type + "\t" + JSON.stringify({ ...p, name: l.name, cniVersion: l.cniVersion }));' "$F/floor.conflist")
[ "${#FLOOR_TYPES[@]}" -ge 1 ] && [ "${#FLOOR_TYPES[@]}" = "${#FLOOR_CONFS[@]}" ] || die "could not split $F/floor.conflist"
log "floor: netns $FLOOR_NETNS, network $FLOOR_NET ($FLOOR_BRIDGE $FLOOR_SUBNET): loopback + ${FLOOR_TYPES[*]}"

# ---------------------------------------------------------------- 3. measurements
# clock: bash's $EPOCHREALTIME (microseconds, no fork), so a timed interval holds only what it times
tick() { printf -v "$1" '%s' "${EPOCHREALTIME/[.,]/}"; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", (b - a) / 1e3}'; }
ms2() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", (b - a) / 1e3}'; }
ERRS=$RES/errors
: > "$ERRS"
note_err() { # runtime step errfile
  local msg; msg=$(grep -v '^\s*$' "$3" | tail -3 | tr '\n' ' ' | cut -c1-600)
  grep -qF "$1 $2:" "$ERRS" || echo "$1 $2: ${msg:-exit status non-zero, no message}" >> "$ERRS"
  log "$1 $2 FAILED: ${msg}"
}
cri() { local r=$1; shift; if [ "$r" = corrald ]; then cri_c "$@"; else cri_d "$@"; fi; }
podcfg() { # runtime name -> path
  local r=$1 n=$2 cg f=$WORK/cfg/$1-$2.json
  [ "$r" = corrald ] && cg=$CG_CORRAL || cg=$CG_CTRD
  mkdir -p "$WORK/cfg" "$WORK/podlogs/$r-$n"
  printf '{"metadata":{"name":"%s","namespace":"%s","uid":"%s-%s-%s","attempt":0},"log_directory":"%s","linux":{"cgroup_parent":"%s"}}\n' \
    "$n" "$NS" "$r" "$n" "$$" "$WORK/podlogs/$r-$n" "$cg" > "$f"
  echo "$f"
}
CTR=$WORK/cfg/ctr.json
mkdir -p "$WORK/cfg"
printf '{"metadata":{"name":"sleep"},"image":{"image":"%s"},"command":["sleep","3600"],"log_path":"sleep.log","linux":{}}\n' "$BUSYBOX_IMAGE" > "$CTR"
record_netns() { # containerd pods: remember their netns so teardown can check/remove exactly those
  [ "$1" = containerd ] || return 0
  cri_d inspectp -o go-template --template '{{range .info.runtimeSpec.linux.namespaces}}{{if eq .type "network"}}{{.path}}{{"\n"}}{{end}}{{end}}' "$2" 2>/dev/null |
    grep . >> "$RES/netns"
}

# one cycle: runp, create+start, stopp+rmp; appends "ms" lines to $RES/<runtime>.<step>; returns 1 on failure
cycle() { # runtime tag
  local r=$1 tag=$2 cfg p c a b d e f g err=$WORK/err.$1
  cfg=$(podcfg "$r" "$tag")
  tick a; p=$(cri "$r" runp "$cfg" 2>"$err"); local rc=$?; tick b
  if [ $rc != 0 ] || [ -z "$p" ]; then note_err "$r" RunPodSandbox "$err"; return 1; fi
  record_netns "$r" "$p"
  c=$(cri "$r" create "$p" "$CTR" "$cfg" 2>"$err"); rc=$?; tick d
  if [ $rc != 0 ] || [ -z "$c" ]; then note_err "$r" CreateContainer "$err"; cri "$r" stopp "$p" >/dev/null 2>&1; cri "$r" rmp -f "$p" >/dev/null 2>&1; return 1; fi
  cri "$r" start "$c" >/dev/null 2>"$err"; rc=$?; tick e
  if [ $rc != 0 ]; then note_err "$r" StartContainer "$err"; cri "$r" stopp "$p" >/dev/null 2>&1; cri "$r" rmp -f "$p" >/dev/null 2>&1; return 1; fi
  local st; st=$(cri "$r" inspect -o go-template --template '{{.status.state}}' "$c" 2>/dev/null)
  [ "$st" = CONTAINER_RUNNING ] || log "WARNING: $r container $c is $st after start"
  tick f; cri "$r" stopp "$p" >/dev/null 2>"$err"; rc=$?
  if [ $rc != 0 ]; then note_err "$r" StopPodSandbox "$err"; cri "$r" rmp -f "$p" >/dev/null 2>&1; return 1; fi
  cri "$r" rmp "$p" >/dev/null 2>"$err"; rc=$?; tick g
  if [ $rc != 0 ]; then note_err "$r" RemovePodSandbox "$err"; cri "$r" rmp -f "$p" >/dev/null 2>&1; return 1; fi
  [ "$tag" = warm ] && return 0
  ms "$a" "$b" >> "$RES/$r.runp"; echo >> "$RES/$r.runp"
  ms "$b" "$d" >> "$RES/$r.create"; echo >> "$RES/$r.create"
  ms "$d" "$e" >> "$RES/$r.start"; echo >> "$RES/$r.start"
  ms "$b" "$e" >> "$RES/$r.cs"; echo >> "$RES/$r.cs"
  ms "$f" "$g" >> "$RES/$r.teardown"; echo >> "$RES/$r.teardown"
}

# shared floor 1, CNI: one pod's ADD (loopback on lo alongside the chain on eth0, as corrald and
# containerd's go-cni Setup do; the chain's plugins in order, each getting the previous result as
# prevResult), then its DEL (the chain in reverse, each with the ADD's final result as prevResult,
# loopback alongside). Appends ms to $RES/floor.cni_add / floor.cni_del; 1 on failure.
floor_cni_cycle() { # tag
  local id=ccmp-$$-$1 i n=${#FLOOR_CONFS[@]} prev= conf lo_res lo_pid rc=0 a b c d t0 t1 err=$WORK/err.floor
  local -a tadd=() tdel=()   # per plugin of the chain, microseconds
  local -x CNI_CONTAINERID=$id CNI_NETNS=$FLOOR_NSPATH CNI_IFNAME=eth0 CNI_PATH=$CNI_BIN \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=$NS;K8S_POD_NAME=floor-$1;K8S_POD_INFRA_CONTAINER_ID=$id" CNI_COMMAND=ADD
  : > "$err"
  tick a
  CNI_IFNAME=lo "$CNI_BIN/loopback" <<< "$FLOOR_LO" > "$WORK/floor.lo" 2>>"$err" & lo_pid=$!
  for ((i = 0; i < n; i++)); do
    conf=${FLOOR_CONFS[i]}
    [ -n "$prev" ] && conf="${conf%\}},\"prevResult\":$prev}"
    tick t0
    prev=$("$CNI_BIN/${FLOOR_TYPES[i]}" <<< "$conf" 2>>"$err") || { echo "${FLOOR_TYPES[i]} ADD: $prev" >> "$err"; prev=; rc=1; break; }
    tick t1; tadd[i]=$((t1 - t0))
  done
  wait "$lo_pid" || { echo "loopback ADD: $(cat "$WORK/floor.lo")" >> "$err"; rc=1; }
  tick b
  [ $rc = 0 ] || note_err floor "CNI ADD" "$err"
  lo_res=$(cat "$WORK/floor.lo" 2>/dev/null)
  [ "$rc" = 0 ] && [ -n "$lo_res" ] || lo_res=
  local fin=$prev rcd=0
  CNI_COMMAND=DEL
  tick c
  if [ -n "$lo_res" ]; then conf="${FLOOR_LO%\}},\"prevResult\":$lo_res}"; else conf=$FLOOR_LO; fi
  CNI_IFNAME=lo "$CNI_BIN/loopback" <<< "$conf" > "$WORK/floor.lo" 2>>"$err" & lo_pid=$!
  for ((i = n - 1; i >= 0; i--)); do
    conf=${FLOOR_CONFS[i]}
    [ -n "$fin" ] && conf="${conf%\}},\"prevResult\":$fin}"
    tick t0
    "$CNI_BIN/${FLOOR_TYPES[i]}" <<< "$conf" > "$WORK/floor.out" 2>>"$err" || { echo "${FLOOR_TYPES[i]} DEL: $(cat "$WORK/floor.out")" >> "$err"; rcd=1; }
    tick t1; tdel[i]=$((t1 - t0))
  done
  wait "$lo_pid" || { echo "loopback DEL: $(cat "$WORK/floor.lo")" >> "$err"; rcd=1; }
  tick d
  [ $rcd = 0 ] || note_err floor "CNI DEL" "$err"
  [ $rc = 0 ] && [ $rcd = 0 ] || return 1
  [ "$1" = warm ] && return 0
  ms "$a" "$b" >> "$RES/floor.cni_add"; echo >> "$RES/floor.cni_add"
  ms "$c" "$d" >> "$RES/floor.cni_del"; echo >> "$RES/floor.cni_del"
  for ((i = 0; i < n; i++)); do
    ms 0 "${tadd[i]}" >> "$RES/floor.add_$i"; echo >> "$RES/floor.add_$i"
    ms 0 "${tdel[i]}" >> "$RES/floor.del_$i"; echo >> "$RES/floor.del_$i"
  done
}
# shared floor 2, cgroup v1 attach: a fresh cgroup under the bench's own parent, a fresh `sleep`, and
# the time of one shell-builtin write of its pid to cgroup.procs (pids hierarchy): on this kernel the
# first write in a burst waits for an RCU grace period (cgroup_threadgroup_rwsem, no favordynmods).
# A second write right after (cpu hierarchy) shows the rest of a burst is cheap, as runc's and
# corral-oci's further hierarchies are. 100 ms before the first write with no write of ours.
floor_cgroup_sample() { # tag
  local dp=/sys/fs/cgroup/pids$CG_FLOOR/$1 dc=/sys/fs/cgroup/cpu$CG_FLOOR/$1 a b c rc=0 err=$WORK/err.floorcg
  mkdir -p "$dp" "$dc" 2>"$err" || { note_err floor "cgroup mkdir" "$err"; return 1; }
  /bin/sleep 60 & FLOOR_SLEEP_PID=$!
  /bin/sleep 0.1
  tick a; { echo "$FLOOR_SLEEP_PID" > "$dp/cgroup.procs"; } 2>"$err" || rc=1; tick b
  { echo "$FLOOR_SLEEP_PID" > "$dc/cgroup.procs"; } 2>>"$err" || rc=1; tick c
  kill -KILL "$FLOOR_SLEEP_PID" 2>/dev/null; wait "$FLOOR_SLEEP_PID" 2>/dev/null; FLOOR_SLEEP_PID=
  rmdir "$dp" "$dc" 2>>"$err" || rc=1
  [ $rc = 0 ] || { note_err floor "cgroup attach" "$err"; return 1; }
  [ "$1" = warm ] && return 0
  ms2 "$a" "$b" >> "$RES/floor.cg_first"; echo >> "$RES/floor.cg_first"
  ms2 "$b" "$c" >> "$RES/floor.cg_second"; echo >> "$RES/floor.cg_second"
}

RUNTIMES=(corrald containerd)
for r in "${RUNTIMES[@]}"; do
  tick a
  for img in "$BUSYBOX_IMAGE" "$PAUSE_IMAGE"; do
    cri "$r" pull "$img" > /dev/null 2>"$WORK/err.$r" || note_err "$r" "PullImage($img)" "$WORK/err.$r"
  done
  tick b; echo "$(ms "$a" "$b")" > "$RES/$r.pull"
  cycle "$r" warm || log "$r warm-up cycle failed"
done
floor_cni_cycle warm || log "floor CNI warm-up cycle failed"
floor_cgroup_sample warm || log "floor cgroup warm-up failed"
x=$(oci_server_pids | tr '\n' ' ')
if [ -n "${x// }" ]; then log "corral-oci server of this corrald: pid $x(dir $SRVDIR)"
else log "no separate corral-oci server process for this corrald (dir $SRVDIR: $(ls "$SRVDIR" 2>/dev/null | tr '\n' ' '))"; fi
# single-pod steps, the client baseline (`crictl version`: the Version RPC) and the shared floors, all
# interleaved: each round one floor sample each, then per runtime (order alternates) one baseline call
# and one cycle, so background load hits every figure alike
for i in $(seq "$RUNS"); do
  floor_cgroup_sample "r$i" || true
  floor_cni_cycle "r$i" || true
  if [ $((i % 2)) = 1 ]; then order="corrald containerd"; else order="containerd corrald"; fi
  for r in $order; do
    tick a; cri "$r" version >/dev/null 2>"$WORK/err.$r"; rc=$?; tick b
    if [ $rc = 0 ]; then ms "$a" "$b" >> "$RES/$r.version"; echo >> "$RES/$r.version"; else note_err "$r" Version "$WORK/err.$r"; fi
    cycle "$r" "r$i" || true
  done
done
log "single-pod steps, baselines and floors done ($RUNS runs each)"

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
pss() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null; }
for r in "${RUNTIMES[@]}"; do
  [ "$r" = corrald ] && dp=$CPID || dp=$DPID
  rss "$dp" > "$RES/$r.rss_idle"
done
: > "$RES/corrald.srv_rss_idle"
for q in $(oci_server_pids); do rss "$q" >> "$RES/corrald.srv_rss_idle"; done

batch() { # runtime: NPODS pods, PARALLEL workers, each worker sequential runp -> create -> start
  local r=$1 w out=$RES/$r.batchlog
  : > "$out"
  worker() {
    local i cfg p c err=$WORK/err.$r.w$1
    for ((i = $1; i <= NPODS; i += PARALLEL)); do
      cfg=$(podcfg "$r" "b$i")
      p=$(cri "$r" runp "$cfg" 2>"$err") && [ -n "$p" ] || { note_err "$r" "batch RunPodSandbox" "$err"; echo "fail $i" >> "$out"; continue; }
      c=$(cri "$r" create "$p" "$CTR" "$cfg" 2>"$err") && [ -n "$c" ] || { note_err "$r" "batch CreateContainer" "$err"; echo "fail $i" >> "$out"; continue; }
      cri "$r" start "$c" >/dev/null 2>"$err" || { note_err "$r" "batch StartContainer" "$err"; echo "fail $i" >> "$out"; continue; }
      echo "ok $i $p" >> "$out"
    done
  }
  local a b wpids=()
  tick a
  for ((w = 1; w <= PARALLEL; w++)); do worker "$w" & wpids+=($!); done
  wait "${wpids[@]}"   # only the workers (a bare wait would wait for the daemons too)
  tick b
  ms "$a" "$b" > "$RES/$r.batch"
  grep -c '^ok' "$out" > "$RES/$r.batch_ok"
  for p in $(awk '$1=="ok" {print $3}' "$out"); do record_netns "$r" "$p"; done
  sleep 3
  local ready; ready=$(cri "$r" ps -q --state running 2>/dev/null | wc -l)
  echo "$ready" > "$RES/$r.batch_running"
  [ "$r" = corrald ] && dp=$CPID || dp=$DPID
  rss "$dp" > "$RES/$r.rss_daemon"
  local mons
  if [ "$r" = corrald ]; then mons=$(conmon_pids); else mons=$(shim_pids); fi
  : > "$RES/$r.mon_rss"; : > "$RES/$r.mon_pss"
  for m in $mons; do rss "$m" >> "$RES/$r.mon_rss"; pss "$m" >> "$RES/$r.mon_pss"; done
  # corrald's OCI handler is a client of a long-lived corral-oci server (unless corrald hosts it)
  : > "$RES/$r.srv_rss"; : > "$RES/$r.srv_pss"
  if [ "$r" = corrald ]; then
    for q in $(oci_server_pids); do rss "$q" >> "$RES/$r.srv_rss"; pss "$q" >> "$RES/$r.srv_pss"; done
    # a corrald that hosts the server itself writes its own pid to <id>.pid (its RSS is the daemon's)
    : > "$RES/$r.srv_hosted"
    for q in $(cat "$SRVDIR"/*.pid 2>/dev/null); do [ "$q" = "$CPID" ] && echo "$q" >> "$RES/$r.srv_hosted"; done
  fi
  pss "$dp" > "$RES/$r.pss_daemon"
  # other processes in the pods' cgroups than the app containers: containerd's pause, corrald's infra
  # (corrald starts one only for pods sharing a PID namespace; these pods do not)
  local cg h=/sys/fs/cgroup/pids q; [ "$r" = corrald ] && cg=$CG_CORRAL || cg=$CG_CTRD
  [ -d "$h$cg" ] || h=/sys/fs/cgroup
  : > "$RES/$r.infra_rss"
  for q in $(find "$h$cg" -name cgroup.procs -exec cat {} + 2>/dev/null); do
    [ "$(tr '\0' ' ' < "/proc/$q/cmdline" 2>/dev/null)" = "sleep 3600 " ] || rss "$q" >> "$RES/$r.infra_rss"
  done
  # teardown of the batch (timed too, same parallelism)
  tick a
  local ids; ids=$(awk '$1=="ok" {print $3}' "$out")
  for p in $(cri "$r" pods -q --namespace "$NS" 2>/dev/null); do echo "$p"; done | sort -u > "$WORK/batchpods.$r"
  xargs -P "$PARALLEL" -I{} sh -c "\"$CRICTL\" --runtime-endpoint unix://\$0 --timeout 120s stopp {} >/dev/null 2>&1; \"$CRICTL\" --runtime-endpoint unix://\$0 --timeout 120s rmp -f {} >/dev/null 2>&1" \
    "$([ "$r" = corrald ] && echo "$CSOCK" || echo "$DSOCK")" < "$WORK/batchpods.$r"
  tick b
  ms "$a" "$b" > "$RES/$r.batch_down"
  [ -z "$(cri "$r" pods -q 2>/dev/null)" ] || log "WARNING: $r still lists pods after the batch teardown"
}
for r in "${RUNTIMES[@]}"; do batch "$r"; log "$r: batch of $NPODS done"; done

# ---------------------------------------------------------------- 4. report
med() { [ -s "$1" ] && grep . "$1" | sort -n | awk -v f="${2:-%.1f}" '{a[NR]=$1} END{ if (NR==0) exit; m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf f "\n", m }'; }
spread() { [ -s "$1" ] && grep . "$1" | sort -n | awk '{a[NR]=$1} END{ if (NR) printf "%s..%s n=%d", a[1], a[NR], NR }'; }
sum() { [ -s "$1" ] && awk '{s+=$1} END{ if (NR) print s }' "$1"; }
one() { [ -s "$1" ] && head -1 "$1"; }
isnum() { [[ $1 =~ ^-?[0-9]+(\.[0-9]+)?$ ]]; }
ratio() { if isnum "$1" && isnum "$2"; then awk -v a="$1" -v b="$2" 'BEGIN{ if (b+0==0) print "-"; else printf "%.2f", a/b }'; else echo -; fi; }
W=58
row() { # label unit corrald-value containerd-value [corrald-detail containerd-detail]
  printf "%-${W}s %10s %10s %8s   %s | %s\n" "$1" "${3:-FAIL}" "${4:-FAIL}" "$(ratio "${3:-}" "${4:-}")" "${5:-}" "${6:-}"
}
shared_row() { # label value [detail]: a floor both runtimes pay; the same value in both columns
  printf "%-${W}s %10s %10s %8s   %s\n" "$1" "${2:-FAIL}" "${2:-FAIL}" shared "${3:-}"
}
v() { med "$RES/$1.$2"; }
minus() { # value, then pairs "n x": value - sum(n*x); empty if any operand is missing
  local r=$1; shift
  isnum "$r" || return 0
  while [ $# -ge 2 ]; do isnum "$2" || return 0; r=$(awk -v r="$r" -v n="$1" -v x="$2" 'BEGIN{printf "%.1f", r - n*x}'); shift 2; done
  echo "$r"
}
echo
echo "# bench/cri-compare.sh  $(date -u +%FT%TZ)  $(uname -r), $(nproc) CPUs"
echo "# corrald: $("$CORRALD" --version 2>/dev/null | head -1) (handler $CORRAL_OCI, conmon $("$CONMON" --version 2>/dev/null | head -1 | awk '{print $3}'))"
echo "# containerd: $("$CONTAINERD" --version | awk '{print $3}') + runc $("$RUNC" --version | awk 'NR==1{print $3}') + containerd-shim-runc-v2; crictl $("$CRICTL" --version 2>/dev/null | sed "s/^crictl version //") ($CRICTL)"
echo "# images from $REGISTRY (busybox + pause); RUNS=$RUNS (median, spread min..max), NPODS=$NPODS, PARALLEL=$PARALLEL"
echo "# times in ms are crictl wall times (client start-up included; see the version baseline, taken interleaved with the steps)"
printf "%-${W}s %10s %10s %8s   %s\n" "step" "corrald" "containerd" "ratio" "spread corrald | containerd"
row "crictl version (client baseline), ms" ms "$(v corrald version)" "$(v containerd version)" "$(spread "$RES/corrald.version")" "$(spread "$RES/containerd.version")"
row "pull busybox + pause (cold, once), ms" ms "$(one "$RES/corrald.pull")" "$(one "$RES/containerd.pull")"
bc=$(v corrald version); bd=$(v containerd version)
for s in runp:RunPodSandbox cs:CreateContainer+StartContainer create:"  CreateContainer" start:"  StartContainer" teardown:StopPodSandbox+RemovePodSandbox; do
  k=${s%%:*}; label=${s#*:}
  row "$label, ms" ms "$(v corrald "$k")" "$(v containerd "$k")" "$(spread "$RES/corrald.$k")" "$(spread "$RES/containerd.$k")"
  n=1; [ "$k" = cs ] || [ "$k" = teardown ] && n=2
  case $k in create|start) ;; *) row "  minus $n x crictl baseline, ms" ms "$(minus "$(v corrald "$k")" $n "$bc")" "$(minus "$(v containerd "$k")" $n "$bd")";; esac
done
fa=$(v floor cni_add); fd=$(v floor cni_del); fg=$(med "$RES/floor.cg_first" %.2f)
echo "# shared floors, same run, interleaved with the steps: set by this kernel and the CNI plugins, paid by"
echo "# both runtimes alike (same value in both columns)"
plugin_medians() { # add|del -> "bridge 30.1, portmap 4.2, ..." (the chain's plugins, each alone)
  local i out=
  for ((i = 0; i < ${#FLOOR_TYPES[@]}; i++)); do out+="${out:+, }${FLOOR_TYPES[i]} $(med "$RES/floor.$1_$i")"; done
  echo "$out"
}
shared_row "CNI ADD, plugins run directly (lo + chain), ms" "$fa" "spread $(spread "$RES/floor.cni_add"); chain: $(plugin_medians add) (lo alongside)"
shared_row "CNI DEL, plugins run directly (chain reversed + lo), ms" "$fd" "spread $(spread "$RES/floor.cni_del"); chain: $(plugin_medians del)"
shared_row "cgroup v1 attach (1st cgroup.procs write of a burst), ms" "$fg" \
  "spread $(spread "$RES/floor.cg_first"); next write in the burst: $(med "$RES/floor.cg_second" %.2f)"
echo "# steps minus shared floors (medians: step - n x own crictl baseline - floor)"
row "RunPodSandbox - (1 baseline + CNI ADD), ms" ms "$(minus "$(v corrald runp)" 1 "$bc" 1 "$fa")" "$(minus "$(v containerd runp)" 1 "$bd" 1 "$fa")"
row "Create+Start - (2 baselines + 1 cgroup attach), ms" ms "$(minus "$(v corrald cs)" 2 "$bc" 1 "$fg")" "$(minus "$(v containerd cs)" 2 "$bd" 1 "$fg")"
row "Stop+Remove - (2 baselines + CNI DEL), ms" ms "$(minus "$(v corrald teardown)" 2 "$bc" 1 "$fd")" "$(minus "$(v containerd teardown)" 2 "$bd" 1 "$fd")"
echo "#"
# a batch where not every pod came up is no comparison: FAIL (its time stays in the detail column)
bt() { [ "$(one "$RES/$1.batch_ok")" = "$NPODS" ] && one "$RES/$1.$2"; }
bdet() { local x="ok $(one "$RES/$1.batch_ok")/$NPODS, running $(one "$RES/$1.batch_running")"; [ "$(one "$RES/$1.batch_ok")" = "$NPODS" ] || x+=", took $(one "$RES/$1.batch") ms"; echo "$x"; }
row "$NPODS-pod batch up (runp+create+start), total ms" ms "$(bt corrald batch)" "$(bt containerd batch)" "$(bdet corrald)" "$(bdet containerd)"
row "$NPODS-pod batch down (stopp+rmp), total ms" ms "$(bt corrald batch_down)" "$(bt containerd batch_down)"
row "daemon RSS idle (after the single-pod steps), KiB" KiB "$(one "$RES/corrald.rss_idle")" "$(one "$RES/containerd.rss_idle")"
si=$(sum "$RES/corrald.srv_rss_idle")
row "  corral-oci server RSS idle (corrald's handler), KiB" KiB "${si:-0}" "n/a" \
  "$([ -n "$si" ] && echo "$(grep -c . "$RES/corrald.srv_rss_idle") process(es)" || echo "no separate process")" ""
row "daemon RSS with $NPODS pods, KiB" KiB "$(one "$RES/corrald.rss_daemon")" "$(one "$RES/containerd.rss_daemon")" \
  "PSS $(one "$RES/corrald.pss_daemon")" "PSS $(one "$RES/containerd.pss_daemon")"
sn=$(grep -c . "$RES/corrald.srv_rss" 2>/dev/null); ss_=$(sum "$RES/corrald.srv_rss"); sh_=$(one "$RES/corrald.srv_hosted")
if [ "${sn:-0}" != 0 ]; then sdet="separate process(es), dir $SRVDIR"
elif [ -n "$sh_" ]; then sdet="none separate: hosted by corrald (pid $sh_), in its RSS"
else sdet="none running"; fi
row "corral-oci server processes (handler), with $NPODS pods" n "${sn:-0}" "n/a" "$sdet" "runc: one process per verb"
sp_=$(sum "$RES/corrald.srv_pss")
row "corral-oci server RSS with $NPODS pods, KiB" KiB "${ss_:-0}" "n/a" "PSS ${sp_:--}" ""
cn=$(grep -c . "$RES/corrald.mon_rss" 2>/dev/null); dn=$(grep -c . "$RES/containerd.mon_rss" 2>/dev/null)
row "monitor processes (conmon | shim)" n "$cn" "$dn"
row "monitor RSS each (median), KiB" KiB "$(med "$RES/corrald.mon_rss")" "$(med "$RES/containerd.mon_rss")" "$(spread "$RES/corrald.mon_rss")" "$(spread "$RES/containerd.mon_rss")"
row "monitor RSS sum, KiB" KiB "$(sum "$RES/corrald.mon_rss")" "$(sum "$RES/containerd.mon_rss")"
row "monitor PSS sum, KiB" KiB "$(sum "$RES/corrald.mon_pss")" "$(sum "$RES/containerd.mon_pss")"
cs=$(sum "$RES/corrald.mon_rss"); ds=$(sum "$RES/containerd.mon_rss")
row "monitor RSS per pod (sum / $NPODS), KiB" KiB "$([ -n "$cs" ] && awk -v s="$cs" -v n="$NPODS" 'BEGIN{printf "%.0f", s/n}')" \
  "$([ -n "$ds" ] && awk -v s="$ds" -v n="$NPODS" 'BEGIN{printf "%.0f", s/n}')"
row "pause/infra processes in the pods" n "$(grep -c . "$RES/corrald.infra_rss" 2>/dev/null)" "$(grep -c . "$RES/containerd.infra_rss" 2>/dev/null)"
ci=$(sum "$RES/corrald.infra_rss"); di=$(sum "$RES/containerd.infra_rss")
row "pause/infra RSS sum, KiB" KiB "${ci:-0}" "${di:-0}"
ct=$(awk -v a="$(one "$RES/corrald.rss_daemon")" -v b="$cs" -v c="${ci:-0}" -v s="${ss_:-0}" 'BEGIN{ if (a!="" && b!="") print a+b+c+s }')
dt=$(awk -v a="$(one "$RES/containerd.rss_daemon")" -v b="$ds" -v c="${di:-0}" 'BEGIN{ if (a!="" && b!="") print a+b+c }')
row "daemon + monitors + pause + oci server RSS, $NPODS pods, KiB" KiB "$ct" "$dt" "incl. corral-oci server ${ss_:-0}" ""
if [ -s "$ERRS" ]; then
  echo
  echo "# errors (first of each kind):"
  sed 's/^/#   /' "$ERRS"
fi
echo
