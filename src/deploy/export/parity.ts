/**
 * Runs the exported graph with onnxruntime-node and compares it with Detector on the same uint8
 * pixels: `invad export` checks every graph this way before writing it, and the tests use it.
 */
import * as ort from 'onnxruntime-node';
import { Detector } from '../../runtime/detector';
import type { InputSpec } from '../../runtime/bundle/manifest';
import type { RawImage } from '../../runtime/preprocess';
import { IMAGE_INPUT, OUTPUT } from '../../runtime/remote/tensor-spec';
import { SCORES, type ScoreDefinition } from '../../runtime/scores';
import { mulberry32 } from '../../util/prng';
import { InferenceError } from '../../util/errors';

/** The largest relative difference the export accepts between the graph and Detector. */
export const PARITY_TOLERANCE = 1e-4;

/** The outputs of one run of the exported graph, per image. */
export interface ExportedScores {
  score: Float32Array;
  isAnomalous: boolean[];
  /** n x h x w, the score definition's feature-grid map */
  map: Float32Array;
  spatialRange: Float32Array;
  nll: Float32Array;
  latentGaussian?: Float32Array;
}

function output(result: ort.InferenceSession.OnnxValueMapType, name: string): ort.Tensor {
  const t = result[name];
  if (!t) throw new InferenceError(`the exported graph returned no output named "${name}"`);
  return t;
}

/** Runs the exported graph on `n` images of uint8 RGB pixels, n x H x W x 3. */
export async function runExported(
  session: ort.InferenceSession,
  pixels: Uint8Array,
  n: number,
  size: Pick<InputSpec, 'width' | 'height'>,
): Promise<ExportedScores> {
  const r = await session.run({ [IMAGE_INPUT]: new ort.Tensor('uint8', pixels, [n, size.height, size.width, 3]) });
  const f32 = (name: string) => output(r, name).data as Float32Array;
  return {
    score: f32(OUTPUT.score),
    isAnomalous: Array.from(output(r, OUTPUT.isAnomalous).data as Uint8Array, (v) => v !== 0),
    map: f32(OUTPUT.map),
    spatialRange: f32(OUTPUT.spatialRange),
    nll: f32(OUTPUT.nll),
    ...(session.outputNames.includes(OUTPUT.latentGaussian) ? { latentGaussian: f32(OUTPUT.latentGaussian) } : {}),
  };
}

/**
 * |a - b| relative to the larger magnitude, or to `floor` when both are smaller (0 when a and b
 * are both 0; Infinity when only one is NaN).
 */
export function relativeDifference(a: number, b: number, floor = 0): number {
  if (Number.isNaN(a) || Number.isNaN(b)) return Number.isNaN(a) && Number.isNaN(b) ? 0 : Infinity;
  const scale = Math.max(Math.abs(a), Math.abs(b), floor);
  return scale === 0 ? 0 : Math.abs(a - b) / scale;
}

/**
 * Image scores are normalized (robust z-scores and their sums), so a normal part's score sits
 * near 0, where any relative difference is unbounded: below 1 in magnitude they are compared
 * in absolute terms. The raw parts and the maps are compared purely relatively.
 */
export const SCORE_FLOOR = 1;

/** Seeded test images at the model's input size: a gradient plus noise of growing amplitude. */
export function parityImages(size: Pick<InputSpec, 'width' | 'height'>, count: number, seed = 1): RawImage[] {
  const rand = mulberry32(seed);
  return Array.from({ length: count }, (_, k) => {
    const data = new Uint8Array(size.width * size.height * 3);
    const amplitude = 16 + (200 * k) / Math.max(1, count - 1);
    for (let y = 0; y < size.height; y++)
      for (let x = 0; x < size.width; x++)
        for (let c = 0; c < 3; c++) {
          const base = 128 + 60 * Math.sin((x + 2 * c) / 5) * Math.cos(y / 7);
          data[(y * size.width + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(base + amplitude * (rand() - 0.5))));
        }
    return { data, width: size.width, height: size.height, channels: 3 };
  });
}

export interface ParityReport {
  images: number;
  /** the largest relative difference of each output over the images (map: over every value; score: see SCORE_FLOOR) */
  maxRelative: { score: number; spatialRange: number; nll: number; latentGaussian: number | null; map: number };
  /** images whose is_anomalous differs from Detector's isAnomalous */
  decisionMismatches: number;
  /** every difference within PARITY_TOLERANCE and no decision differs */
  ok: boolean;
}

export interface ParityOptions {
  steps: number;
  scoreDefinition: ScoreDefinition;
  threshold?: number;
  /** images per run of both paths; default all of them in one run */
  batchSize?: number;
}

/**
 * Scores `images` (RGB at the bundle's input size) with Detector and with the exported graph,
 * and reports how far apart they are.
 * @param model - the exported ONNX model's bytes
 */
export async function compareWithDetector(bundleDir: string, model: Uint8Array, images: readonly RawImage[], options: ParityOptions): Promise<ParityReport> {
  const { steps, scoreDefinition, threshold } = options;
  const detector = await Detector.load(bundleDir, { steps, scoreDefinition, ...(threshold === undefined ? {} : { threshold }), verifyHashes: false });
  const session = await ort.InferenceSession.create(model);
  try {
    const size = detector.info().inputSize;
    const batchSize = options.batchSize ?? images.length;
    const mapName = SCORES[scoreDefinition].map;
    const max = { score: 0, spatialRange: 0, nll: 0, latentGaussian: null as number | null, map: 0 };
    let decisionMismatches = 0;
    for (let from = 0; from < images.length; from += batchSize) {
      const chunk = images.slice(from, from + batchSize);
      const pixels = new Uint8Array(chunk.length * size.width * size.height * 3);
      chunk.forEach((img, i) => pixels.set(img.data, i * img.data.length));
      const [want, got] = await Promise.all([
        detector.scoreBatch(chunk, { allMaps: true, batchSize: chunk.length }),
        runExported(session, pixels, chunk.length, size),
      ]);
      const plane = got.map.length / chunk.length;
      want.forEach((r, i) => {
        max.score = Math.max(max.score, relativeDifference(r.score, got.score[i], SCORE_FLOOR));
        max.spatialRange = Math.max(max.spatialRange, relativeDifference(r.components.spatialRange, got.spatialRange[i]));
        max.nll = Math.max(max.nll, relativeDifference(r.components.nll, got.nll[i]));
        if (got.latentGaussian || r.components.latentGaussian !== undefined) {
          const d = relativeDifference(r.components.latentGaussian ?? NaN, got.latentGaussian?.[i] ?? NaN);
          max.latentGaussian = Math.max(max.latentGaussian ?? 0, d);
        }
        const map = r.featureMaps[mapName];
        if (!map || map.length !== plane) throw new InferenceError(`Detector gave no ${mapName} feature map of ${plane} values to compare with`);
        for (let j = 0; j < plane; j++) max.map = Math.max(max.map, relativeDifference(map[j], got.map[i * plane + j]));
        if (r.isAnomalous !== got.isAnomalous[i]) decisionMismatches++;
      });
    }
    const worst = Math.max(max.score, max.spatialRange, max.nll, max.latentGaussian ?? 0, max.map);
    return { images: images.length, maxRelative: max, decisionMismatches, ok: worst <= PARITY_TOLERANCE && decisionMismatches === 0 };
  } finally {
    await Promise.all([detector.dispose(), session.release()]);
  }
}
