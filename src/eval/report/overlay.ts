/** Heat-map overlays: the anomaly map in a jet palette, blended over the image, written with sharp. */
import sharp from 'sharp';
import type { DecodedImage } from '../../runtime/preprocess';

/** Jet palette, 0 -> blue, 0.5 -> green, 1 -> red. */
function jet(value: number): [number, number, number] {
  const v = Math.min(1, Math.max(0, value)); // values past the range saturate at the ends
  const c = (x: number) => Math.round(255 * Math.min(1, Math.max(0, x)));
  return [c(1.5 - Math.abs(4 * v - 3)), c(1.5 - Math.abs(4 * v - 2)), c(1.5 - Math.abs(4 * v - 1))];
}

export interface OverlayOptions {
  /** map values mapped to the ends of the palette; default the map's own min and max */
  range?: [number, number];
  /** weight of the heat map in the blend, 0..1; default 0.5 */
  alpha?: number;
}

/** Returns PNG bytes of `map` (image.width x image.height) blended over the image. */
export async function renderOverlay(image: DecodedImage, map: Float32Array, options: OverlayOptions = {}): Promise<Buffer> {
  const n = image.width * image.height;
  if (map.length !== n) throw new RangeError(`map has ${map.length} values, image has ${n} pixels`);
  let [lo, hi] = options.range ?? [Infinity, -Infinity];
  if (!options.range) {
    for (let i = 0; i < n; i++) {
      lo = Math.min(lo, map[i]);
      hi = Math.max(hi, map[i]);
    }
  }
  const span = hi > lo ? hi - lo : 1;
  const alpha = options.alpha ?? 0.5;
  const out = Buffer.alloc(3 * n);
  for (let i = 0; i < n; i++) {
    const rgb = jet((map[i] - lo) / span);
    for (let c = 0; c < 3; c++) out[3 * i + c] = Math.round((1 - alpha) * image.rgb[3 * i + c] + alpha * rgb[c]);
  }
  return sharp(out, { raw: { width: image.width, height: image.height, channels: 3 } })
    .png()
    .toBuffer();
}
