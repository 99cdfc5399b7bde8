#!/usr/bin/env node
// Runs the trainer's pytest suite with the first Python that has PyTorch.
// In CI (env CI set) a missing PyTorch is a failure; elsewhere the suite is
// skipped with a loud message, so the Node tests stay runnable without it.
'use strict';
const { spawnSync } = require('child_process');
const path = require('path');

const candidates = [process.env.INVAD_PYTHON, 'python3', '/usr/bin/python3'].filter(Boolean);
const python = candidates.find((py) => spawnSync(py, ['-c', 'import torch, numpy, onnx, pytest'], { stdio: 'ignore' }).status === 0);
if (!python) {
  const msg =
    `PyTorch, numpy, onnx and pytest not found (tried ${candidates.join(', ')}): ` +
    'sudo apt-get install -y --no-install-recommends python3-torch python3-numpy python3-onnx python3-pytest';
  if (process.env.CI) {
    console.error(`test-python: ${msg}`);
    process.exit(1);
  }
  console.error(`\n*** SKIPPING the trainer's Python tests: ${msg} ***\n`);
  process.exit(0);
}
const r = spawnSync(python, ['-m', 'pytest', 'train/tests', '-q'], { stdio: 'inherit', cwd: path.resolve(__dirname, '..') });
process.exit(r.status === null ? 1 : r.status);
