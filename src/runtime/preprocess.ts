/**
 * Image preprocessing with sharp: decode, gray or RGBA to RGB, resize to the
 * bundle's input size, normalize to NCHW float32. Training-time feature
 * extraction calls the same function, so train and test features agree.
 */
import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import type { InputSpec } from './bundle/manifest';
import { InvadError, InvalidArgumentError, InvalidInputError } from '../util/errors';
import { checkRegularFile } from '../util/regular-file';
import { invalidArgument, pathString } from '../util/validate';

/** Raw pixels as a line camera hands them over: 8-bit, interleaved, row-major. */
export interface RawImage {
  data: Uint8Array | Uint8ClampedArray;
  width: number;
  height: number;
  /** 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA */
  channels: 1 | 2 | 3 | 4;
}

/** A file path, an encoded image (PNG, JPEG, WebP, TIFF, ...) or raw pixels. */
export type ImageInput = string | Uint8Array | RawImage;

/** A decoded RGB image at its own resolution. */
export interface DecodedImage {
  rgb: Buffer;
  width: number;
  height: number;
}

export interface PreprocessedImage {
  /** 3 x H x W normalized pixels at the bundle's input size */
  tensor: Float32Array;
  /** the input's own size; the anomaly map comes back at this size */
  width: number;
  height: number;
  timings: { decodeMs: number; preprocessMs: number };
}

/** Inputs larger than this many pixels are refused before decoding (sharp's own default). */
export const MAX_INPUT_PIXELS = 0x3fff * 0x3fff;

function isBytes(v: unknown): v is Uint8Array | Uint8ClampedArray {
  return v instanceof Uint8Array || v instanceof Uint8ClampedArray;
}

/** A short name for an input, used in errors and CLI output. */
export function describeInput(input: unknown, index: number): string {
  return typeof input === 'string' ? input : `input[${index}]`;
}

/**
 * What scoreBatch's 'collect' slot holds for an input that failed to preprocess: its
 * InvadError, or, for an exception of the caller's own (a getter or proxy trap on a raw-pixel
 * object that throws), an InvalidInputError naming the input with that exception as the cause,
 * since the slots are typed InvadError (found by npm run fuzz).
 */
export function asInputError(err: unknown, label: string): InvadError {
  if (err instanceof InvadError) return err;
  const why = err instanceof Error ? `${err.name}: ${err.message}` : typeof err;
  return new InvalidInputError(label, `${label} could not be read: ${why}`, { cause: err });
}

/**
 * Recycled buffers for the input copies. Filling a warm 15 MB buffer takes about 1 ms, but a
 * fresh one costs 20-30 ms of page faults on first touch (2 vCPU VM), more than sharp's whole
 * raw decode; so buffers of 1 MB and more go back to a free list of at most 64 MB when their
 * decode is done.
 */
const COPY_POOL_MIN_BYTES = 1 << 20;
const COPY_POOL_MAX_BYTES = 64 << 20;
const copyPool: Buffer[] = [];
let copyPoolBytes = 0;

function takeCopyBuffer(n: number): Buffer {
  if (n >= COPY_POOL_MIN_BYTES) {
    // The smallest free buffer that fits, and at most twice the need, so that a small
    // image does not hold a large buffer.
    let best = -1;
    for (let i = 0; i < copyPool.length; i++) {
      const len = copyPool[i].length;
      if (len >= n && len <= 2 * n && (best < 0 || len < copyPool[best].length)) best = i;
    }
    if (best >= 0) {
      const [buf] = copyPool.splice(best, 1);
      copyPoolBytes -= buf.length;
      return buf.subarray(0, n);
    }
  }
  // allocUnsafeSlow: a buffer of its own, never a slice of Node's shared small-buffer pool.
  return Buffer.allocUnsafeSlow(n);
}

function giveCopyBuffer(view: Buffer): void {
  const whole = Buffer.from(view.buffer, 0, view.buffer.byteLength);
  if (whole.length < COPY_POOL_MIN_BYTES || copyPoolBytes + whole.length > COPY_POOL_MAX_BYTES) return;
  copyPool.push(whole);
  copyPoolBytes += whole.length;
}

/**
 * A private copy of the caller's bytes. sharp decodes on a libuv thread after score() has
 * returned, so it must never read memory the caller can still free: a resizable ArrayBuffer
 * shrunk with resize(0), or any ArrayBuffer detached by a transfer (postMessage,
 * structuredClone) and collected, would crash the process (issue 12, finding 3). JavaScript
 * cannot pin a caller's buffer, so the bytes are copied, into a recycled buffer when one fits.
 */
function copyBytes(view: Uint8Array | Uint8ClampedArray, label: string): Buffer {
  const copy = takeCopyBuffer(view.byteLength);
  try {
    copy.set(view);
  } catch (err) {
    // set() throws a TypeError when the view's buffer is detached (or a resizable buffer
    // shrank under a fixed-length view): nothing is left to read.
    throw new InvalidInputError(label, `${label} is backed by a detached or out-of-bounds ArrayBuffer (${(err as Error).message})`);
  }
  return copy;
}

type Owned =
  | { kind: 'path'; path: string }
  | { kind: 'encoded'; bytes: Buffer }
  | { kind: 'raw'; bytes: Buffer; width: number; height: number; channels: RawImage['channels'] };

/**
 * An image input the library owns: a checked path string, or a private copy of the caller's
 * bytes with each raw-pixel field read exactly once (a getter cannot change a value between
 * its check and its use). Made by {@link takeInput}.
 */
export class OwnedImage {
  private released = false;

  /** @internal */
  constructor(private readonly owned: Owned) {}

  /** The path or bytes; decoding uses them once, then {@link release} recycles the copy. */
  get source(): Owned {
    if (this.released) throw new Error('OwnedImage: decoded already; its bytes went back to the pool');
    return this.owned;
  }

  /** Returns the copied bytes to the pool once nothing reads them (sharp has finished). */
  release(): void {
    if (this.released) return;
    this.released = true;
    if (this.owned.kind !== 'path') giveCopyBuffer(this.owned.bytes);
  }
}

function takeRaw(raw: object, label: string): OwnedImage {
  // One read of each field: later code sees only these values.
  const { data, width, height, channels } = raw as Record<keyof RawImage, unknown>;
  if (!isBytes(data)) {
    throw new InvalidArgumentError(`${label}.data`, `Expected Uint8Array for ${label}.data but received ${data === null ? 'null' : typeof data}`);
  }
  for (const [name, v] of [
    ['width', width],
    ['height', height],
  ] as const) {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
      // invalidArgument describes the value without converting it: String() of a null-prototype
      // object or one whose toString throws is itself a TypeError (found by npm run fuzz).
      throw invalidArgument(`${label}.${name}`, 'positive integer', v);
    }
  }
  if (channels !== 1 && channels !== 2 && channels !== 3 && channels !== 4) {
    throw invalidArgument(`${label}.channels`, '1, 2, 3 or 4', channels);
  }
  const w = width as number;
  const h = height as number;
  if (w * h > MAX_INPUT_PIXELS) {
    throw new InvalidInputError(label, `${label} is ${w}x${h}, over the limit of ${MAX_INPUT_PIXELS} pixels`);
  }
  const expected = w * h * channels;
  // Compare the length of the copy, which no getter can change afterwards.
  const bytes = copyBytes(data, `${label}.data`);
  if (bytes.length !== expected) {
    throw new InvalidInputError(label, `${label}.data has ${bytes.length} bytes but width*height*channels = ${w}*${h}*${channels} = ${expected}`);
  }
  return new OwnedImage({ kind: 'raw', bytes, width: w, height: h, channels });
}

/**
 * Validates an input and takes ownership of it, synchronously: after it returns, the caller
 * may reuse, resize or transfer its buffers. Throws InvalidArgumentError for a value of the
 * wrong type (or a path with a NUL byte) and InvalidInputError for bytes that cannot be an
 * image (empty, wrong length, too many pixels). A path is only checked for its form here;
 * decoding checks that it names a regular file.
 */
export function takeInput(input: unknown, label: string): OwnedImage {
  if (input instanceof OwnedImage) return input;
  if (typeof input === 'string') {
    if (input.length === 0) throw new InvalidArgumentError(label, 'Expected a file path but received an empty string');
    return new OwnedImage({ kind: 'path', path: pathString(label, input) });
  }
  if (isBytes(input)) {
    const bytes = copyBytes(input, label);
    if (bytes.length === 0) throw new InvalidInputError(label, `${label} is an empty buffer (0 bytes)`);
    return new OwnedImage({ kind: 'encoded', bytes });
  }
  if (typeof input === 'object' && input !== null && 'data' in input && 'width' in input && 'height' in input) return takeRaw(input, label);
  throw new InvalidArgumentError(
    label,
    `Expected a file path, an encoded image Buffer or { data, width, height, channels } for ${label} but received ${input === null ? 'null' : typeof input}`,
  );
}

/** Opens an owned input in sharp; a path must name a regular file (a FIFO would block the open forever). */
async function openImage(owned: OwnedImage, label: string): Promise<sharp.Sharp> {
  const opts: sharp.SharpOptions = { failOn: 'warning', limitInputPixels: MAX_INPUT_PIXELS };
  const s = owned.source;
  if (s.kind === 'path') {
    const check = await checkRegularFile(s.path);
    if (!check.ok) throw new InvalidInputError(label, `Cannot read ${label}: it ${check.reason}`, { cause: check.cause });
    return sharp(s.path, opts);
  }
  if (s.kind === 'encoded') return sharp(s.bytes, opts);
  return sharp(s.bytes, { ...opts, raw: { width: s.width, height: s.height, channels: s.channels } });
}

function alphaStep(img: sharp.Sharp, alpha: InputSpec['alpha']): sharp.Sharp {
  if (alpha === 'flatten-black') return img.flatten({ background: { r: 0, g: 0, b: 0 } });
  if (alpha === 'flatten-white') return img.flatten({ background: { r: 255, g: 255, b: 255 } });
  return img.removeAlpha();
}

/**
 * Decodes any supported input to 8-bit RGB at its own size. The input is taken (validated,
 * and its bytes copied) before the first await, so the caller may reuse its buffers as soon
 * as this returns its promise.
 */
export async function decodeImage(input: ImageInput | OwnedImage, label: string, alpha: InputSpec['alpha'] = 'drop'): Promise<DecodedImage> {
  const owned = takeInput(input, label);
  try {
    const img = await openImage(owned, label);
    const { data, info } = await alphaStep(img, alpha).toColourspace('srgb').raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels, expected 3`);
    return { rgb: data, width: info.width, height: info.height };
  } catch (cause) {
    if (cause instanceof InvalidInputError || cause instanceof InvalidArgumentError) throw cause;
    throw new InvalidInputError(label, `Cannot decode ${label}: ${(cause as Error).message}`, { cause });
  } finally {
    // toBuffer() has settled: sharp reads the input no more.
    owned.release();
  }
}

/**
 * Resizes decoded RGB to the bundle's input size: H x W x 3 uint8, the pixels the model sees
 * before normalization. RemoteDetector sends exactly these, so both paths see the same pixels.
 */
export async function resizeRgb(image: DecodedImage, spec: Pick<InputSpec, 'width' | 'height' | 'resizeKernel'>, label: string): Promise<Buffer> {
  if (image.width === spec.width && image.height === spec.height) return image.rgb;
  try {
    return await sharp(image.rgb, { raw: { width: image.width, height: image.height, channels: 3 } })
      .resize(spec.width, spec.height, { fit: 'fill', kernel: spec.resizeKernel })
      .raw()
      .toBuffer();
  } catch (cause) {
    throw new InvalidInputError(label, `Cannot resize ${label}: ${(cause as Error).message}`, { cause });
  }
}

/** Resizes decoded RGB to the bundle's input size and normalizes it to NCHW float32. */
export async function toTensor(image: DecodedImage, spec: InputSpec, label: string): Promise<Float32Array> {
  const pixels = await resizeRgb(image, spec, label);
  const plane = spec.width * spec.height;
  const out = new Float32Array(3 * plane);
  const { scale, shift } = pixelNormalization(spec);
  for (let c = 0; c < 3; c++) {
    const base = c * plane;
    for (let i = 0; i < plane; i++) out[base + i] = pixels[3 * i + c] * scale[c] + shift[c];
  }
  return out;
}

/**
 * The per-channel map from an 8-bit pixel p to the model's input: (p/255 - mean)/std, folded
 * into p * scale + shift, computed in float64 and rounded once to float32. The exported graph
 * (`invad export`) uses these same numbers, so both give the same tensor.
 */
export function pixelNormalization(spec: Pick<InputSpec, 'mean' | 'std'>): { scale: number[]; shift: number[] } {
  return { scale: spec.std.map((s) => 1 / (255 * s)), shift: spec.mean.map((m, c) => -m / spec.std[c]) };
}

/** Stacks preprocessed images into one N x 3 x H x W batch (a fresh buffer, safe to transfer). */
export function stackTensors(images: readonly Pick<PreprocessedImage, 'tensor'>[]): Float32Array {
  const plane = images[0]?.tensor.length ?? 0;
  const batch = new Float32Array(images.length * plane);
  images.forEach((p, i) => batch.set(p.tensor, i * plane));
  return batch;
}

/** Decodes, resizes and normalizes one input; like {@link decodeImage}, it owns the input before its first await. */
export async function preprocess(input: ImageInput | OwnedImage, spec: InputSpec, label: string): Promise<PreprocessedImage> {
  const t0 = performance.now();
  const decoded = await decodeImage(input, label, spec.alpha);
  const t1 = performance.now();
  const tensor = await toTensor(decoded, spec, label);
  const t2 = performance.now();
  return { tensor, width: decoded.width, height: decoded.height, timings: { decodeMs: t1 - t0, preprocessMs: t2 - t1 } };
}
