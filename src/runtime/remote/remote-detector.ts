/**
 * RemoteDetector: Detector's scoring API over the network, against any KServe v2 server that
 * serves invad's model (`invad serve`, or Triton serving `invad export --format triton`).
 * Images are decoded and resized here, with Detector's own preprocessing code, and sent as
 * uint8 [N, H, W, 3] tensors in Triton's binary tensor format; the server runs the model.
 */
import { performance } from 'node:perf_hooks';
import type { AlphaMode, ResizeKernel } from '../bundle/manifest';
import type { ScoreResult } from '../detector';
import { decodeImage, describeInput, resizeRgb, takeInput, type ImageInput, type OwnedImage } from '../preprocess';
import { SCORES, SCORE_DEFINITIONS, type FeatureMap, type ScoreComponents, type ScoreDefinition } from '../scores';
import { DisposedError, InferenceError, InvadError, InvalidInputError, RemoteError, type RemoteErrorCode } from '../../util/errors';
import { intInRange, invalidArgument, oneOf, plainObject } from '../../util/validate';
import {
  decodeInferenceResponse,
  encodeInferenceRequest,
  INFERENCE_HEADER_CONTENT_LENGTH,
  parseModelMetadata,
  type ModelMetadata,
  type Parameters,
  type Tensor,
  type TensorMetadata,
} from './kserve-codec';
import { IMAGE_INPUT, MODEL_NAME, OUTPUT } from './tensor-spec';

const ALPHA_MODES: readonly AlphaMode[] = ['drop', 'flatten-black', 'flatten-white'];
const RESIZE_KERNELS: readonly ResizeKernel[] = ['nearest', 'linear', 'cubic', 'mitchell', 'lanczos2', 'lanczos3'];
/** fit's defaults (write-bundle.ts), used when neither the server nor the options say. */
const DEFAULT_ALPHA: AlphaMode = 'drop';
const DEFAULT_RESIZE_KERNEL: ResizeKernel = 'linear';

export interface RemoteDetectorOptions {
  /** The model name in the v2 routes. Default `invad`. */
  model?: string;
  /** A model version (`/v2/models/{model}/versions/{version}/...`). Default: the server's choice. */
  version?: string;
  /** Sent as `Authorization: Bearer <apiKey>` (what `invad serve --api-key` checks). */
  apiKey?: string;
  /** Extra headers for every request (a gateway's own authentication, say). */
  headers?: Record<string, string>;
  /** Time limit of each HTTP request, from sending to the last byte of the answer, in ms. Default 30000. */
  timeoutMs?: number;
  /** Images per infer request, 1 to 1024. Default 8, or less when the server says it takes less. */
  maxBatchSize?: number;
  /**
   * How images become the model's RGB input, when the server does not say: invad serve does;
   * Triton does when the export put them in the model configuration's parameters. These must
   * match the bundle (its manifest's `input.alpha` and `input.resizeKernel`), or the pixels
   * differ from Detector's. Defaults: fit's (`drop`, `linear`).
   */
  input?: { alpha?: AlphaMode; resizeKernel?: ResizeKernel };
}

export interface RemoteScoreBatchOptions {
  /** Images per infer request. Default: the detector's maxBatchSize. */
  batchSize?: number;
  /** 'throw' (default) rejects on the first failed image; 'collect' puts the error in its slot. */
  errors?: 'throw' | 'collect';
}

export interface RemoteScoreTimings {
  decodeMs: number;
  preprocessMs: number;
  /** the infer request, from sending it to decoding its answer (the server's queue and model run) */
  requestMs: number;
  /** from the call to the result */
  totalMs: number;
  /** how many images shared the infer request */
  batchSize: number;
}

/**
 * What RemoteDetector's score() resolves to: ScoreResult's fields, with what a server can tell.
 * - `map`, `width` and `height` are at the **feature grid** (the served model's `map` output),
 *   where Detector's are at the input image's own size (it resizes the map bilinearly).
 *   So `map` equals Detector's `featureMaps[map of the definition]`.
 * - `featureMaps` holds that one map under its name, when the server says the score
 *   definition; the other map is not served.
 * - `steps` is null when the server does not say S.
 * - `timings` has the client's stages only; the server's are not sent back.
 */
export interface RemoteScoreResult extends Omit<ScoreResult, 'featureMaps' | 'steps' | 'timings'> {
  featureMaps: Partial<Record<FeatureMap, Float32Array>>;
  steps: number | null;
  timings: RemoteScoreTimings;
}

export interface RemoteDetectorInfo {
  /** the model's URL (`.../v2/models/{model}`) */
  url: string;
  model: string;
  version: string | null;
  /** the server's platform name for the model (`invad`, `onnxruntime_onnx`, ...) */
  platform: string;
  /** S, the score definition, calibration and thresholds: null where the server does not say */
  steps: number | null;
  scoreDefinition: ScoreDefinition | null;
  calibrated: boolean | null;
  threshold: number | null;
  pixelThreshold: number | null;
  inputSize: { width: number; height: number };
  /** the map's grid (the served `map` output's shape) */
  featureShape: { height: number; width: number };
  /** images per infer request */
  maxBatchSize: number;
  /** whether the model has the `latent_gaussian` output */
  hasLatentGaussian: boolean;
  /** how images become the model's input, and who said so */
  preprocessing: { alpha: AlphaMode; resizeKernel: ResizeKernel; source: 'server' | 'options' | 'default' };
  /** the model parameters the server sent, as sent */
  serverParameters: Parameters;
}

interface Resolved {
  headers: Record<string, string>;
  timeoutMs: number;
  maxBatchSize: number;
}

/** An image decoded and resized, waiting for its infer request. */
interface Prepared {
  pixels: Buffer;
  label: string;
  start: number;
  decodeMs: number;
  preprocessMs: number;
}

/** One image's slice of an infer answer. */
interface Answer {
  score: number;
  isAnomalous: boolean;
  map: Float32Array;
  components: ScoreComponents;
  requestMs: number;
  batchSize: number;
}

// ---------------------------------------------------------------------------------------------
// HTTP

interface HttpAnswer {
  status: number;
  headers: Headers;
  bytes: Buffer;
}

/** Retry-After as milliseconds: delta-seconds or an HTTP date (RFC 9110, 10.2.3); null when absent or unreadable. */
function retryAfterMs(value: string | null): number | null {
  if (value === null) return null;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? null : Math.max(0, date - Date.now());
}

/** The server's error message and code from a `{ error, code }` body (KServe's error object, plus invad serve's code). */
function errorBody(bytes: Buffer): { message: string; code: string | null } {
  const text = bytes.toString('utf8');
  try {
    const o = JSON.parse(text) as { error?: unknown; code?: unknown };
    if (typeof o.error === 'string') return { message: o.error, code: typeof o.code === 'string' ? o.code : null };
  } catch {
    // not JSON: the text itself, shortened
  }
  const short = text.trim().slice(0, 300);
  return { message: short.length > 0 ? short : '(empty body)', code: null };
}

/** The RemoteError for an HTTP answer that is not 200. */
function statusError(url: string, answer: HttpAnswer): RemoteError {
  const { status } = answer;
  const { message, code: remoteCode } = errorBody(answer.bytes);
  const retry = retryAfterMs(answer.headers.get('retry-after'));
  let code: RemoteErrorCode;
  let hint = '';
  if (status === 401 || status === 403) {
    code = 'ERR_INVAD_REMOTE_UNAUTHORIZED';
    hint = '; check options.apiKey';
  } else if (status === 408) {
    code = 'ERR_INVAD_REMOTE_TIMEOUT';
  } else if (status === 413) {
    code = 'ERR_INVAD_REMOTE_REJECTED';
    hint = "; the request is over the server's body limit: send fewer images per request (maxBatchSize, batchSize)";
  } else if (status === 429 || status === 502 || status === 503 || status === 504) {
    code = 'ERR_INVAD_REMOTE_UNAVAILABLE';
    hint = retry === null ? '; retry later' : `; retry after ${retry} ms`;
  } else if (status >= 400 && status < 500) {
    code = 'ERR_INVAD_REMOTE_REJECTED';
  } else if (status >= 500) {
    code = 'ERR_INVAD_REMOTE_SERVER';
  } else {
    code = 'ERR_INVAD_REMOTE_PROTOCOL';
  }
  const by = remoteCode === null ? '' : ` (${remoteCode})`;
  return new RemoteError(code, `${url} answered HTTP ${status}${by}: ${message}${hint}`, { url, status, retryAfterMs: retry, remoteCode });
}

/** The cause's code and message, for "connection refused" and the like. */
function networkReason(err: Error): string {
  const cause = err.cause as { code?: string; message?: string } | undefined;
  if (cause && typeof cause === 'object') return [cause.code, cause.message].filter(Boolean).join(': ') || err.message;
  return err.message;
}

/**
 * A kept-alive connection the server has just closed fails the next request on it before any
 * answer comes (undici: "other side closed"). Such a request never reached the model, so it is
 * sent once more, on a new connection.
 */
function isStaleConnection(err: Error): boolean {
  const code = (err.cause as { code?: string } | undefined)?.code;
  return err.name !== 'TimeoutError' && (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET');
}

/** One HTTP request with a time limit over the whole exchange; failures to get an answer are RemoteErrors. */
async function send(url: string, init: { method: 'GET' | 'POST'; headers: Record<string, string>; body?: Buffer }, timeoutMs: number): Promise<HttpAnswer> {
  const signal = AbortSignal.timeout(timeoutMs);
  const request = () => fetch(url, { method: init.method, headers: init.headers, body: init.body, signal });
  try {
    let res: Response;
    try {
      res = await request();
    } catch (err) {
      if (!isStaleConnection(err as Error)) throw err;
      res = await request();
    }
    // The timeout covers the body too: a server that stalls mid-answer times out here.
    const bytes = Buffer.from(await res.arrayBuffer());
    return { status: res.status, headers: res.headers, bytes };
  } catch (err) {
    const e = err as Error;
    if (e.name === 'TimeoutError') {
      throw new RemoteError('ERR_INVAD_REMOTE_TIMEOUT', `${init.method} ${url}: no complete answer within ${timeoutMs} ms`, { url }, { cause: err });
    }
    throw new RemoteError('ERR_INVAD_REMOTE_UNAVAILABLE', `${init.method} ${url} failed: ${networkReason(e)}`, { url }, { cause: err });
  }
}

function protocolError(url: string, message: string, cause?: unknown): RemoteError {
  return new RemoteError('ERR_INVAD_REMOTE_PROTOCOL', `${url}: ${message}`, { url, status: 200 }, cause === undefined ? undefined : { cause });
}

// ---------------------------------------------------------------------------------------------
// What the server says about the model

/** A string, number or boolean parameter of the server as a number (Triton's config parameters are strings). */
function numberParam(v: unknown): number | null {
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  return Number.isFinite(n) ? n : null;
}

function booleanParam(v: unknown): boolean | null {
  if (typeof v === 'boolean') return v;
  return v === 'true' ? true : v === 'false' ? false : null;
}

function choiceParam<T extends string>(v: unknown, allowed: readonly T[]): T | null {
  return typeof v === 'string' && allowed.includes(v as T) ? (v as T) : null;
}

/**
 * Triton's model configuration (`GET .../config`) as flat parameters: its `parameters`
 * (`{ key: { string_value } }`) plus max_batch_size. KServe servers without the route give {}.
 */
async function tritonConfigParameters(modelUrl: string, o: Resolved): Promise<Parameters> {
  let answer: HttpAnswer;
  try {
    answer = await send(`${modelUrl}/config`, { method: 'GET', headers: o.headers }, o.timeoutMs);
  } catch {
    return {};
  }
  if (answer.status !== 200) return {};
  try {
    const config = JSON.parse(answer.bytes.toString('utf8')) as { parameters?: Record<string, { string_value?: unknown }>; max_batch_size?: unknown };
    const out: Parameters = {};
    for (const [k, v] of Object.entries(config.parameters ?? {})) if (typeof v?.string_value === 'string') out[k] = v.string_value;
    if (typeof config.max_batch_size === 'number' && config.max_batch_size > 0) out.max_batch_size ??= config.max_batch_size;
    return out;
  } catch {
    return {};
  }
}

/** The dimensions of a per-image output: [N], or [N, 1] as Triton reshapes a batch-only tensor. */
function isPerImage(t: TensorMetadata | Tensor, n = -1): boolean {
  return t.shape[0] === n && (t.shape.length === 1 || (t.shape.length === 2 && t.shape[1] === 1));
}

/** The model's shape from its metadata, or a protocol error saying what does not fit invad's served model. */
function readModel(url: string, meta: ModelMetadata) {
  const image = meta.inputs.find((t) => t.name === IMAGE_INPUT) ?? (meta.inputs.length === 1 ? meta.inputs[0] : undefined);
  if (!image)
    throw protocolError(url, `the model has no input "${IMAGE_INPUT}" (inputs: ${meta.inputs.map((t) => t.name).join(', ')}): it is not an invad model`);
  const [, height, width, channels] = image.shape;
  if (image.datatype !== 'UINT8' || image.shape.length !== 4 || channels !== 3 || !(height > 0) || !(width > 0)) {
    throw protocolError(url, `input "${image.name}" is ${image.datatype} [${image.shape.join(', ')}]; expected UINT8 [-1, H, W, 3]`);
  }
  const output = (name: string) => meta.outputs.find((t) => t.name === name);
  for (const name of [OUTPUT.score, OUTPUT.isAnomalous, OUTPUT.map, OUTPUT.spatialRange, OUTPUT.nll]) {
    if (!output(name))
      throw protocolError(url, `the model has no output "${name}" (outputs: ${meta.outputs.map((t) => t.name).join(', ')}): it is not an invad model`);
  }
  const map = output(OUTPUT.map)!;
  if (map.datatype !== 'FP32' || map.shape.length !== 3 || !(map.shape[1] > 0) || !(map.shape[2] > 0)) {
    throw protocolError(url, `output "${OUTPUT.map}" is ${map.datatype} [${map.shape.join(', ')}]; expected FP32 [-1, h, w]`);
  }
  return {
    imageInput: image.name,
    inputSize: { width, height },
    featureShape: { height: map.shape[1], width: map.shape[2] },
    hasLatentGaussian: output(OUTPUT.latentGaussian) !== undefined,
  };
}

function resolveOptions(url: unknown, options: RemoteDetectorOptions | undefined) {
  if (typeof url !== 'string' && !(url instanceof URL)) throw invalidArgument('url', 'the server URL, e.g. http://127.0.0.1:8000', url);
  let base: URL;
  try {
    base = new URL(String(url));
  } catch {
    throw invalidArgument('url', 'an absolute http:// or https:// URL', url);
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') throw invalidArgument('url', 'an http:// or https:// URL', String(url));
  const o = plainObject('options', options ?? {});
  const str = (name: string, v: unknown): string | undefined => {
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || v.length === 0) throw invalidArgument(`options.${name}`, 'a non-empty string', v);
    return v;
  };
  const model = str('model', o.model) ?? MODEL_NAME;
  const version = str('version', o.version);
  const apiKey = str('apiKey', o.apiKey);
  const headers: Record<string, string> = {};
  if (o.headers !== undefined) {
    for (const [k, v] of Object.entries(plainObject('options.headers', o.headers))) {
      if (typeof v !== 'string') throw invalidArgument(`options.headers.${k}`, 'a string', v);
      headers[k] = v;
    }
  }
  if (apiKey !== undefined) headers.Authorization = `Bearer ${apiKey}`;
  const input = o.input === undefined ? {} : plainObject('options.input', o.input);
  // A base URL may carry a path (a gateway's prefix); the v2 routes go below it.
  const root = base.href.endsWith('/') ? base.href : `${base.href}/`;
  const modelUrl = new URL(`v2/models/${encodeURIComponent(model)}${version === undefined ? '' : `/versions/${encodeURIComponent(version)}`}`, root).href;
  return {
    modelUrl,
    model,
    version,
    resolved: {
      headers,
      timeoutMs: o.timeoutMs === undefined ? 30_000 : intInRange('options.timeoutMs', o.timeoutMs, 1, 3_600_000),
      maxBatchSize: o.maxBatchSize === undefined ? 8 : intInRange('options.maxBatchSize', o.maxBatchSize, 1, 1024),
    },
    alpha: input.alpha === undefined ? undefined : oneOf('options.input.alpha', input.alpha, ALPHA_MODES),
    resizeKernel: input.resizeKernel === undefined ? undefined : oneOf('options.input.resizeKernel', input.resizeKernel, RESIZE_KERNELS),
  };
}

// ---------------------------------------------------------------------------------------------

/**
 * Detector's scoring API against a KServe v2 server serving invad's model: `invad serve`, or
 * Triton serving `invad export --format triton`. Images are decoded and resized here with
 * Detector's preprocessing (sharp, the bundle's size, alpha mode and resize kernel), so the
 * server sees the pixels Detector would; scores, decisions and feature-grid maps then match
 * Detector's on the same bundle.
 *
 * How it differs from Detector:
 * - results are {@link RemoteScoreResult}s: the map is at the feature grid, as served (Detector
 *   resizes it to the image's size), and there is no per-stage timing of the server's work;
 * - S, the score definition and the threshold are the server's: score() takes no options;
 * - failures to reach or use the server reject with a {@link RemoteError} whose code says
 *   what happened (unavailable, timeout, rejected, unauthorized, server, protocol). Nothing is
 *   retried here: a 503's Retry-After is in the error's `retryAfterMs`.
 */
export class RemoteDetector {
  private disposed = false;
  private disposing: Promise<void> | undefined;
  private readonly active = new Set<Promise<unknown>>();

  private constructor(
    private readonly meta: RemoteDetectorInfo,
    private readonly imageInput: string,
    private readonly o: Resolved,
  ) {}

  /**
   * Reads the model's metadata (`GET {url}/v2/models/{model}`) and returns a detector for it.
   * The image input's shape gives the input size, the `map` output's the feature grid. Rejects
   * with InvalidArgumentError for bad options, and RemoteError when the server cannot be
   * reached, refuses, or does not serve an invad model.
   */
  static async connect(url: string | URL, options?: RemoteDetectorOptions): Promise<RemoteDetector> {
    const r = resolveOptions(url, options);
    const answer = await send(r.modelUrl, { method: 'GET', headers: r.resolved.headers }, r.resolved.timeoutMs);
    if (answer.status !== 200) throw statusError(r.modelUrl, answer);
    let meta: ModelMetadata;
    try {
      meta = parseModelMetadata(JSON.parse(answer.bytes.toString('utf8')));
    } catch (cause) {
      throw protocolError(r.modelUrl, `the model metadata is not a KServe v2 model metadata object: ${(cause as Error).message}`, cause);
    }
    const shape = readModel(r.modelUrl, meta);
    // invad serve puts how it scores in the metadata; Triton has it in the model configuration.
    const params = meta.parameters ?? (await tritonConfigParameters(r.modelUrl, r.resolved));
    const serverAlpha = choiceParam(params.alpha, ALPHA_MODES);
    const serverKernel = choiceParam(params.resize_kernel, RESIZE_KERNELS);
    const source = r.alpha !== undefined || r.resizeKernel !== undefined ? 'options' : serverAlpha !== null || serverKernel !== null ? 'server' : 'default';
    const serverMax = numberParam(params.max_batch_size);
    const maxBatchSize = serverMax !== null && serverMax >= 1 ? Math.min(r.resolved.maxBatchSize, Math.floor(serverMax)) : r.resolved.maxBatchSize;
    const steps = numberParam(params.steps);
    const info: RemoteDetectorInfo = {
      url: r.modelUrl,
      model: r.model,
      version: r.version ?? null,
      platform: meta.platform,
      steps: steps !== null && Number.isInteger(steps) && steps > 0 ? steps : null,
      scoreDefinition: choiceParam(params.score_definition, SCORE_DEFINITIONS),
      calibrated: booleanParam(params.calibrated),
      threshold: numberParam(params.threshold),
      pixelThreshold: numberParam(params.pixel_threshold),
      inputSize: shape.inputSize,
      featureShape: shape.featureShape,
      maxBatchSize,
      hasLatentGaussian: shape.hasLatentGaussian,
      preprocessing: { alpha: r.alpha ?? serverAlpha ?? DEFAULT_ALPHA, resizeKernel: r.resizeKernel ?? serverKernel ?? DEFAULT_RESIZE_KERNEL, source },
      serverParameters: { ...params },
    };
    return new RemoteDetector(info, shape.imageInput, { ...r.resolved, maxBatchSize });
  }

  /** What the server said about the model, and how this client preprocesses. */
  info(): RemoteDetectorInfo {
    const m = this.meta;
    return {
      ...m,
      inputSize: { ...m.inputSize },
      featureShape: { ...m.featureShape },
      preprocessing: { ...m.preprocessing },
      serverParameters: { ...m.serverParameters },
    };
  }

  /**
   * Scores one image in one infer request. The input is checked and its bytes copied before
   * this returns, as in Detector.score(). Rejects with InvalidArgumentError or
   * InvalidInputError for a bad input, RemoteError when the request fails, and InferenceError
   * when the server's score is not finite.
   */
  score(input: ImageInput): Promise<RemoteScoreResult> {
    return this.track('score()', async () => {
      const start = performance.now();
      const label = describeInput(input, 0);
      // Before the first await: once score() returns, the caller may reuse its buffer.
      const owned = takeInput(input, label);
      const prepared = await this.prepare(owned, label, start);
      const [answer] = await this.infer([prepared]);
      return this.finish(answer, prepared);
    });
  }

  /**
   * Scores many images, `batchSize` per infer request; results keep the inputs' order. Images
   * are decoded chunk by chunk (the next while the current request is out), so leave the
   * inputs unchanged until the promise settles. A bad image fails alone; a failed request fails
   * the images it carried.
   */
  scoreBatch(inputs: readonly ImageInput[], options?: RemoteScoreBatchOptions & { errors?: 'throw' }): Promise<RemoteScoreResult[]>;
  scoreBatch(inputs: readonly ImageInput[], options: RemoteScoreBatchOptions & { errors: 'collect' }): Promise<Array<RemoteScoreResult | InvadError>>;
  scoreBatch(inputs: readonly ImageInput[], options: RemoteScoreBatchOptions = {}): Promise<Array<RemoteScoreResult | InvadError>> {
    return this.track('scoreBatch()', () => this.scoreBatchOpen(inputs, options));
  }

  private async scoreBatchOpen(inputs: readonly ImageInput[], options: RemoteScoreBatchOptions): Promise<Array<RemoteScoreResult | InvadError>> {
    // (as unknown: Array.isArray would narrow a readonly array to any[])
    if (!Array.isArray(inputs as unknown)) throw invalidArgument('inputs', 'an array of images', inputs);
    const o = plainObject('options', options);
    const size = o.batchSize === undefined ? this.o.maxBatchSize : intInRange('options.batchSize', o.batchSize, 1, 1024);
    const collect = (o.errors === undefined ? 'throw' : oneOf('options.errors', o.errors, ['throw', 'collect'] as const)) === 'collect';

    const prepare = (from: number) =>
      inputs.slice(from, from + size).map((input, j) => {
        const label = describeInput(input, from + j);
        return this.prepare(input, label, performance.now());
      });
    const results: Array<RemoteScoreResult | Error> = [];
    let next = prepare(0);
    for (let from = 0; from < inputs.length; from += size) {
      const settled = await Promise.allSettled(next);
      const ok = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
      const request = ok.length > 0 ? this.infer(ok) : Promise.resolve([]);
      // Decode the next chunk while this one's request is out.
      next = from + size < inputs.length ? prepare(from + size) : [];
      let answers: Answer[] | undefined;
      let failure: Error | undefined;
      try {
        answers = await request;
      } catch (err) {
        failure = err as Error;
      }
      let k = 0;
      for (const s of settled) {
        if (s.status === 'rejected') {
          results.push(s.reason as Error);
        } else if (failure) {
          k++;
          results.push(failure);
        } else {
          try {
            results.push(this.finish(answers![k++], s.value));
          } catch (err) {
            results.push(err as Error);
          }
        }
      }
      if (!collect) {
        const failed = results.find((r) => r instanceof Error);
        if (failed) {
          // Let the chunk being decoded settle before rejecting, so nothing runs on unobserved.
          await Promise.allSettled(next);
          throw failed;
        }
      }
    }
    return results as Array<RemoteScoreResult | InvadError>;
  }

  /** Waits for the calls already made, then refuses new ones. Idempotent. There is nothing to release on the server. */
  dispose(): Promise<void> {
    this.disposed = true;
    this.disposing ??= Promise.allSettled([...this.active]).then(() => undefined);
    return this.disposing;
  }

  private track<R>(what: string, call: () => Promise<R>): Promise<R> {
    if (this.disposed) return Promise.reject(new DisposedError(`RemoteDetector.${what}`));
    const p = call();
    this.active.add(p);
    const forget = () => this.active.delete(p);
    p.then(forget, forget);
    return p;
  }

  /** Decode and resize: Detector's code (preprocess.ts), stopping before normalization. */
  private async prepare(input: ImageInput | OwnedImage, label: string, start: number): Promise<Prepared> {
    const { alpha, resizeKernel } = this.meta.preprocessing;
    const t0 = performance.now();
    const decoded = await decodeImage(input, label, alpha);
    const t1 = performance.now();
    const pixels = await resizeRgb(decoded, { ...this.meta.inputSize, resizeKernel }, label);
    return { pixels, label, start, decodeMs: t1 - t0, preprocessMs: performance.now() - t1 };
  }

  /** One infer request for prepared images; each image's outputs, in order. */
  private async infer(items: readonly Prepared[]): Promise<Answer[]> {
    const { width, height } = this.meta.inputSize;
    const per = width * height * 3;
    const n = items.length;
    const data = new Uint8Array(n * per);
    items.forEach((it, i) => data.set(it.pixels, i * per));
    const names: string[] = [OUTPUT.score, OUTPUT.isAnomalous, OUTPUT.map, OUTPUT.spatialRange, OUTPUT.nll];
    if (this.meta.hasLatentGaussian) names.push(OUTPUT.latentGaussian);
    const { body, headers } = encodeInferenceRequest({
      parameters: { binary_data_output: true },
      inputs: [{ name: this.imageInput, datatype: 'UINT8', shape: [n, height, width, 3], data }],
      outputs: names.map((name) => ({ name, parameters: { binary_data: true } })),
    });
    const url = `${this.meta.url}/infer`;
    const t0 = performance.now();
    const answer = await send(url, { method: 'POST', headers: { ...this.o.headers, ...headers }, body }, this.o.timeoutMs);
    if (answer.status !== 200) throw statusError(url, answer);
    let outputs: Tensor[];
    try {
      outputs = decodeInferenceResponse(answer.bytes, answer.headers.get(INFERENCE_HEADER_CONTENT_LENGTH) ?? undefined).outputs;
    } catch (cause) {
      if (!(cause instanceof InvalidInputError)) throw cause;
      throw protocolError(url, `the answer is not a valid KServe v2 inference response: ${cause.message}`, cause);
    }
    const requestMs = performance.now() - t0;
    const get = (name: string, datatype: string, perImage: boolean): Tensor => {
      const t = outputs.find((o) => o.name === name);
      if (!t) throw protocolError(url, `the answer has no output "${name}"`);
      const { height: h, width: w } = this.meta.featureShape;
      const fits = perImage ? isPerImage(t, n) : t.shape.length === 3 && t.shape[0] === n && t.shape[1] === h && t.shape[2] === w;
      if (t.datatype !== datatype || !fits) {
        throw protocolError(
          url,
          `output "${name}" is ${t.datatype} [${t.shape.join(', ')}]; expected ${datatype} ${perImage ? `[${n}]` : `[${n}, ${h}, ${w}]`}`,
        );
      }
      return t;
    };
    const score = get(OUTPUT.score, 'FP32', true).data as Float32Array;
    const flags = get(OUTPUT.isAnomalous, 'BOOL', true).data as Uint8Array;
    const map = get(OUTPUT.map, 'FP32', false).data as Float32Array;
    const sp = get(OUTPUT.spatialRange, 'FP32', true).data as Float32Array;
    const nll = get(OUTPUT.nll, 'FP32', true).data as Float32Array;
    const lg = this.meta.hasLatentGaussian ? (get(OUTPUT.latentGaussian, 'FP32', true).data as Float32Array) : undefined;
    const cells = this.meta.featureShape.height * this.meta.featureShape.width;
    return items.map((_, i) => ({
      score: score[i],
      isAnomalous: flags[i] === 1,
      map: map.slice(i * cells, (i + 1) * cells),
      components: { spatialRange: sp[i], nll: nll[i], ...(lg === undefined ? {} : { latentGaussian: lg[i] }) },
      requestMs,
      batchSize: n,
    }));
  }

  private finish(a: Answer, p: Prepared): RemoteScoreResult {
    // NaN > threshold is false: a non-finite score would pass as a good part (as in Detector).
    if (!Number.isFinite(a.score)) throw new InferenceError(`${p.label}: the server's image score is ${a.score}`);
    const m = this.meta;
    const mapName = m.scoreDefinition === null ? undefined : SCORES[m.scoreDefinition].map;
    return {
      score: a.score,
      isAnomalous: a.isAnomalous,
      threshold: m.threshold,
      map: a.map,
      width: m.featureShape.width,
      height: m.featureShape.height,
      featureMaps: mapName === undefined ? {} : { [mapName]: a.map },
      components: a.components,
      steps: m.steps,
      timings: { decodeMs: p.decodeMs, preprocessMs: p.preprocessMs, requestMs: a.requestMs, totalMs: performance.now() - p.start, batchSize: a.batchSize },
    };
  }
}
