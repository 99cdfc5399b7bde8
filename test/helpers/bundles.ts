/** Tiny synthetic bundles whose outputs are known in closed form, plus a plain TS reference pipeline. */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeBundle, type BundleContents } from '../../src/fit/write-bundle';
import { convBackbone, convBackboneWeights, linearUnet, slowUnet } from '../../src/fit/onnx/synthetic';
import { inversionSteps } from '../../src/runtime/schedule';

export interface TinySpec {
  inputSize: number;
  stride: number;
  channels: number;
  k: number;
  m: number;
  seed: number;
  steps: number;
}

export const TINY: TinySpec = { inputSize: 32, stride: 8, channels: 6, k: 0.7, m: 1e-4, seed: 7, steps: 3 };

export function tempDir(prefix = 'invad-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function tinyContents(spec: TinySpec = TINY, overrides: Partial<BundleContents> = {}): BundleContents {
  const side = spec.inputSize / spec.stride;
  return {
    input: { width: spec.inputSize, height: spec.inputSize, resizeKernel: 'linear' },
    features: { channels: spec.channels, height: side, width: side },
    defaultSteps: spec.steps,
    backbone: {
      bytes: convBackbone({ height: spec.inputSize, width: spec.inputSize, channels: spec.channels, stride: spec.stride, seed: spec.seed }),
      name: 'synthetic-conv',
      taps: ['conv'],
    },
    unet: { bytes: linearUnet({ channels: spec.channels, height: side, width: side, k: spec.k, m: spec.m }) },
    training: { synthetic: true },
    ...overrides,
  };
}

export async function writeTinyBundle(dir: string, spec: TinySpec = TINY, overrides: Partial<BundleContents> = {}): Promise<string> {
  const out = join(dir, 'bundle');
  await writeBundle(out, tinyContents(spec, overrides));
  return out;
}

/** A bundle whose UNet takes >= ~250 ms per call but computes eps = k*x exactly. */
export async function writeSlowBundle(dir: string, targetMs: number): Promise<string> {
  const spec = TINY;
  const side = spec.inputSize / spec.stride;
  const out = join(dir, 'slow-bundle');
  await writeBundle(out, {
    ...tinyContents(spec),
    defaultSteps: 1,
    unet: { bytes: slowUnet({ channels: spec.channels, height: side, width: side, k: spec.k, targetMs }) },
  });
  return out;
}

/** Straightforward TS version of the whole pipeline from the normalized image tensor. */
export function referenceScore(tensor: Float32Array, outW: number, outH: number, spec: TinySpec = TINY, steps = spec.steps) {
  const S = spec.inputSize;
  const s = spec.stride;
  const h = S / s;
  const w = S / s;
  const C = spec.channels;
  const { weights, bias } = convBackboneWeights({ height: S, width: S, channels: C, stride: s, seed: spec.seed });
  let x = new Float64Array(C * h * w);
  for (let c = 0; c < C; c++)
    for (let i = 0; i < h; i++)
      for (let j = 0; j < w; j++) {
        let acc = bias[c];
        for (let ci = 0; ci < 3; ci++)
          for (let ki = 0; ki < s; ki++)
            for (let kj = 0; kj < s; kj++) acc += weights[((c * 3 + ci) * s + ki) * s + kj] * tensor[ci * S * S + (i * s + ki) * S + (j * s + kj)];
        x[(c * h + i) * w + j] = acc;
      }
  for (const st of inversionSteps(steps)) {
    const next = new Float64Array(x.length);
    for (let q = 0; q < x.length; q++) {
      const eps = spec.k * x[q] + spec.m * st.t;
      next[q] = st.a * x[q] + st.b * eps;
    }
    x = next;
  }
  const l2 = new Float64Array(h * w);
  let sumSq = 0;
  for (let p = 0; p < h * w; p++) {
    let acc = 0;
    for (let c = 0; c < C; c++) acc += x[c * h * w + p] ** 2;
    l2[p] = Math.sqrt(acc);
    sumSq += acc;
  }
  const spatialRange = Math.max(...l2) - Math.min(...l2);
  const nll = 0.5 * sumSq + 0.5 * C * h * w * Math.log(2 * Math.PI);
  // PyTorch bilinear, align_corners=False
  const map = new Float64Array(outW * outH);
  const src = (d: number, inSize: number, outSize: number) => {
    const v = Math.max(0, (d + 0.5) * (inSize / outSize) - 0.5);
    const i0 = Math.min(Math.floor(v), inSize - 1);
    const i1 = Math.min(i0 + 1, inSize - 1);
    return [i0, i1, v - i0] as const;
  };
  for (let oy = 0; oy < outH; oy++) {
    const [y0, y1, ly] = src(oy, h, outH);
    for (let ox = 0; ox < outW; ox++) {
      const [x0, x1, lx] = src(ox, w, outW);
      map[oy * outW + ox] = (1 - ly) * ((1 - lx) * l2[y0 * w + x0] + lx * l2[y0 * w + x1]) + ly * ((1 - lx) * l2[y1 * w + x0] + lx * l2[y1 * w + x1]);
    }
  }
  return { spatialRange, nll, map, sumSq };
}

/** Rewrites a bundle's manifest.json through `edit`, bypassing the writer's validation. */
export function editManifest(bundle: string, edit: (m: Record<string, any>) => void): void {
  const path = join(bundle, 'manifest.json');
  const m = JSON.parse(readFileSync(path, 'utf8'));
  edit(m);
  writeFileSync(path, JSON.stringify(m));
}
