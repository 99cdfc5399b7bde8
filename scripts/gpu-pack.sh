#!/usr/bin/env bash
# Builds the self-contained folder that scripts/gpu-check.sh runs from on a GPU
# machine with no network, no Node and no compiler:
#
#   bash scripts/gpu-pack.sh [--out DIR] [--build DIR] [--verify]
#
#   DIR (default gpu-pack/, gitignored) gets
#     node.tar.xz          this machine's Node binary (bin/node), unpacked to .node/
#     node_modules.tar.xz  the node_modules subset the GPU check loads: traced by
#                          running `node dist/src/tools/bench/gpu-check.js
#                          --cpu-only --quick` with a preload that records every
#                          module required and every shared library mapped, then
#                          taken package by package (onnxruntime-node with only
#                          its linux/x64 binaries)
#     build/Release/invad.node  the addon built WITH CUDA (cmake-js,
#                          -DINVAD_CUDA=ON) in its own build folder (--build,
#                          default build-gpu-pack/), never build/
#     dist/                the TypeScript compiled from this checkout
#     package.json, train/*.py (the paper UNet export), scripts/gpu-check.sh
#     gpu-pack.json        what went in (commit, Node, addon build, packages, sizes);
#                          gpu-check.sh sees it and builds nothing
#
# It fails when the folder is over 60 MiB, and prints its size. --verify then
# copies the folder to a temporary place and runs
#   env -i PATH=/usr/bin:/bin HOME=/tmp bash scripts/gpu-check.sh --quick
# there, as the GPU machine would (GPU parts skipped with reasons without a GPU).
#
# Needs: node, npm's node_modules (with devDependencies: tsc, cmake-js), cmake,
# a C++17 compiler, nvcc (CUDA 12 or 13), tar and xz.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT="$ROOT/gpu-pack"
BUILD="$ROOT/build-gpu-pack"
VERIFY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$(realpath -m "$2"); shift 2 ;;
    --build) BUILD=$(realpath -m "$2"); shift 2 ;;
    --verify) VERIFY=1; shift ;;
    -h|--help) sed -n 2,32p "$0"; exit 0 ;;
    *) echo "gpu-pack: unknown argument $1" >&2; exit 2 ;;
  esac
done
LIMIT_MIB=60
say() { printf '[gpu-pack] %s\n' "$*"; }
T0=$(date +%s)

case "$OUT" in "$ROOT"|"$ROOT/"|/) echo "gpu-pack: refusing to use $OUT as the output folder" >&2; exit 2 ;; esac
for tool in node tar xz; do command -v $tool >/dev/null || { echo "gpu-pack: $tool not found" >&2; exit 2; }; done
NODE=$(command -v node)
NODE_BIN=$(realpath "$NODE")

rm -rf "$OUT"
mkdir -p "$OUT/build/Release" "$OUT/scripts" "$OUT/train"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/invad-gpu-pack-XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# ---- 1. TypeScript into the pack ----------------------------------------------
say "compiling TypeScript into $OUT/dist"
"$ROOT/node_modules/.bin/tsc" -p "$ROOT/tsconfig.json" --outDir "$OUT/dist"
cp "$ROOT/package.json" "$OUT/package.json"
cp "$ROOT/scripts/gpu-check.sh" "$OUT/scripts/gpu-check.sh"
cp "$ROOT"/train/*.py "$OUT/train/"

# ---- 2. the addon with CUDA, in its own build folder ------------------------------
say "building the addon with CUDA into $BUILD (cmake-js, -DINVAD_CUDA=ON)"
if ! "$ROOT/node_modules/.bin/cmake-js" compile --out "$BUILD" --CDINVAD_CUDA=ON >"$WORK/addon-build.log" 2>&1; then
  tail -n 40 "$WORK/addon-build.log"
  echo "gpu-pack: the CUDA addon build failed" >&2
  exit 1
fi
cp "$BUILD/Release/invad.node" "$OUT/build/Release/invad.node"
ADDON_INFO=$("$NODE" -e 'const b=require(process.argv[1]).buildInfo(); if(!b.cuda){console.error("built without CUDA");process.exit(1)} console.log(JSON.stringify(b))' "$OUT/build/Release/invad.node")
say "addon: $ADDON_INFO"

# ---- 3. trace what the GPU check loads ------------------------------------------
# The pack's dist/ resolves packages from the checkout's node_modules (one level
# up) and its addon from the pack (package root = the pack's package.json).
cat >"$WORK/trace.js" <<'EOF'
// Preload: at exit, every module in require.cache and every file mapped into
// the process (shared libraries dlopen'd by addons and by ONNX Runtime).
const fs = require('fs');
process.on('exit', () => {
  const files = new Set(Object.keys(require.cache));
  try {
    for (const line of fs.readFileSync('/proc/self/maps', 'utf8').split('\n')) {
      const i = line.indexOf('/');
      if (i >= 0) files.add(line.slice(i).replace(/ \(deleted\)$/, '').trim());
    }
  } catch {}
  fs.appendFileSync(process.env.INVAD_TRACE_OUT, [...files].join('\n') + '\n');
});
EOF
say "tracing node dist/src/tools/bench/gpu-check.js --cpu-only --quick"
if ! (cd "$WORK" && INVAD_TRACE_OUT="$WORK/trace.txt" INVAD_ADDON_PATH="$OUT/build/Release/invad.node" \
      "$NODE" -r "$WORK/trace.js" "$OUT/dist/src/tools/bench/gpu-check.js" --cpu-only --quick --out "$WORK/trace-report.json" >"$WORK/trace.log" 2>&1); then
  tail -n 30 "$WORK/trace.log"
  echo "gpu-pack: the traced run failed" >&2
  exit 1
fi

# Packages (folders right under node_modules, scoped ones with their scope) that
# the run touched, and the files of each to pack.
"$NODE" - "$ROOT" "$WORK/trace.txt" "$WORK/files.txt" "$WORK/packages.json" <<'EOF'
const fs = require('fs');
const path = require('path');
const [root, traceFile, listFile, pkgFile] = process.argv.slice(2);
const nm = path.join(root, 'node_modules') + path.sep;
const pkgs = new Set();
for (const raw of fs.readFileSync(traceFile, 'utf8').split('\n')) {
  if (!raw) continue;
  let f = raw;
  try { f = fs.realpathSync(raw); } catch {}
  for (const p of [raw, f]) {
    if (!p.startsWith(nm)) continue;
    const parts = p.slice(nm.length).split(path.sep);
    if (parts[0] === '.bin' || parts[0] === '.cache') continue;
    pkgs.add(parts[0].startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]);
  }
}
// Files not worth carrying: docs, source maps, type declarations, other platforms' binaries.
const skip = (rel) =>
  /\.(md|markdown|map)$/i.test(rel) || /\.d\.[cm]?ts$/.test(rel) || /^onnxruntime-node\/bin\/napi-v6\/(?!linux\/x64\/)/.test(rel);
const files = [];
const sizes = {};
const walk = (dir) => {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    const rel = path.relative(path.join(root, 'node_modules'), p);
    if (e.isDirectory()) { walk(p); continue; }
    if (skip(rel.split(path.sep).join('/'))) continue;
    files.push(path.join('node_modules', rel));
    const top = rel.split(path.sep)[0].startsWith('@') ? rel.split(path.sep).slice(0, 2).join('/') : rel.split(path.sep)[0];
    sizes[top] = (sizes[top] ?? 0) + fs.lstatSync(p).size;
  }
};
for (const p of [...pkgs].sort()) walk(path.join(root, 'node_modules', p));
fs.writeFileSync(listFile, files.join('\n') + '\n');
fs.writeFileSync(pkgFile, JSON.stringify(Object.fromEntries([...pkgs].sort().map((p) => [p, sizes[p] ?? 0]))));
EOF
say "node_modules subset: $("$NODE" -p 'Object.entries(JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"))).map(([k,v])=>k+" "+(v/1048576).toFixed(1)+"M").join(", ")' "$WORK/packages.json")"

# ---- 4. the archives ------------------------------------------------------------
export XZ_OPT="-9 -T0"
say "packing node_modules.tar.xz ($(wc -l <"$WORK/files.txt") files)"
tar -C "$ROOT" -cJf "$OUT/node_modules.tar.xz" --owner=0 --group=0 --numeric-owner -T "$WORK/files.txt"
say "packing node.tar.xz ($NODE_BIN, $("$NODE" --version))"
mkdir -p "$WORK/node/.node/bin"
cp "$NODE_BIN" "$WORK/node/.node/bin/node"
tar -C "$WORK/node" -cJf "$OUT/node.tar.xz" --owner=0 --group=0 --numeric-owner .node

# ---- 5. manifest and size -----------------------------------------------------------
COMMIT=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l)
"$NODE" - "$OUT" "$COMMIT" "$DIRTY" "$ADDON_INFO" "$WORK/packages.json" <<'EOF'
const fs = require('fs');
const path = require('path');
const [out, commit, dirty, addon, pkgFile] = process.argv.slice(2);
const size = (f) => fs.statSync(path.join(out, f)).size;
fs.writeFileSync(path.join(out, 'gpu-pack.json'), JSON.stringify({
  createdAt: new Date().toISOString(),
  commit, uncommittedChanges: Number(dirty),
  node: process.version,
  addon: JSON.parse(addon),
  packages: JSON.parse(fs.readFileSync(pkgFile, 'utf8')),
  bytes: { 'node.tar.xz': size('node.tar.xz'), 'node_modules.tar.xz': size('node_modules.tar.xz'), 'build/Release/invad.node': size('build/Release/invad.node') },
  run: 'bash scripts/gpu-check.sh --quick   (from this folder; PATH=/usr/bin:/bin is enough)',
}, null, 2) + '\n');
EOF
BYTES=$(du -sb "$OUT" | cut -f1)
MIB=$(awk -v b="$BYTES" 'BEGIN { printf "%.1f", b / 1048576 }')
say "node.tar.xz $(du -h "$OUT/node.tar.xz" | cut -f1), node_modules.tar.xz $(du -h "$OUT/node_modules.tar.xz" | cut -f1), invad.node $(du -h "$OUT/build/Release/invad.node" | cut -f1), dist $(du -sh "$OUT/dist" | cut -f1)"
if [ "$BYTES" -gt $((LIMIT_MIB * 1048576)) ]; then
  say "$OUT is $MIB MiB: over the $LIMIT_MIB MiB limit"
  exit 1
fi
say "$OUT: $MIB MiB (limit $LIMIT_MIB MiB), built in $(( $(date +%s) - T0 )) s"

# ---- 6. optional: run the check from a copy, as the GPU machine would --------------
if [ $VERIFY = 1 ]; then
  COPY=$(mktemp -d "${TMPDIR:-/tmp}/gpucheck-copy-XXXXXX")
  cp -a "$OUT/." "$COPY/"
  say "verifying from $COPY: env -i PATH=/usr/bin:/bin HOME=/tmp bash scripts/gpu-check.sh --quick"
  t=$(date +%s)
  set +e
  (cd "$COPY" && env -i PATH=/usr/bin:/bin HOME=/tmp bash scripts/gpu-check.sh --quick)
  rc=$?
  set -e
  say "gpu-check exited $rc after $(( $(date +%s) - t )) s; report: $COPY/gpu-check.json"
  exit $rc
fi
