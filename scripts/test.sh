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
exec node --no-warnings --test --test-concurrency="${CORRAL_TEST_CONCURRENCY:-2}" --test-timeout=600000 "$@" "${files[@]}"
