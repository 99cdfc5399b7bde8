#!/usr/bin/env bash
# The prepared GPU check: one script to run on a machine with an NVIDIA GPU.
#
#   bash scripts/gpu-check.sh [--cpu-only] [--quick] [--budget-s N] [--bundle DIR] [--out FILE]
#
# Two ways to run it:
#   - from the folder scripts/gpu-pack.sh builds (gpu-pack/, marked by its
#     gpu-pack.json): it unpacks the Node binary and node_modules it carries
#     (tar -m, or Python's tarfile without xz), and uses the prebuilt CUDA addon
#     and the compiled dist/ as they are. It needs no network, no compiler and
#     no Node on the machine (PATH=/usr/bin:/bin is enough), and never builds
#     anything;
#   - from a checkout: it uses the checkout's Node and node_modules, builds the
#     addon when it is missing (cmake-js), and compiles the TypeScript only when
#     dist/ is missing or older than src/ and tsc is there.
#
# It then runs dist/src/tools/bench/gpu-check.js: the CUDA kernels vs the CPU
# kernels with kernel times, the addon's device self-test, the native pipeline
# on each ONNX Runtime GPU provider that loads vs the native CPU pipeline,
# latency and throughput. The JSON report goes to --out, else $OUT/gpu-check.json
# when $OUT is set, else ./gpu-check.json. Every part that could not run has a
# `skipped` reason there; when the check cannot start at all, this script writes
# a report with `fatal` and the reasons itself. --quick keeps to a time budget
# (300 s for starting parts, and the whole run is stopped at 345 s).
#
# Exit codes: 0 done (read the JSON for pass/fail), 1 the check failed to run,
# 3 no usable Node, 4 node_modules missing, 5 the addon neither loads nor builds,
# 124 stopped at the time limit (the JSON keeps every finished part).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
T0=$(date +%s)
say() { printf '[gpu-check] %s\n' "$*"; }

CPU_ONLY=0
QUICK=0
REPORT=""
prev=""
for a in "$@"; do
  case "$a" in
    --cpu-only) CPU_ONLY=1 ;;
    --quick) QUICK=1 ;;
  esac
  [ "$prev" = "--out" ] && REPORT="$a"
  prev="$a"
done
if [ -z "$REPORT" ]; then REPORT="${OUT:+$OUT/}gpu-check.json"; fi
case "$REPORT" in /*) ;; *) REPORT="$ROOT/$REPORT" ;; esac

PACK=0
[ -f "$ROOT/gpu-pack.json" ] && PACK=1

json_str() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\t'/ }
  printf '"%s"' "$s"
}

# A report for a check that could not start: fatal, and every part skipped with it.
fail_report() {
  local why="$1" code="$2"
  mkdir -p "$(dirname "$REPORT")" 2>/dev/null
  {
    printf '{\n  "startedAt": %s,\n  "mode": %s,\n  "fatal": %s,\n  "exitCode": %s,\n' \
      "$(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)")" "$(json_str "$([ $CPU_ONLY = 1 ] && echo cpu-only || echo gpu)")" "$(json_str "$why")" "$code"
    printf '  "skipped": {\n'
    local first=1 part
    for part in kernels deviceSelfTest pipelines cpuLatency; do
      [ $first = 1 ] || printf ',\n'
      first=0
      printf '    %s: %s' "$(json_str "$part")" "$(json_str "the check could not start: $why")"
    done
    printf '\n  }\n}\n'
  } >"$REPORT" 2>/dev/null && say "wrote $REPORT (fatal: $why)"
}

# Unpacks a .tar.xz into ROOT with modification times set to now (-m), with tar
# and xz when both are there, else with Python's tarfile (no xz binary needed).
unpack() {
  local archive="$1"
  if command -v tar >/dev/null 2>&1 && command -v xz >/dev/null 2>&1; then
    tar -xJmf "$archive" -C "$ROOT" && return 0
  fi
  local py
  for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null 2>&1; then
      "$py" - "$archive" "$ROOT" <<'EOF' && return 0
import os, sys, tarfile, time
archive, dest = sys.argv[1], sys.argv[2]
now = time.time()
with tarfile.open(archive, "r:xz") as t:
    members = t.getmembers()
    try:
        t.extractall(dest, members=members, filter="tar")
    except TypeError:  # Python < 3.12 without extraction filters
        t.extractall(dest, members=members)
for m in members:
    p = os.path.join(dest, m.name)
    if m.isfile() and os.path.exists(p):
        os.utime(p, (now, now))
EOF
    fi
  done
  return 1
}

if [ $PACK = 1 ]; then
  say "running from a gpu-pack folder ($ROOT): nothing is built here"
  for part in node node_modules; do
    archive="$ROOT/$part.tar.xz"
    marker="$ROOT/.unpacked-$part"
    if [ -f "$archive" ] && [ ! -f "$marker" ]; then
      t=$(date +%s)
      if unpack "$archive"; then
        : >"$marker"
        say "unpacked $part.tar.xz in $(( $(date +%s) - t )) s"
      else
        say "could not unpack $archive (needs tar with xz, or python3)"
        fail_report "could not unpack $part.tar.xz (needs tar with xz, or python3)" 4
        exit 4
      fi
    fi
  done
fi

# ---- 1. Node ---------------------------------------------------------------------
NODE=""
for cand in "${INVAD_NODE:-}" "$ROOT/.node/bin/node" "$(command -v node 2>/dev/null || true)" "$ROOT/shared/node/bin/node" /usr/local/bin/node /opt/node/bin/node; do
  if [ -n "$cand" ] && [ -x "$cand" ]; then NODE="$cand"; break; fi
done
if [ -z "$NODE" ]; then
  cat <<'EOF'
[gpu-check] No Node.js on this machine (and it may have no internet).
[gpu-check] Run this from the folder scripts/gpu-pack.sh builds (it carries Node), or bring one:
[gpu-check]   - unpack the official Node 20+ linux-x64 tarball into ./.node (so ./.node/bin/node exists), or
[gpu-check]   - point INVAD_NODE at a node binary: INVAD_NODE=/path/to/node bash scripts/gpu-check.sh
EOF
  fail_report "no usable Node.js (run from the gpu-pack folder, or set INVAD_NODE)" 3
  exit 3
fi
export PATH="$(dirname "$NODE"):$PATH"
NODE_MAJOR=$("$NODE" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
say "node: $NODE ($("$NODE" --version 2>/dev/null))"
if [ "$NODE_MAJOR" -lt 20 ]; then
  say "Node $NODE_MAJOR is too old; invad needs Node 20 or newer (bring one as described with INVAD_NODE)"
  fail_report "Node $NODE_MAJOR is too old (needs 20 or newer)" 3
  exit 3
fi

# ---- 2. node_modules -------------------------------------------------------------
ORT_DIR="$ROOT/node_modules/onnxruntime-node/bin/napi-v6/linux/x64"
if [ ! -f "$ORT_DIR/libonnxruntime.so.1" ]; then
  say "node_modules is missing or incomplete ($ORT_DIR/libonnxruntime.so.1 not found)."
  say "Run 'npm ci' where there is a registry, or run this from the folder scripts/gpu-pack.sh builds."
  fail_report "node_modules is missing or incomplete ($ORT_DIR/libonnxruntime.so.1 not found)" 4
  exit 4
fi
for lib in libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so libonnxruntime_providers_tensorrt.so; do
  if [ -f "$ORT_DIR/$lib" ]; then say "ORT provider library present: $lib"; else say "ORT provider library missing: $lib (the pipelines on that provider are skipped; see the README's GPU section)"; fi
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
  "$NODE" -e 'const a=require(process.argv[1]); if (typeof a.DeviceResidentPipeline!=="function"||typeof a.cudaKernelCheck!=="function") process.exit(2); console.log(JSON.stringify({build:a.buildInfo(),cuda:a.cudaStatus()}));' "$1" 2>/dev/null
}
ADDON="${INVAD_ADDON_PATH:-$ROOT/build/Release/invad.node}"
if [ -f "$ADDON" ] && addon_ok "$ADDON" >/dev/null; then
  say "addon: $ADDON $(addon_ok "$ADDON")"
elif [ $PACK = 1 ]; then
  why="the packed addon $ADDON does not load: $("$NODE" -e 'try{require(process.argv[1])}catch(e){console.log(e.message.split("\n")[0])}' "$ADDON" 2>&1 | head -n 1)"
  say "$why"
  fail_report "$why" 5
  exit 5
else
  say "addon at $ADDON missing or stale; building it (needs cmake and a C++17 compiler; nvcc for CUDA)"
  mkdir -p "$ROOT/build"
  if ! (npx --no-install cmake-js compile --out build >"$ROOT/build/gpu-check-build.log" 2>&1); then
    tail -n 30 "$ROOT/build/gpu-check-build.log"
    say "the addon build failed (log: build/gpu-check-build.log)"
    fail_report "the addon is missing and its build failed (build/gpu-check-build.log)" 5
    exit 5
  fi
  ADDON="$ROOT/build/Release/invad.node"
  if ! addon_ok "$ADDON" >/dev/null; then say "the freshly built addon does not load"; fail_report "the freshly built addon does not load" 5; exit 5; fi
  say "addon built: $(addon_ok "$ADDON")"
fi
export INVAD_ADDON_PATH="$ADDON"

# ---- 5. TypeScript (never in a pack; in a checkout only when stale and tsc is there)
JS="$ROOT/dist/src/tools/bench/gpu-check.js"
if [ $PACK = 0 ]; then
  stale=0
  if [ ! -f "$JS" ]; then
    stale=1
  elif [ -d "$ROOT/src" ] && [ -n "$(find "$ROOT/src" -name '*.ts' -newer "$JS" -print -quit 2>/dev/null)" ]; then
    stale=1
  fi
  if [ $stale = 1 ]; then
    if [ -x "$ROOT/node_modules/.bin/tsc" ]; then
      say "compiling TypeScript (dist/ is missing or older than src/)"
      if ! "$ROOT/node_modules/.bin/tsc" -p "$ROOT"; then
        [ -f "$JS" ] || { say "tsc failed"; fail_report "tsc failed and dist/ has no gpu-check.js" 1; exit 1; }
        say "tsc reported errors; running the dist/ it left"
      fi
    elif [ -f "$JS" ]; then
      say "dist/ is older than src/ but there is no tsc here: running dist/ as it is"
    else
      say "no dist/src/tools/bench/gpu-check.js and no tsc to make it"
      fail_report "no dist/src/tools/bench/gpu-check.js and no tsc to compile it" 1
      exit 1
    fi
  fi
fi
if [ ! -f "$JS" ]; then fail_report "missing $JS" 1; exit 1; fi

# ---- 6. the check ------------------------------------------------------------------
say "running node dist/src/tools/bench/gpu-check.js $* (report: $REPORT)"
LIMIT=""
if [ $QUICK = 1 ] && command -v timeout >/dev/null 2>&1; then
  # 6 minutes in all: the rest of the budget after unpacking, less a margin.
  left=$(( 345 - ($(date +%s) - T0) ))
  [ $left -lt 30 ] && left=30
  LIMIT="timeout --signal=TERM --kill-after=10 $left"
fi
$LIMIT "$NODE" "$JS" "$@" --out "$REPORT"
rc=$?
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
  say "stopped at the time limit; the JSON report keeps every part that finished"
  "$NODE" -e 'const fs=require("fs");const f=process.argv[1];try{const r=JSON.parse(fs.readFileSync(f,"utf8"));r.stoppedAtTimeLimit=true;fs.writeFileSync(f,JSON.stringify(r,null,2));}catch{}' "$REPORT"
elif [ $rc -ne 0 ]; then
  say "the check exited with $rc (the JSON report keeps what ran)"
fi
say "total $(( $(date +%s) - T0 )) s"
exit $rc
