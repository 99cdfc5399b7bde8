#!/usr/bin/env node
// Stands in for node-gyp when prebuildify builds the addon. prebuildify runs
//   <node-gyp> rebuild --target=<version> --devdir=<dir> --arch=<arch> [--runtime=electron] --release|--debug
// and then takes the first .node file in build/Release (or build/Debug). This
// runs the equivalent `cmake-js rebuild`, which writes build/<config>/invad.node.
// --devdir and --dist-url only matter to node-gyp's header download and are
// ignored; N-API builds do not depend on the target's headers.
//
// INVAD_CUDA=ON|OFF, when set, is passed on as --CDINVAD_CUDA.
'use strict';

const childProcess = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');

function parse(argv) {
  const opts = { command: 'rebuild', debug: false };
  for (const arg of argv) {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(arg);
    if (!m) {
      opts.command = arg;
      continue;
    }
    const [, key, value] = m;
    if (key === 'debug') opts.debug = true;
    else if (key === 'release') opts.debug = false;
    else if (key === 'target') opts.target = value;
    else if (key === 'arch') opts.arch = value;
    else if (key === 'runtime') opts.runtime = value;
    // devdir, dist-url, build_v8_with_gn: node-gyp only
  }
  return opts;
}

function main() {
  const opts = parse(process.argv.slice(2));
  const commands = { rebuild: 'rebuild', build: 'compile', configure: 'configure', clean: 'clean' };
  const command = commands[opts.command];
  if (!command) {
    console.error(`cmake-js-as-node-gyp: unsupported command "${opts.command}"`);
    return 1;
  }
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
  const args = [cmakeJs, command, '--out', 'build', '--runtime', opts.runtime || 'node'];
  if (opts.target) args.push('--runtime-version', opts.target);
  if (opts.arch) args.push('--arch', opts.arch);
  if (opts.debug) args.push('--debug');
  if (process.env.INVAD_CUDA) args.push(`--CDINVAD_CUDA=${process.env.INVAD_CUDA}`);
  console.log(`cmake-js-as-node-gyp: cmake-js ${args.slice(1).join(' ')}`);
  // As in install.js: use the running Node's headers when it ships them, so
  // cmake-js does not need to download them.
  const env = { ...process.env };
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (!env.npm_config_nodedir && fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) {
    env.npm_config_nodedir = prefix;
  }
  const result = childProcess.spawnSync(process.execPath, args, { cwd: root, env, stdio: 'inherit' });
  if (result.error) {
    console.error(`cmake-js-as-node-gyp: ${result.error.message}`);
    return 1;
  }
  return result.status === null ? 1 : result.status;
}

process.exitCode = main();
