/**
 * Engine benchmark on the CPU: the native C API path (the addon's
 * DeviceResidentPipeline with the CPU provider) against the onnxruntime-node
 * path (runInversion: onnxruntime-node sessions + the addon's sync kernels) on
 * the same bundle, in the same process, with the same ORT library and session
 * settings.
 *
 *   npx tsc -p . && node dist/src/tools/bench/engine-compare.js [--json out.json] [--quick]
 *
 * Per bundle preset, S and batch n, the two paths run interleaved (one call of
 * each per repetition, alternating which goes first) after a warm-up, on the
 * same preprocessed batch. Prints medians, p90s and the ratio
 * onnxruntime-node / native (> 1: native faster), then an end-to-end
 * Detector.scoreBatch throughput per engine. Asserts nothing.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';

import { addonSource, loadAddon, type DeviceResidentPipeline } from '../../binding';
import { Detector } from '../..';
import { loadBundle, type LoadedBundle } from '../../runtime/bundle/load';
import { writeBundle, type BundleContents } from '../../fit/write-bundle';
import { nativePipelineOptions, ortLibraryPath } from '../../runtime/engine/native-engine';
import { runInversion } from '../../runtime/engine/ort-node-inversion';
import { mulberry32 } from '../../util/prng';
import { convBackbone, linearUnet, slowUnet } from '../../fit/onnx/synthetic';
import { inversionSteps } from '../../runtime/schedule';
import { summarize, type Summary } from './stats';

export interface BenchPreset {
  name: string;
  description: string;
  input: number;
  stride: number;
  channels: number;
  /** 'linear': eps = k*x + m*t (almost free, so engine overhead shows); 'matmul': adds MatMul work */
  unet: 'linear' | 'matmul';
}

export const PRESETS: BenchPreset[] = [
  { name: 'tiny', description: '32x32 input, 6x4x4 features, linear UNet (the test bundle)', input: 32, stride: 8, channels: 6, unet: 'linear' },
  {
    name: 'paper-shape',
    description: '256x256 input, 272x16x16 features (the paper feature shape), conv backbone, linear UNet',
    input: 256,
    stride: 16,
    channels: 272,
    unet: 'linear',
  },
  {
    name: 'paper-shape-matmul',
    description: 'as paper-shape, UNet with 8 chained 256x256 MatMuls per sample (compute-bound)',
    input: 256,
    stride: 16,
    channels: 272,
    unet: 'matmul',
  },
];

export function presetContents(p: BenchPreset): BundleContents {
  const side = p.input / p.stride;
  const shape = { channels: p.channels, height: side, width: side };
  return {
    input: { width: p.input, height: p.input, resizeKernel: 'linear' },
    features: shape,
    defaultSteps: 3,
    backbone: {
      bytes: convBackbone({ height: p.input, width: p.input, channels: p.channels, stride: p.stride, seed: 7 }),
      name: 'synthetic-conv',
      taps: ['conv'],
    },
    unet: { bytes: p.unet === 'linear' ? linearUnet({ ...shape, k: 0.7, m: 1e-4 }) : slowUnet({ ...shape, k: 0.7, size: 256, repeats: 8 }) },
    training: { synthetic: true, preset: p.name },
  };
}

export async function makeBundle(dir: string, p: BenchPreset): Promise<LoadedBundle> {
  const out = join(dir, p.name);
  await writeBundle(out, presetContents(p), { overwrite: true });
  return loadBundle(out);
}

export function randomBatch(n: number, plane: number, seed: number): Float32Array {
  const r = mulberry32(seed);
  const out = new Float32Array(n * plane);
  for (let i = 0; i < out.length; i++) out[i] = r() * 4 - 2;
  return out;
}

/** Runs the variants interleaved (rotating order); returns milliseconds per call. */
export async function interleave(variants: Array<() => Promise<unknown>>, warmup: number, reps: number): Promise<Summary[]> {
  const samples = variants.map(() => [] as number[]);
  for (let rep = 0; rep < warmup + reps; rep++) {
    for (let k = 0; k < variants.length; k++) {
      const i = (rep + k) % variants.length;
      const t0 = process.hrtime.bigint();
      await variants[i]();
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (rep >= warmup) samples[i].push(ms);
    }
  }
  return samples.map(summarize);
}

export function machine(): Record<string, unknown> {
  const cpus = os.cpus();
  const addon = loadAddon();
  return {
    cpu: `${cpus[0]?.model ?? 'unknown'} (${cpus.length} logical cores)`,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    onnxruntime: ort.env.versions.node ?? ort.env.versions.common,
    ortLibrary: ortLibraryPath(),
    addon: addon.buildInfo(),
    addonSource: addonSource(),
    cuda: addon.cudaStatus(),
  };
}

interface Row {
  preset: string;
  steps: number;
  batch: number;
  nativeMs: Summary;
  ortNodeMs: Summary;
  /** onnxruntime-node median / native median; > 1 means native is faster */
  ratio: number;
}

async function engineLevel(tmp: string, presets: BenchPreset[], reps: number, warmup: number): Promise<Row[]> {
  const addon = loadAddon();
  const rows: Row[] = [];
  for (const preset of presets) {
    const b = await loadOrMake(tmp, preset);
    const m = b.manifest;
    const plane = 3 * m.input.width * m.input.height;
    const sessionOptions: ort.InferenceSession.SessionOptions = { executionProviders: ['cpu'], graphOptimizationLevel: 'all' };
    const sessions = {
      backbone: await ort.InferenceSession.create(b.backbonePath, sessionOptions),
      unet: await ort.InferenceSession.create(b.unetPath, sessionOptions),
    };
    const config = { backbonePath: b.backbonePath, unetPath: b.unetPath, manifest: m, executionProviders: ['cpu' as const], intraOpThreads: 0 };
    const pipeline: DeviceResidentPipeline = new addon.DeviceResidentPipeline(nativePipelineOptions(config, b.unetPath, ['cpu']));
    try {
      for (const S of [2, 3]) {
        const steps = inversionSteps(S, m.schedule);
        for (const n of [1, 8]) {
          const batch = randomBatch(n, plane, 1000 * S + n);
          // runInversion copies the backbone output; the batch itself is only read.
          const [nat, node] = await interleave(
            [() => pipeline.runAsync(batch, n, steps), () => runInversion(sessions, addon, m, batch, n, steps)],
            warmup,
            reps,
          );
          const row = { preset: preset.name, steps: S, batch: n, nativeMs: nat, ortNodeMs: node, ratio: node.median / nat.median };
          rows.push(row);
          console.log(
            `  ${preset.name.padEnd(20)} S=${S} n=${String(n).padEnd(2)}  native ${nat.median.toFixed(3).padStart(9)} ms (p90 ${nat.p90.toFixed(3)})   onnxruntime-node ${node.median.toFixed(3).padStart(9)} ms (p90 ${node.p90.toFixed(3)})   ratio ${row.ratio.toFixed(2)}x`,
          );
        }
      }
    } finally {
      pipeline.release();
      await sessions.backbone.release();
      await sessions.unet.release();
    }
  }
  return rows;
}

const bundles = new Map<string, LoadedBundle>();
async function loadOrMake(tmp: string, p: BenchPreset): Promise<LoadedBundle> {
  let b = bundles.get(p.name);
  if (!b) bundles.set(p.name, (b = await makeBundle(tmp, p)));
  return b;
}

interface DetectorRow {
  preset: string;
  engine: string;
  images: number;
  batch: number;
  imagesPerSecond: number;
}

async function detectorLevel(tmp: string, preset: BenchPreset, images: number): Promise<DetectorRow[]> {
  const b = await loadOrMake(tmp, preset);
  const dir = join(tmp, preset.name);
  const side = b.manifest.input.width;
  const inputs = Array.from({ length: images }, (_, i) => {
    const r = mulberry32(i + 1);
    return { data: Uint8Array.from({ length: side * side * 3 }, () => Math.floor(r() * 256)), width: side, height: side, channels: 3 as const };
  });
  const rows: DetectorRow[] = [];
  for (const engine of ['onnxruntime-node', 'native', 'onnxruntime-node', 'native'] as const) {
    const det = await Detector.load(dir, { engine, steps: 3 });
    try {
      await det.scoreBatch(inputs.slice(0, 8), { batchSize: 8 });
      const t0 = performance.now();
      await det.scoreBatch(inputs, { batchSize: 8 });
      const s = (performance.now() - t0) / 1000;
      rows.push({ preset: preset.name, engine, images, batch: 8, imagesPerSecond: images / s });
    } finally {
      await det.dispose();
    }
  }
  for (const engine of ['onnxruntime-node', 'native']) {
    const best = Math.max(...rows.filter((r) => r.engine === engine).map((r) => r.imagesPerSecond));
    console.log(`  ${preset.name.padEnd(20)} ${engine.padEnd(17)} ${best.toFixed(1).padStart(8)} images/s (scoreBatch of ${images}, batch 8, S=3, best of 2)`);
  }
  return rows;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const quick = argv.includes('--quick');
  const jsonAt = argv.indexOf('--json');
  const reps = Number(process.env.BENCH_REPS ?? (quick ? 10 : 40));
  const warmup = Number(process.env.BENCH_WARMUP ?? 5);
  const info = machine();
  console.log('invad engine benchmark (CPU): native C API path vs onnxruntime-node path');
  for (const [k, v] of Object.entries(info)) console.log(`  ${k.padEnd(12)} ${typeof v === 'string' ? v : JSON.stringify(v)}`);
  console.log(`  settings     CPU provider, graphOptimizationLevel all, ORT default intra-op threads, ${reps} interleaved reps after ${warmup} warm-up`);
  for (const p of PRESETS) console.log(`  preset       ${p.name}: ${p.description}`);

  const tmp = mkdtempSync(join(os.tmpdir(), 'invad-bench-engine-'));
  try {
    console.log('\nper batch (backbone + S UNet calls + kernels), median ms:');
    const rows = await engineLevel(tmp, PRESETS, reps, warmup);
    const geo = Math.exp(rows.reduce((a, r) => a + Math.log(r.ratio), 0) / rows.length);
    console.log(`\n  geometric mean ratio onnxruntime-node / native: ${geo.toFixed(2)}x (${geo > 1 ? 'native' : 'onnxruntime-node'} faster)`);

    console.log('\nend to end (Detector.scoreBatch, preprocessing included):');
    const det = [...(await detectorLevel(tmp, PRESETS[0], quick ? 32 : 64)), ...(await detectorLevel(tmp, PRESETS[1], quick ? 16 : 32))];
    const result = { machine: info, reps, warmup, engine: rows, detector: det, geometricMeanRatio: geo };
    if (jsonAt >= 0 && argv[jsonAt + 1]) {
      writeFileSync(argv[jsonAt + 1], JSON.stringify(result, null, 2));
      console.log(`\nwrote ${argv[jsonAt + 1]}`);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
