/** Tests that need ../shared or PyTorch: skipped loudly on a dev machine, failed in CI (CI always has both). */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../src/util/package-info';

export const SHARED = join(packageRoot(), '..', 'shared');
export const MOBILENET = join(SHARED, 'models', 'mobilenetv2-12-int8.onnx');

function require_(what: string, present: boolean): boolean {
  if (present) return true;
  if (process.env.CI) throw new Error(`${what} is required in CI but missing`);
  console.warn(`\n*** SKIPPING: ${what} is missing on this machine; CI runs these tests ***\n`);
  return false;
}

export function hasShared(path: string = MOBILENET): boolean {
  return require_(`${path} (../shared)`, existsSync(path));
}

let torchChecked: boolean | undefined;
export function hasTorch(): boolean {
  torchChecked ??= ['python3', '/usr/bin/python3'].some((py) => spawnSync(py, ['-c', 'import torch, numpy, onnx'], { stdio: 'ignore' }).status === 0);
  return require_('PyTorch (python3-torch, python3-numpy, python3-onnx)', torchChecked);
}
