#!/usr/bin/env node
// npm "install" script: use the prebuilt addon for this platform when one loads,
// otherwise compile from source with cmake-js (needs cmake and a C++17 compiler;
// CUDA kernels are added when a CUDA toolkit is found).
//
// INVAD_BUILD_FROM_SOURCE=1 (or `npm install --build-from-source`) skips the
// prebuild check and always compiles.
'use strict';

const childProcess = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');

function truthy(value) {
  return value !== undefined && value !== '' && value !== '0' && value.toLowerCase() !== 'false';
}

function prebuildThatLoads() {
  const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  let files = [];
  try {
    files = fs.readdirSync(dir).filter((f) => f.endsWith('.node'));
  } catch {
    return undefined;
  }
  for (const file of files.sort()) {
    const full = path.join(dir, file);
    try {
      const addon = require(full);
      if (typeof addon.ddimLastStepReduce === 'function' && typeof addon.buildInfo === 'function') {
        return { file: full, info: addon.buildInfo() };
      }
      console.log(`invad: ${full} is not a usable invad addon, ignoring it`);
    } catch (err) {
      console.log(`invad: prebuild ${full} does not load here: ${String(err && err.message).split('\n')[0]}`);
    }
  }
  return undefined;
}

// cmake-js downloads Node's headers unless npm's nodedir names a folder that has
// them. Node's own install prefix usually does (official tarballs and distro
// packages ship include/node), so point there and spare offline installs the
// download.
function buildEnv() {
  const env = { ...process.env };
  if (!env.npm_config_nodedir) {
    const prefix = path.resolve(path.dirname(process.execPath), '..');
    if (fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) env.npm_config_nodedir = prefix;
  }
  return env;
}

function build() {
  let cmakeJs;
  try {
    cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
  } catch {
    console.error('invad: cmake-js is not installed, cannot build the native addon from source.');
    return 1;
  }
  console.log('invad: building the native addon from source (cmake-js compile --out build) ...');
  const result = childProcess.spawnSync(process.execPath, [cmakeJs, 'compile', '--out', 'build'], {
    cwd: root,
    env: buildEnv(),
    stdio: 'inherit',
  });
  if (result.error) {
    console.error(`invad: could not run cmake-js: ${result.error.message}`);
    return 1;
  }
  const code = result.status === null ? 1 : result.status;
  if (code === 0) {
    console.log(`invad: built ${path.join(root, 'build', 'Release', 'invad.node')}`);
  } else {
    console.error(
      'invad: building the native addon failed. It needs cmake >= 3.19 and a C++17 compiler ' +
        '(and nvcc for the CUDA kernels, or pass --CDINVAD_CUDA=OFF). See the output above.',
    );
  }
  return code;
}

function main() {
  const forced = truthy(process.env.INVAD_BUILD_FROM_SOURCE) || truthy(process.env.npm_config_build_from_source);
  if (!forced) {
    const found = prebuildThatLoads();
    if (found) {
      console.log(`invad: using prebuilt addon ${path.relative(root, found.file)} (v${found.info.version}, cuda: ${found.info.cuda})`);
      return 0;
    }
    console.log(`invad: no prebuilt addon loads on ${process.platform}-${process.arch}, building from source`);
  } else {
    console.log('invad: INVAD_BUILD_FROM_SOURCE set, building from source');
  }
  return build();
}

process.exitCode = main();
