#!/usr/bin/env bash
# The whole test suite: strict typecheck, then every *.test.ts (unit tests beside the code,
# integration tests under test/). Runs as root: the integration tests create real namespaces,
# cgroups, mounts, registries and daemons, each under names of its own, and check for leaks.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
export NODE_COMPILE_CACHE="$PWD/.cache/node"
echo "== typecheck"
tsc -p tsconfig.json --noEmit
echo "== tests"
mapfile -t files < <(find src test -name '*.test.ts' -not -path '*/node_modules/*' | sort)

# Every corral-oci call in the run (from tests, conmon, containerd) talks to a warm server of this run
# only; it is stopped by pid at the end, whatever the outcome.
export CORRAL_OCI_SERVER_DIR
CORRAL_OCI_SERVER_DIR=$(mktemp -d /tmp/corral-oci-servers-XXXXXX)
stop_servers() {
  local f
  for f in "$CORRAL_OCI_SERVER_DIR"/*.pid; do
    [ -f "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null || true
  done
  sleep 0.5
  rm -rf "$CORRAL_OCI_SERVER_DIR"
}
trap stop_servers EXIT
status=0
node --no-warnings --test --test-concurrency="${CORRAL_TEST_CONCURRENCY:-2}" --test-timeout=600000 "$@" "${files[@]}" || status=$?
exit $status
