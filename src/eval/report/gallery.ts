/** Gallery entries for the evaluation report: heat-map overlay plus ground-truth outline, as a small base64 PNG. */
import sharp from 'sharp';
import { renderOverlay } from './overlay';
import { decodeImage } from '../../runtime/preprocess';
import type { GalleryItem } from './types';

export interface GalleryItemOptions {
  kind: GalleryItem['kind'];
  score: number;
  threshold: number;
  /** 'good' or the defect type */
  label: GalleryItem['label'];
  /** map values at the ends of the palette; default the map's own min and max. Pass one range for all items to compare them. */
  range?: [number, number];
  /** longest side of the stored PNG in pixels; larger images are shrunk (never enlarged). Default 256. */
  maxSide?: number;
  /** weight of the heat map in the blend, 0..1; default 0.5 (renderOverlay's default) */
  alpha?: number;
}

/** Colour of the ground-truth outline: magenta does not occur in the jet palette. */
export const OUTLINE_RGB: readonly [number, number, number] = [255, 0, 255];

/**
 * Marks the outline of a binary mask: mask pixels (nonzero) with at least one
 * 4-neighbour that is background (zero). Pixels outside the image do not count
 * as background, so a defect touching the border is not outlined along it.
 */
export function maskOutline(mask: Uint8Array, width: number, height: number): Uint8Array {
  const out = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      if (!mask[i]) continue;
      if ((x > 0 && !mask[i - 1]) || (x < width - 1 && !mask[i + 1]) || (y > 0 && !mask[i - width]) || (y < height - 1 && !mask[i + width])) out[i] = 1;
    }
  }
  return out;
}

/**
 * Decodes `file`, blends `map` (one value per pixel, row-major, at the image's
 * own size) over it, shrinks it to `maxSide`, draws the outline of `mask`
 * (nonzero = defect, same size as the image; null for none) in magenta and
 * returns the gallery entry with the PNG as base64.
 *
 * The outline is drawn after shrinking, on the mask resized with nearest
 * neighbour, so it stays one crisp pixel wide instead of being blurred away.
 */
export async function galleryItem(file: string, map: Float32Array, mask: Uint8Array | null, opts: GalleryItemOptions): Promise<GalleryItem> {
  const maxSide = opts.maxSide ?? 256;
  if (!Number.isInteger(maxSide) || maxSide < 1) throw new RangeError(`maxSide must be a positive integer, got ${String(opts.maxSide)}`);
  const image = await decodeImage(file, file);
  const { width, height } = image;
  const n = width * height;
  if (map.length !== n) throw new RangeError(`${file}: map has ${map.length} values, image is ${width}x${height} = ${n} pixels`);
  if (mask && mask.length !== n) throw new RangeError(`${file}: mask has ${mask.length} values, image is ${width}x${height} = ${n} pixels`);

  const overlayPng = await renderOverlay(image, map, { range: opts.range, alpha: opts.alpha });
  const scale = Math.min(1, maxSide / Math.max(width, height));
  const ow = Math.max(1, Math.round(width * scale));
  const oh = Math.max(1, Math.round(height * scale));

  let img = sharp(overlayPng).removeAlpha().toColourspace('srgb');
  if (ow !== width || oh !== height) img = img.resize(ow, oh, { fit: 'fill', kernel: 'lanczos3' });
  const { data: pixels, info } = await img.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || info.width !== ow || info.height !== oh) {
    throw new Error(`overlay of ${file} came back ${info.width}x${info.height}x${info.channels}, expected ${ow}x${oh}x3`);
  }

  if (mask) {
    // the mask at the output size, nearest neighbour (pixel centres)
    const small = new Uint8Array(ow * oh);
    let any = false;
    for (let y = 0; y < oh; y++) {
      const sy = Math.min(height - 1, Math.floor(((y + 0.5) * height) / oh));
      for (let x = 0; x < ow; x++) {
        const sx = Math.min(width - 1, Math.floor(((x + 0.5) * width) / ow));
        if (mask[sy * width + sx]) {
          small[y * ow + x] = 1;
          any = true;
        }
      }
    }
    if (any) {
      const edge = maskOutline(small, ow, oh);
      for (let i = 0; i < ow * oh; i++) {
        if (!edge[i]) continue;
        pixels[3 * i] = OUTLINE_RGB[0];
        pixels[3 * i + 1] = OUTLINE_RGB[1];
        pixels[3 * i + 2] = OUTLINE_RGB[2];
      }
    }
  }

  const png = await sharp(pixels, { raw: { width: ow, height: oh, channels: 3 } })
    .png({ compressionLevel: 9 })
    .toBuffer();
  return { file, kind: opts.kind, score: opts.score, threshold: opts.threshold, label: opts.label, overlayPng: png.toString('base64') };
}
