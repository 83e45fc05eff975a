#!/usr/bin/env bash
# One-shot, idempotent setup for a fresh Debian 12 machine:
#   1. Debian packages the runtime and its tests need (apt-get, only when missing)
#   2. Node 24 and TypeScript from the npm registry (npm ci, only when the lockfile changed)
#   3. the C executor (make), and the bin/ wrappers that run the CLIs with Node 24
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

packages=(busybox-static conmon runc libseccomp-dev linux-libc-dev gcc make libc6-dev
  hyperfine docker-registry skopeo umoci containernetworking-plugins iptables iproute2
  golang-go containerd podman util-linux openssl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts these services on install; the project starts its own private instances.
  for svc in docker-registry containerd; do
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  done
fi

stamp=node_modules/.corral-lock-stamp
if [ ! -x node_modules/.bin/node ] || ! cmp -s package-lock.json "$stamp" 2>/dev/null; then
  echo "setup: installing Node 24 and dev tools from the npm registry" >&2
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  cp package-lock.json "$stamp"
fi
node_modules/.bin/node -e 'if (+process.versions.node.split(".")[0] < 24) { console.error("setup: Node 24 missing"); process.exit(1) }'

make -s -C src/executor OUT="$top/build"
make -s -C src/image/native OUT="$top/build"
make -s -C src/cri/streaming-backend/native OUT="$top/build"

# corral-oci is started once per container operation by its callers (conmon, containerd's shim),
# so it runs from a single bundled CommonJS file: loading ~40 TypeScript modules costs more than the
# work, and ESM's namespace objects for node:fs & co. load modules (streams) the CLI never uses.
# import.meta.url is defined as the bundle's own URL (CommonJS has no import.meta): src/layout.ts finds
# the checkout's files from it. The banner starts with "use strict" so the whole file stays strict.
node_modules/.bin/esbuild src/cli/corral-oci-main.ts --bundle --platform=node --format=cjs --target=node24 \
  --define:import.meta.url=__corral_import_meta_url \
  --banner:js="\"use strict\"; const __corral_import_meta_url = require('node:url').pathToFileURL(__filename).href;" \
  --outfile=build/corral-oci.cjs --log-level=error

# corrald and corral run from ESM bundles too (build/corrald.mjs, build/corral.mjs), and so do the
# layer unpack workers they start (build/unpack-worker.mjs): ~100 TypeScript modules loaded through
# Node's type stripping cost a long-lived daemon ~15 MB of memory for good. Bundled code finds the
# checkout's files through src/layout.ts (one directory below the root, as build/ is). The banner
# gives bundled CommonJS packages (grpc-js) the require() an ESM file lacks; --keep-names keeps class
# names (error names, the unpack worker's serialized errors) as in the sources. In a bundle every
# module's import.meta is the bundle's, so `if (import.meta.main)` guards of bundled modules
# (corral-oci.ts) are defined false: these entries run unconditionally.
node_modules/.bin/esbuild corrald=src/cli/corrald.ts corral=src/cli/corral.ts unpack-worker=src/image/unpack/worker.ts \
  --bundle --platform=node --format=esm --target=node24 --keep-names --define:import.meta.main=false \
  --outdir=build --out-extension:.js=.mjs \
  --banner:js="import { createRequire as __corral_createRequire } from 'node:module'; const require = __corral_createRequire(import.meta.url);" \
  --log-level=error

# bin/corral-oci is a static C client (src/cli/oci-client) of one long-lived Node server per build
# (src/cli/oci-server.ts), so a caller's verb costs no Node boot. It reads build/corral-oci-client.conf
# (beside the real executable): the Node binary, the bundle, the executor, and the build id that names
# the server's socket (/run/corral-oci-server/<build_id>.sock): a hash of the bundle and this checkout,
# so a rebuilt bundle never talks to a server running older code.
make -s -C src/cli/oci-client OUT="$top/build"
build_id=$({ cat build/corral-oci.cjs; echo "$top"; } | sha256sum | cut -c1-16)
cat > build/corral-oci-client.conf.tmp <<CONF
node=$top/node_modules/node/bin/node
bundle=$top/build/corral-oci.cjs
executor=$top/build/corral-exec
unpack_helper=$top/build/corral-unpack
compile_cache=$top/.cache/node
build_id=$build_id
CONF
mv build/corral-oci-client.conf.tmp build/corral-oci-client.conf

mkdir -p bin
ln -sfn ../build/corral-oci-client bin/corral-oci.tmp
mv -Tf bin/corral-oci.tmp bin/corral-oci
# corrald's young generation is capped at two 2 MB semi-spaces (by default V8 grows each to 16 MB under
# load and keeps them): after a burst of 3000 concurrent CRI calls it holds ~165 MB instead of ~240 MB,
# idle a few MB less, for the same CPU time and latency per call (measured; --v8-pool-size=1 saved
# nothing measurable). bin/corral is short-lived and keeps V8's defaults.
for cli in corral corrald; do
  entry="build/$cli.mjs"
  flags=--no-warnings
  if [ "$cli" = corrald ]; then flags="$flags --max-semi-space-size=2"; fi
  cat > "bin/$cli.tmp" <<SH
#!/bin/sh
# generated by scripts/setup.sh
export NODE_COMPILE_CACHE="\${NODE_COMPILE_CACHE:-$top/.cache/node}"
export CORRAL_EXECUTOR="\${CORRAL_EXECUTOR:-$top/build/corral-exec}"
export CORRAL_UNPACK_HELPER="\${CORRAL_UNPACK_HELPER:-$top/build/corral-unpack}"
exec "$top/node_modules/node/bin/node" $flags "$top/$entry" "\$@"
SH
  chmod +x "bin/$cli.tmp"
  mv "bin/$cli.tmp" "bin/$cli"
done
