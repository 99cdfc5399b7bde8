/**
 * Feature extraction for training and calibration. It runs the same
 * preprocessing (preprocess.ts) and the same backbone call (engine/pipeline.ts,
 * in the engine worker) as Detector, so train-time and test-time features are
 * identical by construction; test/features.test.ts checks it.
 */
import type { FeatureSpec, InputSpec, Manifest } from '../runtime/bundle/manifest';
import { buildManifest } from './write-bundle';
import { EngineClient } from '../runtime/engine/client';
import type { ExecutionProvider } from '../runtime/engine/protocol';
import { InvalidInputError } from '../util/errors';
import { preprocess, type PreprocessedImage, stackTensors } from '../runtime/preprocess';

export interface BackboneSpec {
  input: Pick<InputSpec, 'width' | 'height'> & Partial<InputSpec>;
  features: FeatureSpec;
  inputName?: string;
  outputName?: string;
}

export interface ExtractOptions {
  /** images per backbone run; default 16 */
  batchSize?: number;
  /** fail on the first unreadable image instead of skipping it; default false */
  strict?: boolean;
  onProgress?: (done: number, total: number) => void;
}

export interface ExtractedFeatures {
  /** kept images x C x h x w */
  features: Float32Array;
  shape: [number, number, number, number];
  /** the images that were read, in order */
  files: string[];
  /** the images that could not be read, with why */
  skipped: Array<{ file: string; error: string }>;
}

/** A manifest for a backbone alone, so the engine can check and run it before a bundle exists. */
function backboneManifest(spec: BackboneSpec): Manifest {
  const none = { bytes: new Uint8Array(0) };
  return buildManifest(
    {
      input: spec.input,
      features: spec.features,
      backbone: { ...none, name: 'extraction', inputName: spec.inputName, outputName: spec.outputName },
      unet: none,
    },
    { backbone: '0'.repeat(64), unet: '0'.repeat(64) },
  );
}

export class FeatureExtractor {
  private constructor(
    private readonly engine: EngineClient,
    readonly manifest: Manifest,
  ) {}

  static async open(backbonePath: string, spec: BackboneSpec, executionProviders: ExecutionProvider[] = ['cpu']): Promise<FeatureExtractor> {
    const manifest = backboneManifest(spec);
    const { client } = await EngineClient.start({ backbonePath, unetPath: null, manifest, executionProviders, intraOpThreads: 0 });
    return new FeatureExtractor(client, manifest);
  }

  get featureShape(): FeatureSpec {
    return this.manifest.features;
  }

  async extract(files: readonly string[], options: ExtractOptions = {}): Promise<ExtractedFeatures> {
    const batchSize = options.batchSize ?? 16;
    const { channels, height, width } = this.manifest.features;
    const per = channels * height * width;
    const chunks: Float32Array[] = [];
    const kept: string[] = [];
    const skipped: ExtractedFeatures['skipped'] = [];
    const prepare = (from: number) => Promise.allSettled(files.slice(from, from + batchSize).map((f) => preprocess(f, this.manifest.input, f)));
    // Decode batch k+1 while the backbone runs batch k.
    let next = prepare(0);
    for (let from = 0; from < files.length; from += batchSize) {
      const settled = await next;
      next = from + batchSize < files.length ? prepare(from + batchSize) : Promise.resolve([]);
      const ok: PreprocessedImage[] = [];
      settled.forEach((s, j) => {
        const file = files[from + j];
        if (s.status === 'fulfilled') {
          ok.push(s.value);
          kept.push(file);
        } else if (options.strict) {
          throw s.reason instanceof InvalidInputError ? s.reason : new InvalidInputError(file, String(s.reason));
        } else {
          skipped.push({ file, error: (s.reason as Error).message });
        }
      });
      if (ok.length > 0) {
        chunks.push(await this.engine.features(stackTensors(ok), ok.length));
      }
      options.onProgress?.(Math.min(files.length, from + batchSize), files.length);
    }
    const features = new Float32Array(kept.length * per);
    let offset = 0;
    for (const c of chunks) {
      features.set(c, offset);
      offset += c.length;
    }
    return { features, shape: [kept.length, channels, height, width], files: kept, skipped };
  }

  close(): Promise<void> {
    return this.engine.close();
  }
}

/** Per-channel mean and standard deviation over samples and positions (float64 accumulation). */
export function channelStats(features: Float32Array, shape: readonly [number, number, number, number]): { mean: Float32Array; std: Float32Array } {
  const [n, c, h, w] = shape;
  const plane = h * w;
  const mean = new Float32Array(c);
  const std = new Float32Array(c);
  for (let ch = 0; ch < c; ch++) {
    let sum = 0;
    let sq = 0;
    for (let i = 0; i < n; i++) {
      const base = (i * c + ch) * plane;
      for (let p = 0; p < plane; p++) {
        const v = features[base + p];
        sum += v;
        sq += v * v;
      }
    }
    const count = n * plane;
    const m = sum / count;
    mean[ch] = m;
    std[ch] = Math.sqrt(Math.max(0, sq / count - m * m));
  }
  return { mean, std };
}

// ---------------------------------------------------------------- the feature scaling record

/**
 * How the features in a work folder were scaled before the UNet trained on them,
 * as `fit` writes it to the work folder's features.json (`scaling`). `fit --resume`
 * compares it with the scaling asked for, so a checkpoint never goes on training
 * on differently scaled data. Bump `version` when a field's meaning changes.
 */
export interface FeatureScalingRecord {
  version: 1;
  /** `none`: the backbone's raw features; `standardize`: per-channel (x - mean) / std of the training features */
  normalization: 'none' | 'standardize';
  /** the standard deviation of every standardized channel; null for `none` */
  scale: number | null;
}

export const FEATURE_SCALING_VERSION = 1;

export function featureScalingRecord(normalization: 'none' | 'standardize', scale = 1): FeatureScalingRecord {
  return { version: FEATURE_SCALING_VERSION, normalization, scale: normalization === 'none' ? null : scale };
}

export function sameFeatureScaling(a: FeatureScalingRecord, b: FeatureScalingRecord): boolean {
  return a.normalization === b.normalization && a.scale === b.scale;
}

/** One line for messages: `none` or `standardize (std 0.5)`. */
export function formatFeatureScaling(r: FeatureScalingRecord): string {
  return r.normalization === 'none' ? 'none' : `standardize (std ${r.scale})`;
}

/** The sentences invad up to 0.1.0 wrote as features.json's `normalization` (see readFeatureScaling). */
const LEGACY_NONE = "none: the backbone's raw features";
const LEGACY_STANDARDIZE = /^per-channel mean\/std of the training features(?: scaled to std ([0-9.eE+-]+))?, baked into backbone\.onnx$/;

/**
 * The scaling a work folder's features.json records. Work folders written before
 * the record existed carry a sentence in `normalization` instead (or nothing, from
 * before feature normalization was an option, when fit always standardized to
 * std 1); those are mapped to the record. Returns an Error (not thrown) for a
 * record this version cannot read, so the caller can word the refusal.
 */
export function readFeatureScaling(saved: { scaling?: unknown; normalization?: unknown }): FeatureScalingRecord | Error {
  const rec = saved.scaling;
  if (rec !== undefined) {
    const r = rec as Partial<FeatureScalingRecord> | null;
    if (r && typeof r === 'object' && typeof r.version === 'number' && r.version > FEATURE_SCALING_VERSION) {
      return new Error(`its feature scaling record is version ${r.version}, written by a newer invad (this one reads version ${FEATURE_SCALING_VERSION})`);
    }
    if (r && r.version === 1 && r.normalization === 'none' && r.scale === null) return featureScalingRecord('none');
    if (r && r.version === 1 && r.normalization === 'standardize' && typeof r.scale === 'number' && r.scale > 0)
      return featureScalingRecord('standardize', r.scale);
    return new Error(`its feature scaling record ${JSON.stringify(rec)} is not valid`);
  }
  const sentence = saved.normalization;
  if (sentence === undefined) return featureScalingRecord('standardize', 1);
  if (sentence === LEGACY_NONE) return featureScalingRecord('none');
  const m = typeof sentence === 'string' ? LEGACY_STANDARDIZE.exec(sentence) : null;
  const scale = m ? (m[1] === undefined ? 1 : Number(m[1])) : NaN;
  if (m && scale > 0) return featureScalingRecord('standardize', scale);
  return new Error(`its feature normalization ${JSON.stringify(sentence)} is not one invad wrote`);
}
