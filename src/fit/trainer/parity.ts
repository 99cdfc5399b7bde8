/**
 * Checks the exported UNet in onnxruntime-node against PyTorch's own output on
 * the same inputs (parity_*.npy, written by the trainer). Three samples of a
 * small network: a short, one-off run, done in this thread.
 */
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { readNpy } from '../../util/npy';

export async function checkExportParity(onnxPath: string, dir: string): Promise<number> {
  const [x, t, eps] = await Promise.all(['parity_x.npy', 'parity_t.npy', 'parity_eps.npy'].map((f) => readNpy(join(dir, f))));
  const session = await ort.InferenceSession.create(onnxPath);
  try {
    const out = await session.run({
      x: new ort.Tensor('float32', x.data as Float32Array, x.shape),
      t: new ort.Tensor('int64', t.data as BigInt64Array, t.shape),
    });
    const got = out.eps.data as Float32Array;
    const want = eps.data as Float32Array;
    if (got.length !== want.length) return Infinity;
    let worst = 0;
    for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
    return Number.isNaN(worst) ? Infinity : worst;
  } finally {
    await session.release();
  }
}
