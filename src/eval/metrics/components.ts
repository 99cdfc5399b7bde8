/**
 * Connected-component labelling of a binary mask with 8-connectivity, as
 * `scipy.ndimage.label(mask, structure=np.ones((3, 3)))`, which the MVTec AD AUPRO script and
 * anomalib's AUPRO use to split ground truth into regions.
 *
 * Two raster passes with a union-find over provisional labels: no recursion and no queue, so the
 * stack never grows with the mask (a 4000 x 4000 serpentine is fine). Memory: the Int32Array of
 * labels plus 4 bytes per provisional label.
 */
import { InvalidArgumentError } from '../../util/errors';
import { intInRange, invalidArgument } from '../../util/validate';

/** Labelled components of a mask. */
export interface Components {
  /** Row-major, one per pixel: 0 for background, 1..count for the component holding the pixel. */
  labels: Int32Array;
  /** Number of components. Labels are numbered in raster order of each component's first pixel. */
  count: number;
}

/** Iterative find with path halving. */
function find(parent: Int32Array, x: number): number {
  while (parent[x] !== x) {
    const g = parent[parent[x]];
    parent[x] = g;
    x = g;
  }
  return x;
}

/** Joins two sets, keeping the smaller root; returns it. */
function union(parent: Int32Array, a: number, b: number): number {
  let ra = find(parent, a);
  let rb = find(parent, b);
  if (ra === rb) return ra;
  if (rb < ra) {
    const t = ra;
    ra = rb;
    rb = t;
  }
  parent[rb] = ra;
  return ra;
}

/** The pure core: labels of a validated mask. */
function label(mask: ArrayLike<number>, width: number, height: number): Components {
  const labels = new Int32Array(width * height);
  let parent = new Int32Array(1024);
  let next = 1; // provisional label 0 is background
  for (let y = 0; y < height; y++) {
    const row = y * width;
    const up = row - width;
    for (let x = 0; x < width; x++) {
      const p = row + x;
      if (mask[p] === 0) continue;
      // Already-visited neighbours: W, NW, N, NE. N touches W, NW and NE, so when N is set every
      // other one is already in its set; otherwise NW/W touch each other but not NE.
      const w = x > 0 ? labels[p - 1] : 0;
      let l: number;
      if (y > 0 && labels[up + x] !== 0) {
        l = labels[up + x];
      } else {
        const nw = y > 0 && x > 0 ? labels[up + x - 1] : 0;
        const ne = y > 0 && x + 1 < width ? labels[up + x + 1] : 0;
        const left = w !== 0 ? w : nw;
        if (left !== 0 && ne !== 0) l = union(parent, left, ne);
        else if (left !== 0) l = left;
        else if (ne !== 0) l = ne;
        else {
          if (next === parent.length) {
            const grown = new Int32Array(parent.length * 2);
            grown.set(parent);
            parent = grown;
          }
          parent[next] = next;
          l = next++;
        }
      }
      labels[p] = l;
    }
  }
  // Second pass: resolve each provisional label to its root, then number roots in raster order.
  const final = new Int32Array(next);
  let count = 0;
  for (let p = 0; p < labels.length; p++) {
    const l = labels[p];
    if (l === 0) continue;
    const r = find(parent, l);
    if (final[r] === 0) final[r] = ++count;
    labels[p] = final[r];
  }
  return { labels, count };
}

/**
 * Labels the 8-connected components of a binary mask (nonzero = foreground, so 0/1 and 0/255
 * masks both work).
 *
 * @param mask row-major, `width * height` entries
 * @throws InvalidArgumentError when width or height is not a positive integer or the mask's length
 *   is not `width * height`
 */
export function connectedComponents(mask: Uint8Array, width: number, height: number): Components {
  intInRange('width', width, 1, 2 ** 31 - 1);
  intInRange('height', height, 1, 2 ** 31 - 1);
  if (mask == null || typeof mask.length !== 'number') throw invalidArgument('mask', 'a Uint8Array', mask);
  if (mask.length !== width * height) {
    throw new InvalidArgumentError('mask', `Expected mask of length width * height (${width * height}) but received length ${mask.length}`);
  }
  return label(mask, width, height);
}
