import { mulberry32 } from '../src/util/prng';
import {
  auroc,
  averagePrecision,
  connectedComponents,
  f1Max,
  pixelAurocExact,
  pixelAveragePrecisionExact,
  PixelMetricsAccumulator,
  precisionRecallCurve,
  ProAccumulator,
  rocCurve,
} from '../src/eval/metrics';
import { InvalidArgumentError } from '../src/util/errors';

// Expected values are worked out by hand in the comments (scikit-learn is not installed here);
// randomized cases are checked against brute-force definitions written independently below.

const rng = mulberry32;

function expectInvalid(fn: () => unknown, argument?: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(InvalidArgumentError);
  expect((caught as InvalidArgumentError).code).toBe('ERR_INVAD_INVALID_ARGUMENT');
  if (argument !== undefined) expect((caught as InvalidArgumentError).argument).toBe(argument);
}

function expectArrayClose(actual: ArrayLike<number>, expected: number[], digits = 12): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    if (expected[i] === Infinity) expect(actual[i]).toBe(Infinity);
    else expect(actual[i]).toBeCloseTo(expected[i], digits);
  }
}

/** P(score+ > score-) + P(tie) / 2 over all pairs: the Mann-Whitney definition of AUROC. */
function bruteAuroc(scores: number[], labels: number[]): number {
  let sum = 0;
  let pairs = 0;
  for (let i = 0; i < scores.length; i++) {
    if (labels[i] !== 1) continue;
    for (let j = 0; j < scores.length; j++) {
      if (labels[j] !== 0) continue;
      pairs++;
      if (scores[i] > scores[j]) sum += 1;
      else if (scores[i] === scores[j]) sum += 0.5;
    }
  }
  return sum / pairs;
}

/** Mean over positives of the precision at the threshold equal to their score (= sklearn AP). */
function bruteAp(scores: number[], labels: number[]): number {
  let sum = 0;
  let positives = 0;
  for (let i = 0; i < scores.length; i++) {
    if (labels[i] !== 1) continue;
    positives++;
    let tp = 0;
    let all = 0;
    for (let j = 0; j < scores.length; j++) {
      if (scores[j] >= scores[i]) {
        all++;
        if (labels[j] === 1) tp++;
      }
    }
    sum += tp / all;
  }
  return sum / positives;
}

describe('rocCurve / auroc', () => {
  // sklearn docs example. Sorted by decreasing score: 0.8 (pos), 0.4 (neg), 0.35 (pos), 0.1 (neg).
  // Cumulative (tp, fp) after each distinct score: (1,0) (1,1) (2,1) (2,2); with P = N = 2 and the
  // starting point: fpr [0, 0, .5, .5, 1], tpr [0, .5, .5, 1, 1], thresholds [inf, .8, .4, .35, .1].
  // Trapezoids: 0 + 0.5 * 0.5 + 0 + 0.5 * 1 = 0.75 (pairs: 0.8 beats both, 0.35 beats 0.1: 3/4).
  const scores = [0.1, 0.4, 0.35, 0.8];
  const labels = [0, 0, 1, 1];

  test('sklearn documentation example', () => {
    const c = rocCurve(scores, labels);
    expectArrayClose(c.fpr, [0, 0, 0.5, 0.5, 1]);
    expectArrayClose(c.tpr, [0, 0.5, 0.5, 1, 1]);
    expectArrayClose(c.thresholds, [Infinity, 0.8, 0.4, 0.35, 0.1]);
    expect(auroc(scores, labels)).toBe(0.75);
    expect(auroc(scores, [false, false, true, true])).toBe(0.75);
  });

  test('ties move together: diagonal segment, 1/2 per tied pair', () => {
    // 0.9 (pos) | 0.5 (pos, neg) | 0.2 (neg): (tp, fp) = (1,0) (2,1) (2,2).
    // fpr [0, 0, .5, 1], tpr [0, .5, 1, 1]; area = 0 + .5 * (.5 + 1) / 2 + .5 * 1 = 0.875,
    // = pairs (0.9>0.5, 0.9>0.2, 0.5=0.5 -> 1/2, 0.5>0.2) = 3.5 / 4.
    const c = rocCurve([0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1]);
    expectArrayClose(c.fpr, [0, 0, 0.5, 1]);
    expectArrayClose(c.tpr, [0, 0.5, 1, 1]);
    expectArrayClose(c.thresholds, [Infinity, 0.9, 0.5, 0.2]);
    expect(auroc([0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1])).toBe(0.875);
  });

  test('all scores equal: one diagonal, AUROC 0.5', () => {
    const c = rocCurve([3, 3, 3, 3, 3], [1, 0, 0, 1, 0]);
    expectArrayClose(c.fpr, [0, 1]);
    expectArrayClose(c.tpr, [0, 1]);
    expectArrayClose(c.thresholds, [Infinity, 3]);
    expect(auroc([3, 3, 3, 3, 3], [1, 0, 0, 1, 0])).toBe(0.5);
  });

  test('perfect and inverted rankings', () => {
    expect(auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])).toBe(1);
    expect(auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1])).toBe(0);
  });

  test('matches the Mann-Whitney definition on random data with ties', () => {
    const r = rng(1);
    for (let trial = 0; trial < 20; trial++) {
      const n = 5 + Math.floor(r() * 200);
      const s: number[] = [];
      const l: number[] = [];
      for (let i = 0; i < n; i++) {
        const y = r() < 0.3 ? 1 : 0;
        l.push(y);
        s.push(Math.round((r() + 0.3 * y) * 20) / 20); // coarse: many ties
      }
      if (!l.includes(0)) l[0] = 0;
      if (!l.includes(1)) l[1] = 1;
      expect(auroc(s, l)).toBeCloseTo(bruteAuroc(s, l), 12);
      const c = rocCurve(s, l);
      expect(c.fpr[0]).toBe(0);
      expect(c.tpr[0]).toBe(0);
      expect(c.fpr[c.fpr.length - 1]).toBe(1);
      expect(c.tpr[c.tpr.length - 1]).toBe(1);
      for (let i = 1; i < c.thresholds.length; i++) expect(c.thresholds[i]).toBeLessThan(c.thresholds[i - 1]);
    }
  });
});

describe('precisionRecallCurve / averagePrecision / f1Max', () => {
  const scores = [0.1, 0.4, 0.35, 0.8];
  const labels = [0, 0, 1, 1];

  test('sklearn documentation example', () => {
    // Increasing thresholds 0.1, 0.35, 0.4, 0.8 keep (tp, fp) = (2,2) (2,1) (1,1) (1,0):
    // precision 2/4, 2/3, 1/2, 1/1 then the final 1; recall 1, 1, 1/2, 1/2 then the final 0.
    const c = precisionRecallCurve(scores, labels);
    expectArrayClose(c.precision, [0.5, 2 / 3, 0.5, 1, 1]);
    expectArrayClose(c.recall, [1, 1, 0.5, 0.5, 0]);
    expectArrayClose(c.thresholds, [0.1, 0.35, 0.4, 0.8]);
    // AP = sum (R_n - R_{n-1}) P_n from the top: 0.8 -> recall 1/2 at precision 1, 0.35 -> recall
    // +1/2 at precision 2/3: 0.5 + 1/3 = 0.8333... (sklearn docs: 0.83...).
    expect(averagePrecision(scores, labels)).toBeCloseTo(5 / 6, 14);
  });

  test('f1Max on the same example', () => {
    // F1 = 2PR/(P+R) at 0.1: 2(.5)(1)/1.5 = 2/3; at 0.35: 2(2/3)(1)/(5/3) = 0.8; at 0.4: 0.5;
    // at 0.8: 2(1)(.5)/1.5 = 2/3. Max 0.8 at threshold 0.35.
    const m = f1Max(scores, labels);
    expect(m.f1).toBeCloseTo(0.8, 14);
    expect(m.threshold).toBe(0.35);
  });

  test('f1Max keeps the lowest threshold among equal maxima', () => {
    // Thresholds 1, 2, 3 with labels 1, 0, 1: at 1: tp 2 fp 1 -> F1 = 4/5; at 2: tp 1 fp 1 ->
    // 2/4; at 3: tp 1 fp 0 -> 2/3. Max 0.8 at 1.
    expect(f1Max([1, 2, 3], [1, 0, 1])).toEqual({ f1: 0.8, threshold: 1 });
    // Scores 1 (neg), 2 (pos): at 1: F1 = 2/3; at 2: 1. Max 1 at 2.
    expect(f1Max([1, 2], [0, 1])).toEqual({ f1: 1, threshold: 2 });
  });

  test('all scores equal: AP = positive rate, one PR point', () => {
    // One threshold: tp = 2, fp = 3: precision 2/5, recall 1 -> AP = 1 * 2/5.
    expect(averagePrecision([7, 7, 7, 7, 7], [1, 0, 0, 1, 0])).toBeCloseTo(0.4, 15);
    const c = precisionRecallCurve([7, 7, 7, 7, 7], [1, 0, 0, 1, 0]);
    expectArrayClose(c.precision, [0.4, 1]);
    expectArrayClose(c.recall, [1, 0]);
    expectArrayClose(c.thresholds, [7]);
    // F1 = 2 * 2 / (2 + 3 + 2) = 4/7.
    expect(f1Max([7, 7, 7, 7, 7], [1, 0, 0, 1, 0]).f1).toBeCloseTo(4 / 7, 15);
  });

  test('only positives: AP 1 (as sklearn)', () => {
    expect(averagePrecision([0.2, 0.5], [1, 1])).toBe(1);
  });

  test('matches the per-positive precision definition on random data with ties', () => {
    const r = rng(2);
    for (let trial = 0; trial < 20; trial++) {
      const n = 5 + Math.floor(r() * 200);
      const s: number[] = [];
      const l: number[] = [];
      for (let i = 0; i < n; i++) {
        const y = r() < 0.3 ? 1 : 0;
        l.push(y);
        s.push(Math.round((r() + 0.3 * y) * 20) / 20);
      }
      if (!l.includes(1)) l[1] = 1;
      expect(averagePrecision(s, l)).toBeCloseTo(bruteAp(s, l), 12);
      // F1-max by brute force over every distinct score.
      const P = l.filter((y) => y === 1).length;
      let best = 0;
      for (const t of new Set(s)) {
        let tp = 0;
        let fp = 0;
        for (let i = 0; i < n; i++) {
          if (!(s[i] >= t)) continue;
          if (l[i] === 1) tp++;
          else fp++;
        }
        best = Math.max(best, (2 * tp) / (tp + fp + P));
      }
      expect(f1Max(s, l).f1).toBeCloseTo(best, 14);
    }
  });
});

describe('input validation', () => {
  test('scores and labels', () => {
    expectInvalid(() => auroc([0.1, 0.2], [0, 1, 1]), 'labels'); // length mismatch
    expectInvalid(() => auroc([], []), 'scores');
    expectInvalid(() => auroc([0.1, NaN], [0, 1]), 'scores[1]');
    expectInvalid(() => rocCurve([0.1, Infinity], [0, 1]), 'scores[1]');
    expectInvalid(() => auroc([0.1, 0.2], [0, 2]), 'labels[1]');
    expectInvalid(() => auroc([0.1, 0.2], [1, 1]), 'labels'); // single class
    expectInvalid(() => rocCurve([0.1, 0.2], [0, 0]), 'labels');
    expectInvalid(() => averagePrecision([0.1, 0.2], [0, 0]), 'labels'); // no positive
    expectInvalid(() => f1Max([0.1, NaN], [0, 1]), 'scores[1]');
    expectInvalid(() => precisionRecallCurve([0.1], [1, 0]), 'labels');
  });

  test('components, pixel and PRO accumulators', () => {
    expectInvalid(() => connectedComponents(new Uint8Array(5), 2, 2), 'mask');
    expectInvalid(() => connectedComponents(new Uint8Array(4), 2.5, 2), 'width');
    expectInvalid(() => new PixelMetricsAccumulator({ range: [1, 0] }), 'options.range');
    expectInvalid(() => new PixelMetricsAccumulator({ range: [0, 1], bins: 0 }), 'options.bins');
    const acc = new PixelMetricsAccumulator({ range: [0, 1], bins: 4 });
    expectInvalid(() => acc.add(new Float32Array(3), new Uint8Array(2)), 'mask');
    expectInvalid(() => acc.auroc(), 'masks'); // nothing added: one class at most
    acc.add(new Float32Array([0.1, 0.9]), new Uint8Array([0, 1]));
    expectInvalid(() => acc.add(new Float32Array([0.2, 0.3, NaN]), new Uint8Array([1, 0, 0])), 'map[2]');
    // The rejected chunk left nothing behind.
    expect([acc.positives, acc.negatives]).toEqual([1, 1]);
    expect(acc.auroc()).toBe(1);
    expectInvalid(() => pixelAurocExact([new Float32Array(2)], [new Uint8Array(3)]), 'masks[0]');
    expectInvalid(() => pixelAurocExact([new Float32Array(2)], []), 'masks');

    expectInvalid(() => new ProAccumulator({ bins: 10 }), 'options.bins'); // bins need a range
    const pro = new ProAccumulator();
    expectInvalid(() => pro.add(new Float32Array(3), new Uint8Array(4), 2, 2), 'map');
    expectInvalid(() => pro.add(new Float32Array([0, NaN, 0, 0]), new Uint8Array(4), 2, 2), 'map[1]');
    pro.add(new Float32Array(4), new Uint8Array(4), 2, 2);
    expectInvalid(() => pro.aupro(), 'mask'); // no region yet
    pro.add(new Float32Array([1, 0, 0, 0]), new Uint8Array([1, 0, 0, 0]), 2, 2);
    expectInvalid(() => pro.aupro(0), 'maxFpr');
    expectInvalid(() => pro.aupro(1.5), 'maxFpr');
    expect(pro.aupro()).toBeCloseTo(1, 12);
  });
});

/** 4-neighbour-free reference labelling: breadth-first flood fill with 8 neighbours. */
function bruteComponents(mask: Uint8Array, w: number, h: number): { labels: Int32Array; count: number } {
  const labels = new Int32Array(w * h);
  let count = 0;
  for (let p = 0; p < w * h; p++) {
    if (mask[p] === 0 || labels[p] !== 0) continue;
    count++;
    const queue = [p];
    labels[p] = count;
    while (queue.length > 0) {
      const q = queue.pop() as number;
      const x = q % w;
      const y = (q - x) / w;
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) {
          const nx = x + dx;
          const ny = y + dy;
          if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
          const n = ny * w + nx;
          if (mask[n] !== 0 && labels[n] === 0) {
            labels[n] = count;
            queue.push(n);
          }
        }
      }
    }
  }
  return { labels, count };
}

describe('connectedComponents', () => {
  test('diagonal neighbours join (8-connectivity)', () => {
    // (0,0)-(1,1) touch diagonally: one region. (3,1)-(3,2) vertical; (0,3)-(1,3) horizontal.
    // 4-connectivity would give 4 regions; 8-connectivity gives 3, numbered in raster order.
    // prettier-ignore
    const mask = new Uint8Array([
      1, 0, 0, 0,
      0, 1, 0, 1,
      0, 0, 0, 1,
      1, 1, 0, 0,
    ]);
    const { labels, count } = connectedComponents(mask, 4, 4);
    expect(count).toBe(3);
    // prettier-ignore
    expect(Array.from(labels)).toEqual([
      1, 0, 0, 0,
      0, 1, 0, 2,
      0, 0, 0, 2,
      3, 3, 0, 0,
    ]);
  });

  test('merges provisional labels (U shape, NE join, 0/255 mask)', () => {
    // prettier-ignore
    const u = new Uint8Array([
      255, 0, 255,
      255, 0, 255,
      255, 255, 255,
    ]);
    const a = connectedComponents(u, 3, 3);
    expect(a.count).toBe(1);
    expect(Array.from(a.labels)).toEqual([1, 0, 1, 1, 0, 1, 1, 1, 1]);
    // (1,1) starts from NW = (0,0); (2,1) then joins W with NE = (3,0).
    const b = connectedComponents(new Uint8Array([1, 0, 0, 1, 0, 1, 1, 0]), 4, 2);
    expect(b.count).toBe(1);
    expect(Array.from(b.labels)).toEqual([1, 0, 0, 1, 0, 1, 1, 0]);
    expect(connectedComponents(new Uint8Array(6), 3, 2).count).toBe(0);
  });

  test('matches a flood fill on random masks', () => {
    const r = rng(3);
    for (let trial = 0; trial < 30; trial++) {
      const w = 1 + Math.floor(r() * 40);
      const h = 1 + Math.floor(r() * 40);
      const density = 0.2 + 0.4 * r();
      const mask = new Uint8Array(w * h);
      for (let i = 0; i < mask.length; i++) mask[i] = r() < density ? 1 : 0;
      const got = connectedComponents(mask, w, h);
      const want = bruteComponents(mask, w, h);
      expect(got.count).toBe(want.count);
      expect(Buffer.from(got.labels.buffer).equals(Buffer.from(want.labels.buffer))).toBe(true);
    }
  });

  test('4000 x 4000 serpentine and checkerboard, no recursion', () => {
    const w = 4000;
    const h = 4000;
    // Full even rows joined alternately at the right and left ends: one path of ~8e6 pixels, which
    // a recursive fill would follow 8e6 frames deep.
    const snake = new Uint8Array(w * h);
    for (let y = 0; y < h; y++) {
      if (y % 2 === 0) snake.fill(1, y * w, (y + 1) * w);
      else snake[y * w + (y % 4 === 1 ? w - 1 : 0)] = 1;
    }
    let t = performance.now();
    const s = connectedComponents(snake, w, h);
    const snakeMs = performance.now() - t;
    expect(s.count).toBe(1);
    // Checkerboard: 8e6 pixels joined only diagonally (4-connectivity would give 8e6 regions).
    const checker = new Uint8Array(w * h);
    for (let y = 0; y < h; y++) for (let x = y & 1; x < w; x += 2) checker[y * w + x] = 1;
    t = performance.now();
    const c = connectedComponents(checker, w, h);
    const checkerMs = performance.now() - t;
    expect(c.count).toBe(1);
    console.log(`connectedComponents 4000x4000: serpentine ${snakeMs.toFixed(0)} ms, checkerboard ${checkerMs.toFixed(0)} ms`);
  });
});

describe('ProAccumulator (AUPRO)', () => {
  // Two 2x2 images, row-major.
  // A: mask [1,0,0,1] -> pixels 0 and 3 touch diagonally: ONE region of size 2 (weights 1/2).
  //    map  [.85, .65, .25, .45]: region values .85, .45; normal .65, .25.
  // B: mask [0,0,0,1] -> one region of size 1; map [.75, .35, .15, .65]: region .65;
  //    normal .75, .35, .15.
  // R = 2 regions, N = 5 normal pixels. Sweep (>= t), PRO = overlap sum / 2, FPR = fp / 5:
  //   +inf: (0, 0)
  //   .85: region A half in      -> (0,  .25)
  //   .75: B normal              -> (.2, .25)
  //   .65: A normal + B region   -> (.4, .75)   (tie: a diagonal from (.2,.25))
  //   .45: region A complete     -> (.4, 1)
  //   .35, .25, .15: normals     -> (.6, 1) (.8, 1) (1, 1)
  // AUPRO(0.3): .2 * .25 = .05; PRO(.3) on the diagonal = .25 + (.1/.2) * .5 = .5,
  //   trapezoid .1 * (.25 + .5) / 2 = .0375; (.05 + .0375) / .3 = 7/24 = 0.291666...
  // AUPRO(0.4): .05 + .2 * (.25 + .75) / 2 = .15, / .4 = 0.375.
  // AUPRO(1):   .15 + .6 * 1 = .75, / 1 = 0.75.
  // (4-connectivity would split A into two regions and give 0.3611 at 0.3.)
  const maps = [new Float32Array([0.85, 0.65, 0.25, 0.45]), new Float32Array([0.75, 0.35, 0.15, 0.65])];
  const masks = [new Uint8Array([1, 0, 0, 1]), new Uint8Array([0, 0, 0, 1])];

  test.each([
    ['exact', {}],
    ['histogram, 10 bins (values on bin centres)', { range: [0, 1] as [number, number], bins: 10 }],
  ])('hand-worked two-image case (%s)', (_name, opts) => {
    const acc = new ProAccumulator(opts);
    acc.add(maps[0], masks[0], 2, 2);
    acc.add(maps[1], masks[1], 2, 2);
    expect(acc.regions).toBe(2);
    expect(acc.negatives).toBe(5);
    const c = acc.curve();
    expectArrayClose(c.fpr, [0, 0, 0.2, 0.4, 0.4, 0.6, 0.8, 1]);
    expectArrayClose(c.pro, [0, 0.25, 0.25, 0.75, 1, 1, 1, 1]);
    expect(acc.aupro()).toBeCloseTo(7 / 24, 12);
    expect(acc.aupro(0.4)).toBeCloseTo(0.375, 12);
    expect(acc.aupro(1)).toBeCloseTo(0.75, 12);
  });

  test('region fully detected before any false positive: AUPRO 1', () => {
    // A: region {0, 1} scored .9, .8; every normal pixel (A: .1, .2; B: .3-.6) is below .8, so
    // PRO reaches 1 at FPR 0 and stays there: area .3 * 1 / .3 = 1.
    const acc = new ProAccumulator();
    acc.add(new Float32Array([0.9, 0.8, 0.1, 0.2]), new Uint8Array([1, 1, 0, 0]), 2, 2);
    acc.add(new Float32Array([0.3, 0.4, 0.5, 0.6]), new Uint8Array(4), 2, 2);
    expect(acc.aupro()).toBeCloseTo(1, 12);
    const h = new ProAccumulator({ range: [0, 1] });
    h.add(new Float32Array([0.9, 0.8, 0.1, 0.2]), new Uint8Array([1, 1, 0, 0]), 2, 2);
    h.add(new Float32Array([0.3, 0.4, 0.5, 0.6]), new Uint8Array(4), 2, 2);
    expect(h.aupro()).toBeCloseTo(1, 12);
  });

  /** Direct MVTec-style sweep: every distinct value a threshold, regions by flood fill. */
  function bruteAupro(ms: Float32Array[], ks: Uint8Array[], w: number, h: number, maxFpr: number): number {
    const regions: number[][] = [];
    const normals: number[] = [];
    ms.forEach((m, k) => {
      const { labels, count } = bruteComponents(ks[k], w, h);
      for (let r = 1; r <= count; r++) regions.push([]);
      const base = regions.length - count;
      for (let i = 0; i < m.length; i++) {
        if (labels[i] === 0) normals.push(m[i]);
        else regions[base + labels[i] - 1].push(m[i]);
      }
    });
    const all = [...new Set(ms.flatMap((m) => Array.from(m)))].sort((a, b) => b - a);
    const pts: Array<[number, number]> = [[0, 0]];
    for (const t of all) {
      const fpr = normals.filter((v) => v >= t).length / normals.length;
      const pro = regions.reduce((s, reg) => s + reg.filter((v) => v >= t).length / reg.length, 0) / regions.length;
      pts.push([fpr, pro]);
    }
    let area = 0;
    for (let i = 1; i < pts.length; i++) {
      const [x0, y0] = pts[i - 1];
      const [x1, y1] = pts[i];
      if (x0 >= maxFpr) break;
      if (x1 <= maxFpr) area += ((x1 - x0) * (y0 + y1)) / 2;
      else {
        const y = y0 + ((y1 - y0) * (maxFpr - x0)) / (x1 - x0);
        area += ((maxFpr - x0) * (y0 + y)) / 2;
        break;
      }
    }
    return area / maxFpr;
  }

  test('exact mode matches a brute-force sweep; histogram within its bound', () => {
    const r = rng(4);
    const w = 24;
    const h = 16;
    let worst = 0;
    let worstBound = 0;
    for (let trial = 0; trial < 5; trial++) {
      const ms: Float32Array[] = [];
      const ks: Uint8Array[] = [];
      for (let k = 0; k < 4; k++) {
        const mask = new Uint8Array(w * h);
        const map = new Float32Array(w * h);
        // A few blobs; anomalous pixels score higher on average, coarse values make ties.
        for (let b = 0; b < 3; b++) {
          const cx = Math.floor(r() * w);
          const cy = Math.floor(r() * h);
          const rad = 1 + r() * 3;
          for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) if ((x - cx) ** 2 + (y - cy) ** 2 <= rad * rad) mask[y * w + x] = 1;
        }
        for (let i = 0; i < map.length; i++) map[i] = Math.round((r() + (mask[i] ? 0.6 * r() : 0)) * 200) / 200;
        ms.push(map);
        ks.push(mask);
      }
      const exact = new ProAccumulator();
      // 50 bins of width .032 each hold several of the 1/200-spaced values: a real approximation.
      const hist = new ProAccumulator({ range: [0, 1.6], bins: 50 });
      for (let k = 0; k < ms.length; k++) {
        exact.add(ms[k], ks[k], w, h);
        hist.add(ms[k], ks[k], w, h);
      }
      for (const maxFpr of [0.05, 0.3, 1]) {
        const want = bruteAupro(ms, ks, w, h, maxFpr);
        expect(exact.aupro(maxFpr)).toBeCloseTo(want, 12);
        expect(exact.auproErrorBound(maxFpr)).toBe(0);
        const diff = Math.abs(hist.aupro(maxFpr) - want);
        const bound = hist.auproErrorBound(maxFpr);
        expect(diff).toBeLessThanOrEqual(bound + 1e-12);
        worst = Math.max(worst, diff);
        worstBound = Math.max(worstBound, bound);
      }
    }
    console.log(`AUPRO 50 bins vs exact: max |diff| ${worst.toExponential(2)}, max bound ${worstBound.toExponential(2)}`);
  });
  test('default 10,000 bins vs exact on continuous 128x128 maps', () => {
    const r = rng(7);
    const w = 128;
    const h = 128;
    const exact = new ProAccumulator();
    const hist = new ProAccumulator({ range: [0, 2] });
    for (let k = 0; k < 16; k++) {
      const mask = new Uint8Array(w * h);
      const map = new Float32Array(w * h);
      const cx = r() * w;
      const cy = r() * h;
      const rad = 3 + r() * 12;
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const d = Math.hypot(x - cx, y - cy);
          if (k % 4 !== 0 && d <= rad) mask[y * w + x] = 1; // every 4th image is normal
          map[y * w + x] = r() * 0.8 + (mask[y * w + x] ? 0.5 * r() + 0.2 : 0);
        }
      }
      exact.add(map, mask, w, h);
      hist.add(map, mask, w, h);
    }
    const want = exact.aupro();
    const diff = Math.abs(hist.aupro() - want);
    const bound = hist.auproErrorBound();
    console.log(`AUPRO 10,000 bins, 262,144 px: exact ${want.toFixed(6)}, |diff| ${diff.toExponential(2)}, bound ${bound.toExponential(2)}`);
    expect(diff).toBeLessThanOrEqual(bound + 1e-12);
    expect(diff).toBeLessThan(1e-4);
  });
});

describe('PixelMetricsAccumulator (pixel AUROC / AP)', () => {
  /** 10 images of 1e5 pixels: normal ~ mean of two uniforms, anomalous shifted by 0.25. */
  function randomImages(seed: number, n: number): { maps: Float32Array[]; masks: Uint8Array[] } {
    const r = rng(seed);
    const maps: Float32Array[] = [];
    const masks: Uint8Array[] = [];
    for (let k = 0; k < 10; k++) {
      const map = new Float32Array(n);
      const mask = new Uint8Array(n);
      for (let i = 0; i < n; i++) {
        const y = r() < 0.05 ? 1 : 0;
        mask[i] = y;
        map[i] = (r() + r()) / 2.5 + 0.25 * y; // in [0, 1.05)
      }
      maps.push(map);
      masks.push(mask);
    }
    return { maps, masks };
  }

  test('histogram (2^16 bins) equals exact within 1e-4 on 1e6 continuous pixels', () => {
    const { maps, masks } = randomImages(5, 100_000);
    const acc = new PixelMetricsAccumulator({ range: [0, 1] }); // some values above 1: clamped
    for (let k = 0; k < maps.length; k++) acc.add(maps[k], masks[k]);
    expect(acc.positives + acc.negatives).toBe(1_000_000);
    expect(acc.outOfRange).toBeGreaterThan(0);
    const exactRoc = pixelAurocExact(maps, masks);
    const exactAp = pixelAveragePrecisionExact(maps, masks);
    const dRoc = Math.abs(acc.auroc() - exactRoc);
    const dAp = Math.abs(acc.averagePrecision() - exactAp);
    const bound = acc.errorBounds();
    console.log(
      `pixel 1e6: AUROC exact ${exactRoc.toFixed(6)} |diff| ${dRoc.toExponential(2)} (bound ${bound.auroc.toExponential(2)}); ` +
        `AP exact ${exactAp.toFixed(6)} |diff| ${dAp.toExponential(2)} (bound ${bound.averagePrecision.toExponential(2)})`,
    );
    expect(dRoc).toBeLessThanOrEqual(1e-4);
    expect(dAp).toBeLessThanOrEqual(1e-4);
    expect(dRoc).toBeLessThanOrEqual(bound.auroc + 1e-15);
    expect(dAp).toBeLessThanOrEqual(bound.averagePrecision + 1e-15);
  });

  test.each([256, 65536])('exactly equal when values sit on bin centres (%i bins)', (bins) => {
    const r = rng(6);
    const maps: Float32Array[] = [];
    const masks: Uint8Array[] = [];
    for (let k = 0; k < 4; k++) {
      const map = new Float32Array(50_000);
      const mask = new Uint8Array(50_000);
      for (let i = 0; i < map.length; i++) {
        const y = r() < 0.1 ? 1 : 0;
        const level = Math.min(bins - 1, Math.floor((r() * 0.7 + 0.3 * y) * bins));
        mask[i] = y;
        map[i] = 2 + (level + 0.5) / bins; // centre of bin `level` of [2, 3]
      }
      maps.push(map);
      masks.push(mask);
    }
    const acc = new PixelMetricsAccumulator({ range: [2, 3], bins });
    for (let k = 0; k < maps.length; k++) acc.add(maps[k], masks[k]);
    expect(acc.outOfRange).toBe(0);
    expect(acc.auroc()).toBe(pixelAurocExact(maps, masks));
    expect(acc.averagePrecision()).toBe(pixelAveragePrecisionExact(maps, masks));
  });

  test('ROC curve on bin edges', () => {
    // 4 bins over [0, 1]: values .1 (neg) .3 (pos) .3 (neg) .9 (pos) -> bins 0, 1, 1, 3.
    // From the top: bin 3 (tp 1), bin 1 (tp 2, fp 1), bin 0 (fp 2); thresholds .75, .25, 0.
    // AUROC = 0 + .5 * (.5 + 1) / 2 + .5 * 1 = 0.875 (the .3/.3 tie counts 1/2).
    const acc = new PixelMetricsAccumulator({ range: [0, 1], bins: 4 });
    acc.add(new Float32Array([0.1, 0.3, 0.3, 0.9]), new Uint8Array([0, 1, 0, 1]));
    const c = acc.rocCurve();
    expectArrayClose(c.thresholds, [Infinity, 0.75, 0.25, 0]);
    expectArrayClose(c.fpr, [0, 0, 0.5, 1]);
    expectArrayClose(c.tpr, [0, 0.5, 1, 1]);
    expect(acc.auroc()).toBe(0.875);
  });

  test('1e8 pixels in 1e6-pixel chunks: bounded memory, time logged', () => {
    const total = Number(process.env.INVAD_PIXEL_TEST_TOTAL ?? 1e8);
    const chunk = 1_000_000;
    const map = new Float32Array(chunk);
    const mask = new Uint8Array(chunk);
    const acc = new PixelMetricsAccumulator({ range: [0, 1] });
    // Normal ~ U[0, 1), anomalous ~ U[0.5, 1): AUROC = P(U[.5,1) > U[0,1)) = 0.75.
    let s = 0x9e3779b9 >>> 0;
    const rssBefore = process.memoryUsage().rss;
    let addMs = 0;
    const t0 = performance.now();
    for (let done = 0; done < total; done += chunk) {
      for (let i = 0; i < chunk; i++) {
        s ^= s << 13;
        s >>>= 0;
        s ^= s >>> 17;
        s ^= s << 5;
        s >>>= 0; // xorshift32
        const u = s / 4294967296;
        const y = (s & 15) === 0 ? 1 : 0; // ~1/16 anomalous
        mask[i] = y;
        map[i] = y ? 0.5 + u / 2 : u;
      }
      const ta = performance.now();
      acc.add(map, mask);
      addMs += performance.now() - ta;
    }
    const ta = performance.now();
    const value = acc.auroc();
    const ap = acc.averagePrecision();
    const metricMs = performance.now() - ta;
    const totalMs = performance.now() - t0;
    const growthMb = (process.memoryUsage().rss - rssBefore) / 2 ** 20;
    console.log(
      `pixel ${total.toExponential(0)}: total ${(totalMs / 1000).toFixed(2)} s (add ${(addMs / 1000).toFixed(2)} s, ` +
        `metrics ${metricMs.toFixed(1)} ms, rest = data generation); AUROC ${value.toFixed(6)}, AP ${ap.toFixed(6)}; ` +
        `rss growth ${growthMb.toFixed(1)} MB`,
    );
    expect(acc.positives + acc.negatives).toBe(total);
    expect(value).toBeCloseTo(0.75, 3);
    expect(growthMb).toBeLessThan(200);
    expect(totalMs).toBeLessThan(20_000);
  });
});
