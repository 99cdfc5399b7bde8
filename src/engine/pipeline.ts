/**
 * The scoring pipeline on one batch, inside the engine worker. The worker is
 * already off the caller's thread, so it calls the addon's sync kernels: at
 * 8x272x16x16 they take ~0.13 ms where the async hand-off alone costs more
 * (`npm run bench:kernels`).
 *
 * backbone -> S x (UNet, fused DDIM step) -> fused last step + channel-norm
 * reduction -> bilinear resize of each l2 map to its image's size.
 */
import { performance } from 'node:perf_hooks';
import * as ort from 'onnxruntime-node';
import type { InvadAddon } from '../../binding/addon-types';
import type { Manifest } from '../bundle/manifest';
import { serializeError, InferenceError } from '../errors';
import type { InversionStep } from '../schedule';
import { checkRunDims } from './model-check';
import type { BatchTimings, SampleOutput } from './protocol';

export interface PipelineSessions {
  backbone: ort.InferenceSession;
  unet: ort.InferenceSession;
}

const HALF_LOG_2PI = 0.5 * Math.log(2 * Math.PI);

function outputOf(result: ort.InferenceSession.OnnxValueMapType, name: string, file: string): ort.Tensor {
  const t = result[name];
  if (!t) throw new InferenceError(`${file} returned no output named "${name}"`);
  if (t.type !== 'float32') throw new InferenceError(`${file} output "${name}" is ${t.type}, expected float32`);
  return t;
}

/** Runs the backbone and returns the clean features, n x C x h x w. */
export async function extractFeatures(session: ort.InferenceSession, m: Manifest, batch: Float32Array, n: number): Promise<Float32Array> {
  const { backbone } = m.models;
  const input = new ort.Tensor('float32', batch, [n, 3, m.input.height, m.input.width]);
  const out = outputOf(await session.run({ [backbone.inputName]: input }), backbone.outputName, backbone.file);
  checkRunDims(backbone.file, '/features', backbone.outputName, out.dims, [n, m.features.channels, m.features.height, m.features.width]);
  // A fresh copy: the kernels update it in place across steps.
  return new Float32Array(out.data as Float32Array);
}

export interface PipelineOutput {
  samples: SampleOutput[];
  timings: BatchTimings;
}

export async function runPipeline(
  sessions: PipelineSessions,
  addon: InvadAddon,
  m: Manifest,
  batch: Float32Array,
  n: number,
  sizes: Array<{ width: number; height: number }>,
  steps: InversionStep[],
): Promise<PipelineOutput> {
  const tStart = performance.now();
  const x = await extractFeatures(sessions.backbone, m, batch, n);
  const tBackbone = performance.now();
  const { channels: c, height: h, width: w } = m.features;
  const shape = { n, c, h, w };
  const dims = [n, c, h, w];
  const { unet } = m.models;
  const unetMs: number[] = [];
  let kernelMs = 0;
  let reduced: ReturnType<InvadAddon['ddimLastStepReduce']> | undefined;

  for (let i = 0; i < steps.length; i++) {
    const step = steps[i];
    const t0 = performance.now();
    const tTensor = new ort.Tensor('int64', new BigInt64Array(n).fill(BigInt(step.t)), [n]);
    const result = await sessions.unet.run({ [unet.xName]: new ort.Tensor('float32', x, dims), [unet.tName]: tTensor });
    const eps = outputOf(result, unet.outputName, unet.file);
    checkRunDims(unet.file, '/features', unet.outputName, eps.dims, dims);
    const t1 = performance.now();
    const epsData = eps.data as Float32Array;
    if (i === steps.length - 1) {
      reduced = addon.ddimLastStepReduce(x, epsData, step.a, step.b, shape);
    } else {
      addon.ddimStep(x, epsData, step.a, step.b);
    }
    unetMs.push(t1 - t0);
    kernelMs += performance.now() - t1;
  }
  if (!reduced) throw new InferenceError('inversion ran no steps');

  const tResize = performance.now();
  const plane = h * w;
  const d = c * h * w;
  const samples = sizes.map((size, i): SampleOutput => {
    const sumSq = reduced!.sumSq[i];
    const l2Min = reduced!.min[i];
    const l2Max = reduced!.max[i];
    const l2 = reduced!.l2.subarray(i * plane, (i + 1) * plane);
    const base = { spatialRange: l2Max - l2Min, nll: 0.5 * sumSq + d * HALF_LOG_2PI, l2Min, l2Max };
    if (!Number.isFinite(sumSq) || !Number.isFinite(l2Max) || !Number.isFinite(l2Min)) {
      const error = new InferenceError(`the model produced non-finite values for sample ${i} (NaN or Infinity in the inverted latent)`);
      return { ...base, map: new Float32Array(0), error: serializeError(error) };
    }
    const map = addon.resizeBilinear(l2, 1, h, w, size.height, size.width);
    return { ...base, map };
  });
  const tEnd = performance.now();
  return {
    samples,
    timings: { backboneMs: tBackbone - tStart, unetMs, kernelMs, resizeMs: tEnd - tResize, engineMs: tEnd - tStart },
  };
}
