/**
 * `exportPipeline()`: a bundle at one S as one ONNX graph (graph.ts), written as a plain model
 * or as a Triton model repository, after an optional check against Detector (parity.ts).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeModel, encodeModel } from '../../fit/onnx/proto';
import { sha256Bytes } from '../../runtime/bundle/hash';
import { checkScoreSetup, loadBundle, MANIFEST_FILE } from '../../runtime/bundle/load';
import type { Manifest } from '../../runtime/bundle/manifest';
import { calibrationAt, imageThresholdAt } from '../../runtime/calibration';
import type { LatentGaussian } from '../../runtime/latent-gaussian';
import { IMAGE_INPUT, MODEL_NAME, type TensorSpec } from '../../runtime/remote/tensor-spec';
import { inversionSteps, maxSteps } from '../../runtime/schedule';
import { SCORE_DEFINITIONS, SCORES, type ScoreDefinition } from '../../runtime/scores';
import { readNpy } from '../../util/npy';
import { packageVersion } from '../../util/package-info';
import { ExportError } from '../../util/errors';
import { intInRange, invalidArgument, numberInRange, oneOf, pathString, plainObject } from '../../util/validate';
import { buildPipelineModel, unsupportedDefinition } from './graph';
import { compareWithDetector, type ParityReport, parityImages } from './parity';
import { resolveTritonOptions, tritonConfig, type TritonOptions } from './triton';

/** The export's layout version, in the metadata; bump it when the graph's contract changes. */
export const EXPORT_FORMAT_VERSION = 1;

/** ONNX files must stay under protobuf's 2 GiB message limit. */
const MAX_MODEL_BYTES = 2 ** 31 - 1;

export type ExportFormat = 'onnx' | 'triton';

export interface BuildExportOptions {
  /** Inversion steps S, 1 to min(trainSteps, 1000). Default: the bundle's `schedule.defaultSteps`. */
  steps?: number;
  /** Default: the bundle's score definition. */
  scoreDefinition?: ScoreDefinition;
  /** Override the bundle's image threshold at S (as Detector's `threshold` option). */
  threshold?: number;
  /** Check the bundle files' sha256 against the manifest. Default true. */
  verifyHashes?: boolean;
}

export interface ExportOptions extends BuildExportOptions {
  /** The folder to write to: `model.onnx` there, or with format 'triton' the repository `invad/1/model.onnx` and `invad/config.pbtxt`. */
  out: string;
  /** Default 'onnx'. */
  format?: ExportFormat;
  /** Triton settings (format 'triton'). */
  triton?: TritonOptions;
  /**
   * Before writing, score this many seeded test images with Detector and with the graph and
   * refuse a graph that differs by more than PARITY_TOLERANCE (relative) or in a decision.
   * 0 skips the check. Default 4.
   */
  verifyImages?: number;
}

/** The exported graph in memory. */
export interface BuiltExport {
  /** the ONNX model */
  bytes: Uint8Array;
  steps: number;
  scoreDefinition: ScoreDefinition;
  /** the image threshold inside the graph; null: none (only a NaN score is flagged) */
  threshold: number | null;
  /** the graph's default-domain opset */
  opset: number;
  tensors: { inputs: TensorSpec[]; outputs: TensorSpec[] };
  /** how the graph scores, by the names invad serve's model metadata uses under `parameters` (see servedParameters) */
  parameters: Record<string, string>;
  /** the model's metadata_props: `parameters` with an `invad.` prefix */
  metadata: Record<string, string>;
  /** the sizes of the bundle's backbone.onnx and unet.onnx together, to compare with `bytes` */
  bundleModelBytes: number;
  /** the image size the graph takes (the bundle's input size) */
  inputSize: { width: number; height: number };
}

export interface ExportResult extends BuiltExport {
  format: ExportFormat;
  /** every file written */
  files: string[];
  /** the graph compared with Detector, when verifyImages > 0 */
  parity: ParityReport | null;
}

interface ResolvedBuild {
  dir: string;
  steps: number | undefined;
  scoreDefinition: ScoreDefinition | undefined;
  threshold: number | undefined;
  verifyHashes: boolean;
}

function resolveBuild(dir: unknown, raw: unknown): ResolvedBuild {
  const o = plainObject('options', raw ?? {});
  return {
    dir: pathString('dir', dir, 'a bundle folder path'),
    steps: o.steps === undefined ? undefined : intInRange('options.steps', o.steps, 1, 1000),
    scoreDefinition: o.scoreDefinition === undefined ? undefined : oneOf('options.scoreDefinition', o.scoreDefinition, SCORE_DEFINITIONS),
    threshold: o.threshold === undefined ? undefined : numberInRange('options.threshold', o.threshold, -Number.MAX_VALUE, Number.MAX_VALUE),
    verifyHashes: o.verifyHashes === undefined ? true : o.verifyHashes === true,
  };
}

/**
 * Builds the one-graph model of a bundle at one S, without writing anything.
 * @throws ModelBundleError for a bundle that does not load, InvalidArgumentError for bad options
 *   (a latent-gaussian score at an S without statistics), ExportError for a bundle the graph
 *   cannot hold (see opset.ts and inline.ts)
 */
export async function buildExport(dir: string, options: BuildExportOptions = {}): Promise<BuiltExport> {
  const o = resolveBuild(dir, options);
  const bundle = await loadBundle(o.dir, { skipHashCheck: !o.verifyHashes });
  const m = bundle.manifest;
  const definition = o.scoreDefinition ?? m.score.definition;
  // First: a definition the graph cannot compute fails the same way whatever the bundle holds.
  const unsupported = unsupportedDefinition(definition);
  if (unsupported !== null) throw new ExportError(MANIFEST_FILE, unsupported);
  checkScoreSetup(m, { scoreDefinition: o.scoreDefinition, steps: o.steps });
  const S = o.steps ?? m.schedule.defaultSteps;
  if (S > maxSteps(m.schedule.trainSteps)) throw invalidArgument('options.steps', `at most ${maxSteps(m.schedule.trainSteps)}`, S);
  const [manifestBytes, backboneBytes, unetBytes] = await Promise.all([
    readFile(join(o.dir, MANIFEST_FILE)),
    readFile(bundle.backbonePath),
    readFile(bundle.unetPath),
  ]);
  const gaussian = await readGaussian(
    o.dir,
    m.latentGaussian?.find((g) => g.steps === S),
  );
  const threshold = o.threshold ?? imageThresholdAt(m, S, definition);
  const steps = inversionSteps(S, m.schedule);
  const parameters = servedParameters(m, { steps: S, timesteps: steps.map((s) => s.t), definition, threshold, manifestSha256: sha256Bytes(manifestBytes) });
  const metadata = Object.fromEntries(Object.entries(parameters).map(([k, v]) => [`invad.${k}`, v]));
  const built = buildPipelineModel({
    manifest: m,
    backbone: decodeModel(backboneBytes),
    unet: decodeModel(unetBytes),
    steps,
    definition,
    normalization: calibrationAt(m.calibration, S) ?? m.calibration,
    threshold,
    ...(gaussian ? { gaussian } : {}),
    metadata,
    producerVersion: packageVersion(),
  });
  const weightBytes = built.model.graph!.initializer!.reduce((acc, t) => acc + (t.rawData?.length ?? 0), 0);
  if (weightBytes > MAX_MODEL_BYTES) {
    throw new ExportError(m.models.unet.file, `the exported graph would hold ${weightBytes} bytes of weights, over ONNX's 2 GiB limit for one file`);
  }
  return {
    bytes: encodeModel(built.model),
    steps: S,
    scoreDefinition: definition,
    threshold,
    opset: built.opset,
    tensors: built.tensors,
    metadata,
    parameters,
    bundleModelBytes: backboneBytes.length + unetBytes.length,
    inputSize: { width: m.input.width, height: m.input.height },
  };
}

/**
 * How the graph scores, as strings, under the names `invad serve` gives its model metadata's
 * `parameters` (steps, score_definition, calibrated, threshold, pixel_threshold, alpha,
 * resize_kernel), so that a client reads them the same way from either server (Triton shows
 * them as the model configuration's parameters), plus what only the export has. A threshold or
 * pixel threshold the bundle does not have is left out, as invad serve does.
 */
function servedParameters(
  m: Manifest,
  s: { steps: number; timesteps: number[]; definition: ScoreDefinition; threshold: number | null; manifestSha256: string },
): Record<string, string> {
  const pixelThreshold = m.calibration.pixelThreshold;
  return {
    steps: String(s.steps),
    score_definition: s.definition,
    calibrated: String(m.calibration.status === 'calibrated'),
    ...(s.threshold === null ? {} : { threshold: String(s.threshold) }),
    ...(pixelThreshold === null ? {} : { pixel_threshold: String(pixelThreshold) }),
    // How the client decodes and resizes before sending (RemoteDetector reads these two).
    alpha: m.input.alpha,
    resize_kernel: m.input.resizeKernel,
    timesteps: s.timesteps.join(','),
    map: SCORES[s.definition].map,
    manifest_sha256: s.manifestSha256,
    input: JSON.stringify({ name: IMAGE_INPUT, datatype: 'UINT8', layout: 'NHWC', channels: 'RGB', width: m.input.width, height: m.input.height }),
    features: JSON.stringify(m.features),
    export_version: String(EXPORT_FORMAT_VERSION),
  };
}

async function readGaussian(dir: string, spec: { meanFile: string; precisionFile: string } | undefined): Promise<LatentGaussian | undefined> {
  if (!spec) return undefined;
  const [mean, precision] = await Promise.all([readNpy(join(dir, spec.meanFile)), readNpy(join(dir, spec.precisionFile))]);
  const [positions, channels] = mean.shape;
  return { positions, channels, mean: mean.data as Float32Array, precision: precision.data as Float32Array };
}

/**
 * Exports a bundle at one S as one ONNX graph: input normalization, the backbone, the S UNet
 * calls on one shared set of weights, the DDIM updates, the score parts, the latent-Gaussian map
 * when the bundle has it at S, and the calibration. Input `image` uint8 [N, H, W, 3]; outputs as
 * in `modelTensors()`; the bundle's identity, S, the definition and the input spec in
 * metadata_props. Decoding and resizing stay with the client (the same sharp code as Detector).
 * @throws as buildExport, plus ExportError when the graph fails its check against Detector
 */
export async function exportPipeline(dir: string, options: ExportOptions): Promise<ExportResult> {
  const o = plainObject('options', options);
  const out = pathString('options.out', o.out, 'an output folder path');
  const format = o.format === undefined ? 'onnx' : oneOf('options.format', o.format, ['onnx', 'triton'] as const);
  // Checked before the (slow) build, so a bad option fails at once.
  const triton = format === 'triton' ? resolveTritonOptions(plainObject('options.triton', o.triton ?? {}) as TritonOptions) : null;
  const verifyImages = o.verifyImages === undefined ? 4 : intInRange('options.verifyImages', o.verifyImages, 0, 1024);
  const built = await buildExport(dir, options);

  let parity: ParityReport | null = null;
  if (verifyImages > 0) {
    const images = parityImages(built.inputSize, verifyImages);
    parity = await compareWithDetector(dir, built.bytes, images, {
      steps: built.steps,
      scoreDefinition: built.scoreDefinition,
      ...(options.threshold === undefined ? {} : { threshold: options.threshold }),
    });
    if (!parity.ok) {
      const r = parity.maxRelative;
      throw new ExportError(
        'model.onnx',
        `the exported graph disagrees with Detector on ${parity.images} test images (largest relative differences: score ${r.score}, SP ${r.spatialRange}, NLL ${r.nll}, latent-Gaussian ${r.latentGaussian}, map ${r.map}; ${parity.decisionMismatches} decisions differ); nothing was written. Please report it.`,
      );
    }
  }

  const files: string[] = [];
  if (triton) {
    const modelDir = join(out, MODEL_NAME);
    await mkdir(join(modelDir, '1'), { recursive: true });
    files.push(join(modelDir, '1', 'model.onnx'), join(modelDir, 'config.pbtxt'));
    await writeFile(files[0], built.bytes);
    await writeFile(files[1], tritonConfig(built.tensors, triton, built.parameters));
  } else {
    await mkdir(out, { recursive: true });
    files.push(join(out, 'model.onnx'));
    await writeFile(files[0], built.bytes);
  }
  return { ...built, format, files, parity };
}
