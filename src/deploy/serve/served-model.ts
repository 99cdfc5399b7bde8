/**
 * The model behind `invad serve`: a loaded Detector with the tensor spec of the served model
 * (the same names, types and shapes as the exported one-graph model, from tensor-spec.ts),
 * and the two conversions the v2 routes need: an input tensor into frames, and results into
 * output tensors.
 */
import type { Detector, DetectorInfo, ScoreOptions, ScoreResult } from '../../runtime/detector';
import type { Manifest } from '../../runtime/bundle/manifest';
import type { RawImage } from '../../runtime/preprocess';
import { expectTensor, type Parameters as V2Parameters, type Tensor } from '../../runtime/remote/kserve-codec';
import { modelTensors, OUTPUT, type TensorSpec } from '../../runtime/remote/tensor-spec';
import { type FeatureMap, SCORES } from '../../runtime/scores';
import { InferenceError, InvalidInputError } from '../../util/errors';

/**
 * A result's feature-grid map by name.
 * @throws InferenceError when the engine did not return it (a bug: the plan asks for the definition's map)
 */
function featureMap(r: ScoreResult, name: FeatureMap): Float32Array {
  const map = (r.featureMaps as Partial<Record<FeatureMap, Float32Array>>)[name];
  if (map === undefined) throw new InferenceError(`the engine returned no "${name}" map`);
  return map;
}

export class ServedModel {
  /** The inputs and outputs, as in the exported graph (latent_gaussian only when the bundle has its statistics at S). */
  readonly tensors: { inputs: TensorSpec[]; outputs: TensorSpec[] };
  readonly info: DetectorInfo;
  /**
   * One set of score options for every request, so that infer and /v1/score requests share
   * model runs: the batcher merges only requests with the same plan. With latent statistics
   * at S, every run computes every map, as the exported graph does for its latent_gaussian output.
   */
  readonly scoreOptions: ScoreOptions;

  /**
   * What the model metadata adds under `parameters` (not in the spec's schema, which allows
   * extra fields): how this server scores, for a client's info().
   */
  readonly parameters: V2Parameters;

  constructor(
    readonly detector: Detector,
    manifest: Manifest,
  ) {
    this.info = detector.info();
    const hasLatent = (manifest.latentGaussian ?? []).some((g) => g.steps === this.info.steps);
    this.tensors = modelTensors(manifest, hasLatent);
    this.scoreOptions = hasLatent ? { allMaps: true } : {};
    const i = this.info;
    this.parameters = {
      steps: i.steps,
      score_definition: i.scoreDefinition,
      calibrated: i.calibrated,
      ...(i.threshold === null ? {} : { threshold: i.threshold }),
      ...(i.pixelThreshold === null ? {} : { pixel_threshold: i.pixelThreshold }),
      max_batch_size: i.maxBatchSize,
      engine: i.engine,
      device: i.device,
      // How a client must decode and resize (RemoteDetector does it as Detector would).
      alpha: manifest.input.alpha,
      resize_kernel: manifest.input.resizeKernel,
    };
  }

  score(image: Parameters<Detector['score']>[0]): Promise<ScoreResult> {
    return this.detector.score(image, this.scoreOptions);
  }

  /**
   * The frames of an infer request's inputs: exactly one tensor, `image`, uint8 [N, H, W, 3]
   * at the bundle's input size (the client decodes and resizes), N >= 1.
   * @throws InvalidInputError naming what does not match
   */
  frames(inputs: readonly Tensor[]): RawImage[] {
    const spec = this.tensors.inputs[0];
    if (inputs.length !== 1) {
      throw new InvalidInputError(
        'inputs',
        `the model takes one input, "${spec.name}" (${spec.datatype} [${spec.shape.join(', ')}]); the request has ${inputs.length}`,
      );
    }
    const t = expectTensor(inputs, spec, 'inputs');
    const [n, height, width] = t.shape;
    if (n < 1) throw new InvalidInputError('inputs[0]', `input "${spec.name}" has batch size 0; send at least one image`);
    const data = t.data as Uint8Array;
    const per = height * width * 3;
    return Array.from({ length: n }, (_, i) => ({ data: data.subarray(i * per, (i + 1) * per), width, height, channels: 3 as const }));
  }

  /** The output tensors for a batch of results, in the spec's order, or only `names` (output names of the model) in their order. */
  outputs(results: readonly ScoreResult[], names?: readonly string[]): Tensor[] {
    const n = results.length;
    const mapName = SCORES[this.info.scoreDefinition].map;
    const { height: h, width: w } = this.info.featureShape;
    const perImage = (f: (r: ScoreResult) => number) => Float32Array.from(results, f);
    const values: Record<string, () => Float32Array | Uint8Array> = {
      [OUTPUT.score]: () => perImage((r) => r.score),
      [OUTPUT.isAnomalous]: () => Uint8Array.from(results, (r) => (r.isAnomalous ? 1 : 0)),
      [OUTPUT.map]: () => {
        const out = new Float32Array(n * h * w);
        results.forEach((r, i) => out.set(featureMap(r, mapName), i * h * w));
        return out;
      },
      [OUTPUT.spatialRange]: () => perImage((r) => r.components.spatialRange),
      [OUTPUT.nll]: () => perImage((r) => r.components.nll),
      [OUTPUT.latentGaussian]: () => perImage((r) => r.components.latentGaussian ?? Number.NaN),
    };
    const specs = names === undefined ? this.tensors.outputs : names.map((name) => this.tensors.outputs.find((t) => t.name === name)!);
    return specs.map((s) => ({ name: s.name, datatype: s.datatype, shape: s.shape.map((d) => (d === -1 ? n : d)), data: values[s.name]() }));
  }
}
