#!/usr/bin/env bash
# The prepared GPU check: one script to run on a machine with an NVIDIA GPU.
#
#   bash scripts/gpu-check.sh [--cpu-only] [--quick] [--bundle DIR] [--out FILE]
#
# It checks for Node first (and says how to bring one), builds or loads the
# addon, compiles the TypeScript if dist/ is missing, then runs
# dist/src/tools/bench/gpu-check.js: CUDA kernels vs CPU kernels with kernel times, the
# native pipeline on each ONNX Runtime GPU provider that loads vs the native CPU
# pipeline (max |diff| of scores and maps), latency at batch 1, 8, 64 for S = 2
# and 3, throughput, and a JSON report at $OUT/gpu-check.json (./gpu-check.json
# without $OUT, or --out). --cpu-only runs the CPU part anywhere: the native C
# API path vs the onnxruntime-node path (parity and timings).
#
# Exit codes: 0 done (read the JSON for pass/fail), 1 the check failed to run,
# 3 no usable Node, 4 node_modules missing, 5 the addon neither loads nor builds.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
say() { printf '[gpu-check] %s\n' "$*"; }

CPU_ONLY=0
for a in "$@"; do [ "$a" = "--cpu-only" ] && CPU_ONLY=1; done

# ---- 1. Node ---------------------------------------------------------------------
NODE=""
for cand in "${INVAD_NODE:-}" "$(command -v node 2>/dev/null || true)" "$ROOT/.node/bin/node" "$ROOT/shared/node/bin/node" /usr/local/bin/node /opt/node/bin/node; do
  if [ -n "$cand" ] && [ -x "$cand" ]; then NODE="$cand"; break; fi
done
if [ -z "$NODE" ]; then
  cat <<'EOF'
[gpu-check] No Node.js on this machine (and it may have no internet).
[gpu-check] Bring one along, then rerun:
[gpu-check]   - unpack the official Node 20+ linux-x64 tarball (node-v20.*-linux-x64.tar.xz, about 45 MB)
[gpu-check]     into ./.node of the working tree (so ./.node/bin/node exists) and carry that folder, or
[gpu-check]   - point INVAD_NODE at a node binary: INVAD_NODE=/path/to/node bash scripts/gpu-check.sh
EOF
  exit 3
fi
export PATH="$(dirname "$NODE"):$PATH"
NODE_MAJOR=$("$NODE" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
say "node: $NODE ($("$NODE" --version 2>/dev/null))"
if [ "$NODE_MAJOR" -lt 20 ]; then
  say "Node $NODE_MAJOR is too old; invad needs Node 20 or newer (bring one as described with INVAD_NODE)"
  exit 3
fi

# ---- 2. node_modules -------------------------------------------------------------
ORT_DIR="$ROOT/node_modules/onnxruntime-node/bin/napi-v6/linux/x64"
if [ ! -f "$ORT_DIR/libonnxruntime.so.1" ] || [ ! -d "$ROOT/node_modules/sharp" ]; then
  say "node_modules is missing or incomplete ($ORT_DIR/libonnxruntime.so.1 or sharp not found)."
  say "Run 'npm ci' where there is a registry, then carry node_modules (or run this where it was installed)."
  exit 4
fi
for lib in libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so libonnxruntime_providers_tensorrt.so; do
  if [ -f "$ORT_DIR/$lib" ]; then say "ORT provider library present: $lib"; else say "ORT provider library MISSING: $ORT_DIR/$lib (that provider cannot load; npm ci without ONNXRUNTIME_NODE_INSTALL=skip downloads it)"; fi
done
if [ -n "${INVAD_ORT_LIBRARY:-}" ]; then say "INVAD_ORT_LIBRARY=$INVAD_ORT_LIBRARY overrides onnxruntime-node's library"; fi

# ---- 3. GPU ------------------------------------------------------------------------
if [ "$CPU_ONLY" = 0 ]; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader | sed 's/^/[gpu-check] GPU: /'
  else
    say "nvidia-smi not found; the addon's cudaStatus() will say what CUDA sees"
  fi
fi

# ---- 4. addon ----------------------------------------------------------------------
addon_ok() {
  "$NODE" -e 'const a=require(process.argv[1]); if (typeof a.DeviceResidentPipeline!=="function"||typeof a.cudaKernelCheck!=="function") process.exit(2); const b=a.buildInfo(); console.log(JSON.stringify({build:b,cuda:a.cudaStatus()}));' "$1" 2>/dev/null
}
ADDON="${INVAD_ADDON_PATH:-$ROOT/build/Release/invad.node}"
if [ -f "$ADDON" ] && addon_ok "$ADDON" >/dev/null; then
  say "addon: $ADDON $(addon_ok "$ADDON")"
else
  say "addon at $ADDON missing or stale; building it (needs cmake and a C++17 compiler; nvcc for CUDA)"
  mkdir -p "$ROOT/build"
  if ! (npx --no-install cmake-js compile --out build >"$ROOT/build/gpu-check-build.log" 2>&1); then
    tail -n 30 "$ROOT/build/gpu-check-build.log"
    say "the addon build failed (log: build/gpu-check-build.log)"
    exit 5
  fi
  ADDON="$ROOT/build/Release/invad.node"
  if ! addon_ok "$ADDON" >/dev/null; then say "the freshly built addon does not load"; exit 5; fi
  say "addon built: $(addon_ok "$ADDON")"
fi
export INVAD_ADDON_PATH="$ADDON"

# ---- 5. TypeScript -----------------------------------------------------------------
if [ ! -f "$ROOT/dist/src/tools/bench/gpu-check.js" ] || [ "$ROOT/src/tools/bench/gpu-check.ts" -nt "$ROOT/dist/src/tools/bench/gpu-check.js" ]; then
  say "compiling TypeScript (npx tsc -p .)"
  if ! npx --no-install tsc -p . ; then say "tsc failed"; exit 1; fi
fi

# ---- 6. the check ------------------------------------------------------------------
say "running node dist/src/tools/bench/gpu-check.js $*"
"$NODE" "$ROOT/dist/src/tools/bench/gpu-check.js" "$@"
rc=$?
[ $rc -ne 0 ] && say "the check exited with $rc (the JSON report keeps what ran)"
exit $rc
