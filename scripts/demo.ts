/**
 * `npm run demo`: builds a small synthetic bundle (no downloads), calibrates it
 * on synthetic normal textures, then scores normal and scratched textures and
 * prints one line each. The backbone is a hand-made high-pass conv and the
 * "UNet" is eps = k*x, not a trained model: it shows the API and the pipeline,
 * not the method's accuracy.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { Detector, loadBundle } from '../src';
import { writeBundle, writeManifest } from '../src/fit';
import { calibrateStep, calibrationSpec } from '../src/fit/calibrate';
import { convBackbone, linearUnet } from '../src/fit/onnx/synthetic';
import { mulberry32 } from '../src/util/prng';

const SIZE = 64;
const STRIDE = 8;
const CHANNELS = 8;

/** A 64 x 64 gray texture (a sine grating with noise), with a 12 px dark scratch when `scratch`. */
export function texture(seed: number, scratch: boolean): Buffer {
  const rand = mulberry32(seed);
  const phase = rand() * Math.PI * 2;
  const px = Buffer.alloc(SIZE * SIZE);
  const [x0, y0] = [8 + rand() * 40, 8 + rand() * 40];
  const angle = rand() * Math.PI;
  for (let y = 0; y < SIZE; y++)
    for (let x = 0; x < SIZE; x++) {
      let v = 128 + 20 * Math.sin((2 * Math.PI * x) / 16 + phase) + 16 * (rand() - 0.5);
      // a thin dark scratch, 12 px long
      const along = (x - x0) * Math.cos(angle) + (y - y0) * Math.sin(angle);
      const across = -(x - x0) * Math.sin(angle) + (y - y0) * Math.cos(angle);
      if (scratch && Math.abs(across) < 1.2 && along > 0 && along < 12) v = 25;
      px[y * SIZE + x] = Math.max(0, Math.min(255, Math.round(v)));
    }
  return px;
}

function highPassWeights(seed: number): Float32Array {
  // Zero-mean kernels: they answer to local contrast, not to overall brightness.
  const rand = mulberry32(seed);
  const k = STRIDE * STRIDE * 3;
  const w = new Float32Array(CHANNELS * k);
  for (let c = 0; c < CHANNELS; c++) {
    let mean = 0;
    for (let i = 0; i < k; i++) mean += w[c * k + i] = rand() - 0.5;
    for (let i = 0; i < k; i++) w[c * k + i] -= mean / k;
  }
  return w;
}

/** Writes the uncalibrated demo bundle to `model` (also used by test/scores-pinned.test.ts). */
export async function writeDemoBundle(model: string): Promise<void> {
  const side = SIZE / STRIDE;
  await writeBundle(
    model,
    {
      input: { width: SIZE, height: SIZE, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] },
      features: { channels: CHANNELS, height: side, width: side },
      defaultSteps: 3,
      score: 'combined',
      backbone: {
        bytes: convBackbone({ height: SIZE, width: SIZE, channels: CHANNELS, stride: STRIDE, weights: highPassWeights(1), bias: new Float32Array(CHANNELS) }),
        name: 'demo-highpass-conv',
        taps: ['conv'],
      },
      unet: { bytes: linearUnet({ channels: CHANNELS, height: side, width: side, k: 0.5, m: 0 }) },
      training: { note: 'synthetic demo bundle: hand-made backbone, eps = 0.5*x, no training' },
    },
    { overwrite: true },
  );
}

async function main(): Promise<void> {
  const root = resolve(process.argv[2] ?? 'demo');
  const model = join(root, 'model');
  const images = join(root, 'images');
  mkdirSync(images, { recursive: true });
  await writeDemoBundle(model);

  const gray = (px: Buffer) => ({ data: px, width: SIZE, height: SIZE, channels: 1 as const });
  const det = await Detector.load(model, { steps: 3 });
  const normals = Array.from({ length: 100 }, (_, i) => gray(texture(1000 + i, false)));
  const fit = await det.scoreBatch(normals, { batchSize: 8 });
  await det.dispose();
  const bundle = await loadBundle(model);
  const calibration = calibrationSpec([calibrateStep(3, fit)], { steps: 3, definition: 'combined', samples: fit.length, falseAlarmRate: 0.01 });
  await writeManifest(model, { ...bundle.manifest, calibration });

  const calibrated = await Detector.load(model);
  const tests = [...Array.from({ length: 5 }, (_, i) => ['normal', i] as const), ...Array.from({ length: 5 }, (_, i) => ['scratch', i] as const)];
  console.log(`model: ${model} (calibrated on ${fit.length} normals, image threshold ${calibration.imageThreshold?.toFixed(3)})`);
  for (const [kind, i] of tests) {
    const file = join(images, `${kind}_${i}.png`);
    writeFileSync(
      file,
      await sharp(texture(5000 + i, kind === 'scratch'), { raw: { width: SIZE, height: SIZE, channels: 1 } })
        .png()
        .toBuffer(),
    );
    const r = await calibrated.score(file);
    console.log(
      `${file}  score ${r.score.toFixed(3).padStart(8)}  ${r.isAnomalous ? 'ANOMALOUS' : 'normal   '}  SP ${r.components.spatialRange.toFixed(3)}  NLL ${r.components.nll.toFixed(1)}  ${r.timings.totalMs.toFixed(1)} ms`,
    );
  }
  await calibrated.dispose();
  console.log(`\nTry: node dist/src/tools/cli/main.js score ${images} --model ${model} --out ${join(root, 'overlays')}`);
}

// Only when run as a script: the test imports the bundle and textures from here.
if (require.main === module) {
  main().catch((err) => {
    console.error(err);
    process.exitCode = 1;
  });
}
