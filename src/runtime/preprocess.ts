/**
 * Image preprocessing with sharp: decode, gray or RGBA to RGB, resize to the
 * bundle's input size, normalize to NCHW float32. Training-time feature
 * extraction calls the same function, so train and test features agree.
 */
import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import type { InputSpec } from './bundle/manifest';
import { InvalidArgumentError, InvalidInputError } from '../util/errors';

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

function isRawImage(v: unknown): v is RawImage {
  return typeof v === 'object' && v !== null && !(v instanceof Uint8Array) && 'data' in v && 'width' in v && 'height' in v;
}

/** A short name for an input, used in errors and CLI output. */
export function describeInput(input: unknown, index: number): string {
  return typeof input === 'string' ? input : `input[${index}]`;
}

function checkRaw(raw: RawImage, label: string): void {
  const { data, width, height, channels } = raw;
  if (!(data instanceof Uint8Array || data instanceof Uint8ClampedArray)) {
    throw new InvalidArgumentError(`${label}.data`, `Expected Uint8Array for ${label}.data but received ${typeof data}`);
  }
  for (const [name, v] of [['width', width], ['height', height]] as const) {
    if (!Number.isInteger(v) || v < 1) {
      throw new InvalidArgumentError(`${label}.${name}`, `Expected positive integer for ${label}.${name} but received ${String(v)}`);
    }
  }
  if (![1, 2, 3, 4].includes(channels)) {
    throw new InvalidArgumentError(`${label}.channels`, `Expected 1, 2, 3 or 4 for ${label}.channels but received ${String(channels)}`);
  }
  if (width * height > MAX_INPUT_PIXELS) {
    throw new InvalidInputError(label, `${label} is ${width}x${height}, over the limit of ${MAX_INPUT_PIXELS} pixels`);
  }
  if (data.length !== width * height * channels) {
    throw new InvalidInputError(
      label,
      `${label}.data has ${data.length} bytes but width*height*channels = ${width}*${height}*${channels} = ${width * height * channels}`,
    );
  }
}

function openImage(input: ImageInput, label: string): sharp.Sharp {
  const opts: sharp.SharpOptions = { failOn: 'warning', limitInputPixels: MAX_INPUT_PIXELS };
  if (typeof input === 'string') {
    if (input.length === 0) throw new InvalidArgumentError(label, 'Expected a file path but received an empty string');
    return sharp(input, opts);
  }
  if (input instanceof Uint8Array) {
    if (input.length === 0) throw new InvalidInputError(label, `${label} is an empty buffer (0 bytes)`);
    return sharp(input, opts);
  }
  if (isRawImage(input)) {
    checkRaw(input, label);
    const { data, width, height, channels } = input;
    const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    return sharp(bytes, { ...opts, raw: { width, height, channels } });
  }
  throw new InvalidArgumentError(
    label,
    `Expected a file path, an encoded image Buffer or { data, width, height, channels } for ${label} but received ${input === null ? 'null' : typeof input}`,
  );
}

function alphaStep(img: sharp.Sharp, alpha: InputSpec['alpha']): sharp.Sharp {
  if (alpha === 'flatten-black') return img.flatten({ background: { r: 0, g: 0, b: 0 } });
  if (alpha === 'flatten-white') return img.flatten({ background: { r: 255, g: 255, b: 255 } });
  return img.removeAlpha();
}

/** Decodes any supported input to 8-bit RGB at its own size. */
export async function decodeImage(input: ImageInput, label: string, alpha: InputSpec['alpha'] = 'drop'): Promise<DecodedImage> {
  const img = openImage(input, label);
  try {
    const { data, info } = await alphaStep(img, alpha)
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels, expected 3`);
    return { rgb: data, width: info.width, height: info.height };
  } catch (cause) {
    if (cause instanceof InvalidInputError || cause instanceof InvalidArgumentError) throw cause;
    throw new InvalidInputError(label, `Cannot decode ${label}: ${(cause as Error).message}`, { cause });
  }
}

/** Resizes decoded RGB to the bundle's input size and normalizes it to NCHW float32. */
export async function toTensor(image: DecodedImage, spec: InputSpec, label: string): Promise<Float32Array> {
  let pixels: Buffer;
  if (image.width === spec.width && image.height === spec.height) {
    pixels = image.rgb;
  } else {
    try {
      pixels = await sharp(image.rgb, { raw: { width: image.width, height: image.height, channels: 3 } })
        .resize(spec.width, spec.height, { fit: 'fill', kernel: spec.resizeKernel })
        .raw()
        .toBuffer();
    } catch (cause) {
      throw new InvalidInputError(label, `Cannot resize ${label}: ${(cause as Error).message}`, { cause });
    }
  }
  const plane = spec.width * spec.height;
  const out = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    // (p/255 - mean)/std folded into one multiply-add per pixel
    const scale = 1 / (255 * spec.std[c]);
    const shift = -spec.mean[c] / spec.std[c];
    const base = c * plane;
    for (let i = 0; i < plane; i++) out[base + i] = pixels[3 * i + c] * scale + shift;
  }
  return out;
}

/** Stacks preprocessed images into one N x 3 x H x W batch (a fresh buffer, safe to transfer). */
export function stackTensors(images: readonly Pick<PreprocessedImage, 'tensor'>[]): Float32Array {
  const plane = images[0]?.tensor.length ?? 0;
  const batch = new Float32Array(images.length * plane);
  images.forEach((p, i) => batch.set(p.tensor, i * plane));
  return batch;
}

export async function preprocess(input: ImageInput, spec: InputSpec, label: string): Promise<PreprocessedImage> {
  const t0 = performance.now();
  const decoded = await decodeImage(input, label, spec.alpha);
  const t1 = performance.now();
  const tensor = await toTensor(decoded, spec, label);
  const t2 = performance.now();
  return { tensor, width: decoded.width, height: decoded.height, timings: { decodeMs: t1 - t0, preprocessMs: t2 - t1 } };
}
