#!/usr/bin/env node
// `npm run prebuild`: builds the N-API addon with cmake-js (through
// cmake-js-as-node-gyp.js) and lets prebuildify strip it and store it as
//   prebuilds/<platform>-<arch>/invad.napi.<libc>.node
// which node-gyp-build (and so src/binding/index.ts) picks when build/ is absent.
// The "napi" tag marks it runtime- and ABI-agnostic; the libc tag keeps a glibc
// build from being chosen on musl. Note prebuildify moves build/Release/invad.node
// into prebuilds/.
'use strict';

const path = require('path');
const prebuildify = require('prebuildify');

const root = path.resolve(__dirname, '..');
const wrapper = path.join(__dirname, 'cmake-js-as-node-gyp.js');

prebuildify(
  {
    cwd: root,
    name: 'invad.napi',
    napi: true,
    strip: true,
    tagLibc: true,
    // One N-API build serves every Node version; the target only names headers.
    targets: [{ runtime: 'node', target: process.versions.node }],
    // Run the wrapper through node so it needs no executable bit (shell joins the
    // arguments prebuildify appends).
    nodeGyp: `"${process.execPath}" "${wrapper}"`,
    shell: true,
  },
  (err) => {
    if (err) {
      console.error(`prebuild failed: ${err.message || err}`);
      process.exit(1);
    }
    console.log(`prebuild written to ${path.join(root, 'prebuilds', `${process.platform}-${process.arch}`)}`);
  },
);
