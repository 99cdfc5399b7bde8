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
