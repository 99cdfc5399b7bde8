/**
 * The native addon against plain TypeScript references: the DDIM step, the
 * channel-norm reduction, the fused last step (== unfused == reference), the
 * bilinear resize (PyTorch align_corners=False), argument validation, async vs
 * sync, concurrency, worker_threads and the loader.
 *
 * Errors from the addon come from the main realm while jest runs this file in a
 * vm context, so they are matched on `name` and `message`, not with instanceof.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as os from 'os';
import { Worker } from 'worker_threads';

import {
  addonSource,
  loadAddon,
  loadAddonWithDiagnostics,
  REQUIRED_FUNCTIONS,
  type ChannelNormResult,
  type InvadAddon,
  type InvadAddonDiagnostics,
  type TensorShape,
} from '../src/binding';
import { mulberry32 } from '../src/util/prng';
import { packageRoot } from '../src/util/package-info';

const addon: InvadAddon & InvadAddonDiagnostics = loadAddonWithDiagnostics();

// ---- helpers ----------------------------------------------------------------

function randomArray(length: number, seed: number, scale = 2): Float32Array {
  const r = mulberry32(seed);
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) out[i] = (r() * 2 - 1) * scale;
  return out;
}

const total = (s: TensorShape): number => s.n * s.c * s.h * s.w;

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, rtol = 1e-5, atol = 1e-6): void {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  let worstAt = -1;
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i] - expected[i]);
    const tol = atol + rtol * Math.abs(expected[i]);
    if (!(err <= tol) && (worstAt < 0 || err - tol > worst)) {
      worst = err - tol;
      worstAt = i;
    }
  }
  if (worstAt >= 0) {
    throw new Error(`${what}: element ${worstAt} is ${actual[worstAt]}, expected ${expected[worstAt]}`);
  }
}

function expectSameNorm(a: ChannelNormResult, b: ChannelNormResult, what: string, exact = false): void {
  if (exact) {
    expect(Array.from(a.l2)).toEqual(Array.from(b.l2));
    expect(Array.from(a.min)).toEqual(Array.from(b.min));
    expect(Array.from(a.max)).toEqual(Array.from(b.max));
    expect(Array.from(a.sumSq)).toEqual(Array.from(b.sumSq));
    return;
  }
  expectClose(a.l2, b.l2, `${what} l2`);
  expectClose(a.min, b.min, `${what} min`);
  expectClose(a.max, b.max, `${what} max`);
  expectClose(a.sumSq, b.sumSq, `${what} sumSq`);
}

/** x <- a*x + b*eps with float32 storage. */
function refStep(x: Float32Array, eps: Float32Array, a: number, b: number): void {
  for (let i = 0; i < x.length; i++) x[i] = a * x[i] + b * eps[i];
}

/** Channel-norm reduction in double precision. */
function refNorm(x: Float32Array, s: TensorShape): ChannelNormResult {
  const hw = s.h * s.w;
  const l2 = new Float32Array(s.n * hw);
  const min = new Float32Array(s.n);
  const max = new Float32Array(s.n);
  const sumSq = new Float64Array(s.n);
  const acc = new Float64Array(hw);
  for (let n = 0; n < s.n; n++) {
    acc.fill(0);
    for (let c = 0; c < s.c; c++) {
      const base = (n * s.c + c) * hw;
      for (let p = 0; p < hw; p++) acc[p] += x[base + p] * x[base + p];
    }
    let mn = Infinity;
    let mx = -Infinity;
    let sum = 0;
    for (let p = 0; p < hw; p++) {
      const v = Math.sqrt(acc[p]);
      l2[n * hw + p] = v;
      mn = Math.min(mn, v);
      mx = Math.max(mx, v);
      sum += acc[p];
    }
    min[n] = mn;
    max[n] = mx;
    sumSq[n] = sum;
  }
  return { l2, min, max, sumSq };
}

/** PyTorch F.interpolate(mode='bilinear', align_corners=False), written out plainly. */
function refResize(src: Float32Array, planes: number, inH: number, inW: number, outH: number, outW: number): Float32Array {
  const tap = (dst: number, inSize: number, outSize: number): [number, number, number] => {
    if (inSize === outSize) return [dst, dst, 0];
    // index math in float32, as PyTorch's float kernel does it
    const f = Math.fround;
    const scale = f(inSize / outSize);
    const s = Math.max(0, f(f(f(dst + 0.5) * scale) - 0.5));
    const i0 = Math.min(Math.floor(s), inSize - 1);
    const i1 = i0 < inSize - 1 ? i0 + 1 : i0;
    return [i0, i1, Math.min(1, Math.max(0, f(s - i0)))];
  };
  const out = new Float32Array(planes * outH * outW);
  for (let pl = 0; pl < planes; pl++) {
    for (let oy = 0; oy < outH; oy++) {
      const [y0, y1, ly] = tap(oy, inH, outH);
      for (let ox = 0; ox < outW; ox++) {
        const [x0, x1, lx] = tap(ox, inW, outW);
        const at = (y: number, x: number): number => src[pl * inH * inW + y * inW + x];
        out[pl * outH * outW + oy * outW + ox] = (1 - ly) * ((1 - lx) * at(y0, x0) + lx * at(y0, x1)) + ly * ((1 - lx) * at(y1, x0) + lx * at(y1, x1));
      }
    }
  }
  return out;
}

function rows(a: Float32Array, w: number): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < a.length; i += w) out.push(Array.from(a.subarray(i, i + w)));
  return out;
}

/** Calls fn, expects a synchronous throw of the named error type with a matching message. */
function expectThrow(fn: () => unknown, name: 'TypeError' | 'RangeError', pattern: RegExp): void {
  let thrown: unknown;
  let returned: unknown;
  try {
    returned = fn();
  } catch (err) {
    thrown = err;
  }
  if (thrown === undefined) {
    // a rejected promise would be a contract violation: validation is synchronous
    if (returned && typeof (returned as Promise<unknown>).catch === 'function') {
      (returned as Promise<unknown>).catch(() => undefined);
    }
    throw new Error(`expected a synchronous ${name} matching ${pattern}, but nothing was thrown`);
  }
  expect((thrown as Error).name).toBe(name);
  expect((thrown as Error).message).toMatch(pattern);
}

const SHAPES: TensorShape[] = [
  { n: 3, c: 5, h: 7, w: 9 },
  { n: 8, c: 272, h: 16, w: 16 },
  { n: 2, c: 3, h: 70, w: 65 }, // more than one 4096-position block per sample
  { n: 1, c: 1, h: 1, w: 1 },
];
const A = 0.9128709;
const B = -0.4082483;

// ---- build info, CUDA status, loader ----------------------------------------

describe('build info and loader', () => {
  test('buildInfo reports the package version and a consistent build', () => {
    const info = addon.buildInfo();
    const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
    expect(info.version).toBe(pkg.version);
    expect(info.napiVersion).toBeGreaterThanOrEqual(8);
    expect(typeof info.cuda).toBe('boolean');
    if (info.cuda) {
      expect(info.cudaArchitectures).toMatch(/^\d+(;\d+)*$/);
    } else {
      expect(info.cudaArchitectures).toBe('');
    }
    expect(Number.isInteger(info.threads)).toBe(true);
    expect(info.threads).toBeGreaterThanOrEqual(1);
    expect(info.compiler.length).toBeGreaterThan(0);
  });

  test('cudaStatus never throws and explains unavailability', () => {
    const st = addon.cudaStatus();
    expect(typeof st.available).toBe('boolean');
    expect(Number.isInteger(st.deviceCount)).toBe(true);
    expect(Number.isInteger(st.driverVersion)).toBe(true);
    if (!addon.buildInfo().cuda) {
      expect(st.available).toBe(false);
      expect(st.reason).toBe('addon built without CUDA');
    }
    if (st.available) {
      expect(st.deviceCount).toBeGreaterThan(0);
      expect(st.deviceName.length).toBeGreaterThan(0);
    } else {
      // the case on machines without a driver or GPU (this repo's CI)
      expect(st.reason.length).toBeGreaterThan(0);
      expect(st.deviceName).toBe('');
    }
  });

  test('loadAddon is cached and addonSource names an existing file', () => {
    expect(loadAddon()).toBe(addon);
    const src = addonSource();
    expect(['prebuild', 'local-build', 'override']).toContain(src.kind);
    expect(fs.existsSync(src.path)).toBe(true);
  });

  test('INVAD_ADDON_PATH overrides the search', () => {
    const file = addonSource().path;
    const saved = process.env.INVAD_ADDON_PATH;
    process.env.INVAD_ADDON_PATH = file;
    try {
      jest.isolateModules(() => {
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        const fresh = require('../src/binding') as typeof import('../src/binding');
        expect(fresh.addonSource()).toEqual({ kind: 'override', path: file });
        expect(typeof fresh.loadAddon().ddimStep).toBe('function');
      });
    } finally {
      if (saved === undefined) delete process.env.INVAD_ADDON_PATH;
      else process.env.INVAD_ADDON_PATH = saved;
    }
  });

  test('the loader needs only the production functions; the diagnostics are checked on request', () => {
    // A stand-in addon with the production functions only (the real ones, re-exported).
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'invad-addon-'));
    const file = path.join(dir, 'production-only.js');
    const production = REQUIRED_FUNCTIONS;
    fs.writeFileSync(
      file,
      `const real = require(${JSON.stringify(addonSource().path)});\nmodule.exports = Object.fromEntries(${JSON.stringify(production)}.map((k) => [k, real[k]]));\n`,
    );
    const saved = process.env.INVAD_ADDON_PATH;
    process.env.INVAD_ADDON_PATH = file;
    try {
      jest.isolateModules(() => {
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        const fresh = require('../src/binding') as typeof import('../src/binding');
        expect(fresh.addonSource()).toEqual({ kind: 'override', path: file });
        expect(() => fresh.loadAddonWithDiagnostics()).toThrow(/lacks the diagnostic functions ddimStepAsync, channelNormAsync/);
      });
    } finally {
      if (saved === undefined) delete process.env.INVAD_ADDON_PATH;
      else process.env.INVAD_ADDON_PATH = saved;
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a broken INVAD_ADDON_PATH falls back to the normal search', () => {
    const saved = process.env.INVAD_ADDON_PATH;
    process.env.INVAD_ADDON_PATH = path.join(packageRoot(), 'does-not-exist.node');
    try {
      jest.isolateModules(() => {
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        const fresh = require('../src/binding') as typeof import('../src/binding');
        expect(fresh.addonSource().kind).not.toBe('override');
      });
    } finally {
      if (saved === undefined) delete process.env.INVAD_ADDON_PATH;
      else process.env.INVAD_ADDON_PATH = saved;
    }
  });
});

// ---- math -------------------------------------------------------------------

describe('ddimStep', () => {
  test.each(SHAPES)('matches the reference for %o', (shape) => {
    const len = total(shape);
    const x = randomArray(len, 1);
    const eps = randomArray(len, 2);
    const epsCopy = eps.slice();
    const expected = x.slice();
    refStep(expected, eps, A, B);
    addon.ddimStep(x, eps, A, B);
    expectClose(x, expected, 'x');
    expect(eps).toEqual(epsCopy);
  });

  test('async gives the same bits as sync', async () => {
    const len = 1_000_003;
    const x = randomArray(len, 3);
    const eps = randomArray(len, 4);
    const sync = x.slice();
    addon.ddimStep(sync, eps, A, B);
    await expect(addon.ddimStepAsync(x, eps, A, B)).resolves.toBeUndefined();
    expect(Buffer.from(x.buffer).equals(Buffer.from(sync.buffer))).toBe(true);
  });

  test('works on subarray views and SharedArrayBuffer-backed arrays', () => {
    const buf = new Float32Array(64);
    buf.set(randomArray(64, 5));
    const x = buf.subarray(0, 32);
    const eps = buf.subarray(32, 64); // same buffer, disjoint ranges: allowed
    const expected = x.slice();
    refStep(expected, eps, A, B);
    addon.ddimStep(x, eps, A, B);
    expectClose(x, expected, 'view');

    const shared = new Float32Array(new SharedArrayBuffer(16 * 4));
    shared.set(randomArray(16, 6));
    const e2 = randomArray(16, 7);
    const exp2 = shared.slice();
    refStep(exp2, e2, A, B);
    addon.ddimStep(shared, e2, A, B);
    expectClose(shared, exp2, 'shared');
  });
});

describe('channelNorm', () => {
  test.each(SHAPES)('matches the reference for %o', async (shape) => {
    const x = randomArray(total(shape), 11);
    const before = x.slice();
    const got = addon.channelNorm(x, shape);
    expect(x).toEqual(before); // read-only
    expect(got.l2.length).toBe(shape.n * shape.h * shape.w);
    expect(got.min.length).toBe(shape.n);
    expect(Object.prototype.toString.call(got.sumSq)).toBe('[object Float64Array]');
    expectSameNorm(got, refNorm(x, shape), 'channelNorm');
    expectSameNorm(await addon.channelNormAsync(x, shape), got, 'async', true);
  });
});

describe('ddimLastStepReduce', () => {
  test.each(SHAPES)('fused == unfused == reference for %o', async (shape) => {
    const len = total(shape);
    const x0 = randomArray(len, 21);
    const eps = randomArray(len, 22);

    const xRef = x0.slice();
    refStep(xRef, eps, A, B);
    const ref = refNorm(xRef, shape);

    const xFused = x0.slice();
    const fused = addon.ddimLastStepReduce(xFused, eps, A, B, shape);
    expectClose(xFused, xRef, 'fused x');
    expectSameNorm(fused, ref, 'fused');

    const xUnfused = x0.slice();
    const unfused = addon.ddimLastStepReduceUnfused(xUnfused, eps, A, B, shape);
    expectClose(xUnfused, xFused, 'unfused x');
    expectSameNorm(unfused, fused, 'unfused');

    const xAsync = x0.slice();
    const viaAsync = await addon.ddimLastStepReduceAsync(xAsync, eps, A, B, shape);
    expect(Buffer.from(xAsync.buffer).equals(Buffer.from(xFused.buffer))).toBe(true);
    expectSameNorm(viaAsync, fused, 'async', true);
  });

  test('NaN inputs show up in min/max instead of being skipped', () => {
    const shape = { n: 1, c: 2, h: 2, w: 2 };
    const x = new Float32Array(8).fill(1);
    x[3] = NaN;
    const r = addon.ddimLastStepReduce(x, new Float32Array(8), 1, 0, shape);
    expect(Number.isNaN(r.min[0])).toBe(true);
    expect(Number.isNaN(r.max[0])).toBe(true);
    expect(Number.isNaN(r.sumSq[0])).toBe(true);
  });

  test('16 concurrent async calls equal the sync results', async () => {
    const shape = { n: 8, c: 64, h: 16, w: 16 };
    const len = total(shape);
    const inputs = Array.from({ length: 16 }, (_, i) => ({ x: randomArray(len, 100 + i), eps: randomArray(len, 200 + i) }));
    const expected = inputs.map(({ x, eps }) => {
      const xs = x.slice();
      return { x: xs, r: addon.ddimLastStepReduce(xs, eps, A, B, shape) };
    });
    const resized = inputs.map(({ x }) => addon.resizeBilinear(x, shape.n * shape.c, 16, 16, 37, 23));
    const results = await Promise.all(
      inputs.map(({ x, eps }, i) =>
        i % 2 === 0 ? addon.ddimLastStepReduceAsync(x, eps, A, B, shape) : addon.resizeBilinearAsync(x, shape.n * shape.c, 16, 16, 37, 23),
      ),
    );
    results.forEach((r, i) => {
      if (i % 2 === 0) {
        expect(Buffer.from(inputs[i].x.buffer).equals(Buffer.from(expected[i].x.buffer))).toBe(true);
        expectSameNorm(r as ChannelNormResult, expected[i].r, `call ${i}`, true);
      } else {
        expect(Buffer.from((r as Float32Array).buffer).equals(Buffer.from(resized[i].buffer))).toBe(true);
      }
    });
  });
});

describe('resizeBilinear', () => {
  test('2x2 -> 4x4 matches PyTorch', () => {
    const out = addon.resizeBilinear(new Float32Array([1, 2, 3, 4]), 1, 2, 2, 4, 4);
    expect(rows(out, 4)).toEqual([
      [1, 1.25, 1.75, 2],
      [1.5, 1.75, 2.25, 2.5],
      [2.5, 2.75, 3.25, 3.5],
      [3, 3.25, 3.75, 4],
    ]);
  });

  test('4x4 -> 2x2 averages 2x2 blocks (downsampling)', () => {
    const src = Float32Array.from({ length: 16 }, (_, i) => i);
    expect(rows(addon.resizeBilinear(src, 1, 4, 4, 2, 2), 2)).toEqual([
      [2.5, 4.5],
      [10.5, 12.5],
    ]);
  });

  test('2x3 -> 3x2 (non-square, up in H and down in W)', () => {
    const out = addon.resizeBilinear(new Float32Array([0, 1, 2, 3, 4, 5]), 1, 2, 3, 3, 2);
    expectClose(out, [0.25, 1.75, 1.75, 3.25, 3.25, 4.75], '2x3->3x2');
  });

  test('equal sizes are an exact copy, planes are independent', async () => {
    const src = randomArray(3 * 5 * 7, 31);
    src[4] = Infinity;
    const out = addon.resizeBilinear(src, 3, 5, 7, 5, 7);
    expect(out).toEqual(src);
    expect(out.buffer).not.toBe(src.buffer);
    expect(await addon.resizeBilinearAsync(src, 3, 5, 7, 5, 7)).toEqual(src);
  });

  test.each([
    [3, 17, 23, 64, 40],
    [2, 64, 64, 7, 9],
    [1, 1, 1, 3, 5],
    [4, 16, 16, 224, 224],
    [2, 5, 9, 5, 4],
  ])('planes=%d %dx%d -> %dx%d matches the reference, async too', async (planes, inH, inW, outH, outW) => {
    const src = randomArray(planes * inH * inW, 41);
    const out = addon.resizeBilinear(src, planes, inH, inW, outH, outW);
    expectClose(out, refResize(src, planes, inH, inW, outH, outW), 'resize');
    const viaAsync = await addon.resizeBilinearAsync(src, planes, inH, inW, outH, outW);
    expect(Buffer.from(viaAsync.buffer).equals(Buffer.from(out.buffer))).toBe(true);
  });
});

// ---- validation ---------------------------------------------------------------

describe('argument validation', () => {
  const shape = { n: 2, c: 3, h: 4, w: 5 };
  const len = total(shape);
  const x = (): Float32Array => new Float32Array(len);
  const eps = (): Float32Array => new Float32Array(len);

  const any = (v: unknown): any => v;

  const badArrays: Array<[string, unknown, RegExp]> = [
    ['string', 'abc', /Expected Float32Array for x but received string/],
    ['number[]', [1, 2, 3], /Expected Float32Array for x but received Array/],
    ['Float64Array', new Float64Array(len), /Expected Float32Array for x but received Float64Array/],
    ['Uint8Array', new Uint8Array(len), /Expected Float32Array for x but received Uint8Array/],
    ['ArrayBuffer', new ArrayBuffer(len * 4), /Expected Float32Array for x but received ArrayBuffer/],
    ['null', null, /Expected Float32Array for x but received null/],
    ['undefined', undefined, /Expected Float32Array for x but received undefined/],
    ['number', 3, /Expected Float32Array for x but received number/],
  ];

  test.each(badArrays)('x as %s is a TypeError (sync and async)', (_label, value, pattern) => {
    expectThrow(() => addon.ddimStep(any(value), eps(), 1, 0), 'TypeError', pattern);
    expectThrow(() => addon.ddimStepAsync(any(value), eps(), 1, 0), 'TypeError', pattern);
    expectThrow(() => addon.channelNorm(any(value), shape), 'TypeError', pattern);
    expectThrow(() => addon.channelNormAsync(any(value), shape), 'TypeError', pattern);
    expectThrow(() => addon.ddimLastStepReduce(any(value), eps(), 1, 0, shape), 'TypeError', pattern);
    expectThrow(() => addon.ddimLastStepReduceAsync(any(value), eps(), 1, 0, shape), 'TypeError', pattern);
    expectThrow(() => addon.ddimLastStepReduceUnfused(any(value), eps(), 1, 0, shape), 'TypeError', pattern);
  });

  test('eps and src are named too', () => {
    expectThrow(() => addon.ddimStep(x(), any('e'), 1, 0), 'TypeError', /Expected Float32Array for eps but received string/);
    expectThrow(() => addon.ddimLastStepReduceAsync(x(), any(new Float64Array(len)), 1, 0, shape), 'TypeError', /for eps but received Float64Array/);
    expectThrow(() => addon.resizeBilinear(any([1]), 1, 1, 1, 1, 1), 'TypeError', /for src but received Array/);
    expectThrow(() => addon.resizeBilinearAsync(any(null), 1, 1, 1, 1, 1), 'TypeError', /for src but received null/);
  });

  test('missing and extra arguments', () => {
    // Called through `any`, as plain JavaScript could: the types forbid these argument counts.
    const untyped = any(addon);
    expectThrow(() => untyped.ddimStep(), 'TypeError', /missing argument x/);
    expectThrow(() => untyped.ddimStep(x()), 'TypeError', /missing argument eps/);
    expectThrow(() => untyped.ddimStepAsync(x(), eps(), 1), 'TypeError', /missing argument b/);
    expectThrow(() => untyped.channelNorm(x()), 'TypeError', /missing argument shape/);
    expectThrow(() => untyped.ddimLastStepReduceAsync(x(), eps(), 1, 0), 'TypeError', /missing argument shape/);
    expectThrow(() => untyped.resizeBilinear(x(), 1, 2, 3, 4), 'TypeError', /missing argument outW/);
    expectThrow(() => untyped.ddimStep(x(), eps(), 1, 0, shape), 'TypeError', /takes 4 arguments/);
  });

  test('wrong lengths are RangeErrors naming the argument', () => {
    expectThrow(() => addon.ddimStep(new Float32Array(12), new Float32Array(10), 1, 0), 'RangeError', /eps\.length \(10\) must equal x\.length \(12\)/);
    expectThrow(() => addon.channelNorm(new Float32Array(100), { n: 1, c: 6, h: 4, w: 4 }), 'RangeError', /x\.length \(100\) must equal n\*c\*h\*w = 96/);
    expectThrow(
      () => addon.ddimLastStepReduceAsync(new Float32Array(100), new Float32Array(100), 1, 0, { n: 1, c: 6, h: 4, w: 4 }),
      'RangeError',
      /x\.length \(100\)/,
    );
    expectThrow(() => addon.ddimLastStepReduce(x(), new Float32Array(len + 1), 1, 0, shape), 'RangeError', /eps\.length/);
    expectThrow(() => addon.resizeBilinear(new Float32Array(5), 1, 2, 2, 4, 4), 'RangeError', /src\.length \(5\) must equal planes\*inH\*inW = 4/);
  });

  test('empty arrays are rejected', () => {
    expectThrow(() => addon.ddimStep(new Float32Array(0), new Float32Array(0), 1, 0), 'RangeError', /x must not be empty/);
    expectThrow(() => addon.ddimStepAsync(new Float32Array(4), new Float32Array(0), 1, 0), 'RangeError', /eps must not be empty/);
  });

  test('detached buffers are rejected', () => {
    const arr = new Float32Array(8);
    structuredClone(arr.buffer, { transfer: [arr.buffer] });
    expectThrow(() => addon.ddimStep(arr, new Float32Array(8), 1, 0), 'TypeError', /x is backed by a detached ArrayBuffer/);
  });

  test('overlapping x and eps are rejected', () => {
    const buf = new Float32Array(16);
    expectThrow(() => addon.ddimStep(buf, buf, 1, 0), 'RangeError', /x and eps must not overlap/);
    expectThrow(() => addon.ddimStep(buf.subarray(0, 8), buf.subarray(4, 12), 1, 0), 'RangeError', /overlap/);
    expectThrow(() => addon.ddimLastStepReduceAsync(buf, buf, 1, 0, { n: 1, c: 1, h: 4, w: 4 }), 'RangeError', /overlap/);
  });

  test.each([
    ['NaN', NaN, 'RangeError', /a must be a finite number, got NaN/],
    ['Infinity', Infinity, 'RangeError', /a must be a finite number, got Infinity/],
    ['-Infinity', -Infinity, 'RangeError', /a must be a finite number/],
    ['1e300', 1e300, 'RangeError', /a \(.*\) is outside the float32 range/],
    ['string', '1', 'TypeError', /Expected number for a but received string/],
    ['null', null, 'TypeError', /Expected number for a but received null/],
    ['bigint', BigInt(1), 'TypeError', /Expected number for a but received bigint/],
  ] as const)('scalar a = %s', (_label, value, name, pattern) => {
    expectThrow(() => addon.ddimStep(x(), eps(), any(value), 0), name, pattern);
    expectThrow(() => addon.ddimStepAsync(x(), eps(), any(value), 0), name, pattern);
    expectThrow(() => addon.ddimLastStepReduce(x(), eps(), any(value), 0, shape), name, pattern);
    const bPattern = new RegExp(pattern.source.replace(/\ba\b/, 'b'));
    expectThrow(() => addon.ddimLastStepReduceAsync(x(), eps(), 0, any(value), shape), name, bPattern);
  });

  test.each([
    ['zero', { ...shape, c: 0 }, 'RangeError', /shape\.c must be a positive integer, got 0/],
    ['negative', { ...shape, n: -2 }, 'RangeError', /shape\.n must be a positive integer, got -2/],
    ['NaN', { ...shape, h: NaN }, 'RangeError', /shape\.h must be a positive integer, got NaN/],
    ['fraction', { ...shape, w: 2.5 }, 'RangeError', /shape\.w must be a positive integer, got 2\.5/],
    ['Infinity', { ...shape, w: Infinity }, 'RangeError', /shape\.w must be at most 2147483647, got Infinity/],
    ['2^31', { n: 2 ** 31, c: 2 ** 31, h: 1, w: 1 }, 'RangeError', /shape\.n must be at most 2147483647, got 2147483648/],
    ['overflow', { n: 2 ** 31 - 1, c: 2 ** 31 - 1, h: 2 ** 31 - 1, w: 2 ** 31 - 1 }, 'RangeError', /shape product n\*c\*h\*w overflows/],
    ['too big', { n: 2 ** 31 - 1, c: 2 ** 31 - 1, h: 1, w: 1 }, 'RangeError', /shape product n\*c\*h\*w = \d+ exceeds the limit/],
    ['string field', { ...shape, c: '3' }, 'TypeError', /Expected number for shape\.c but received string/],
    ['missing field', { n: 1, c: 1, h: 1 }, 'TypeError', /Expected number for shape\.w but received undefined/],
    ['null', null, 'TypeError', /Expected object \{n, c, h, w\} for shape but received null/],
    ['array', [2, 3, 4, 5], 'TypeError', /for shape but received Array/],
    ['number', 120, 'TypeError', /for shape but received number/],
  ] as const)('shape %s', (_label, badShape, name, pattern) => {
    expectThrow(() => addon.channelNorm(x(), any(badShape)), name, pattern);
    expectThrow(() => addon.channelNormAsync(x(), any(badShape)), name, pattern);
    expectThrow(() => addon.ddimLastStepReduce(x(), eps(), 1, 0, any(badShape)), name, pattern);
    expectThrow(() => addon.ddimLastStepReduceAsync(x(), eps(), 1, 0, any(badShape)), name, pattern);
    expectThrow(() => addon.ddimLastStepReduceUnfused(x(), eps(), 1, 0, any(badShape)), name, pattern);
  });

  test('resize sizes', () => {
    const src = new Float32Array(4);
    expectThrow(() => addon.resizeBilinear(src, 0, 2, 2, 4, 4), 'RangeError', /planes must be a positive integer, got 0/);
    expectThrow(() => addon.resizeBilinear(src, 1, -2, 2, 4, 4), 'RangeError', /inH must be a positive integer, got -2/);
    expectThrow(() => addon.resizeBilinear(src, 1, 2, 2.5, 4, 4), 'RangeError', /inW must be a positive integer/);
    expectThrow(() => addon.resizeBilinear(src, 1, 2, 2, NaN, 4), 'RangeError', /outH must be a positive integer, got NaN/);
    expectThrow(() => addon.resizeBilinear(src, 1, 2, 2, 4, 0), 'RangeError', /outW must be a positive integer, got 0/);
    expectThrow(() => addon.resizeBilinear(src, 1, 2, 2, any('4'), 4), 'TypeError', /Expected number for outH but received string/);
    expectThrow(() => addon.resizeBilinear(src, 1, 2, 2, 1e6, 1e6), 'RangeError', /planes\*outH\*outW = 1000000000000 exceeds the limit/);
    expectThrow(() => addon.resizeBilinearAsync(src, 1, 2, 2, 1e6, 1e6), 'RangeError', /outH\*outW/);
    expectThrow(() => addon.resizeBilinear(src, 2 ** 31 - 1, 2 ** 31 - 1, 2 ** 31 - 1, 1, 1), 'RangeError', /planes\*inH\*inW overflows/);
    expectThrow(() => addon.resizeBilinear(src, 1, 2, 2, 2 ** 31, 1), 'RangeError', /outH must be at most 2147483647/);
  });
});

// ---- worker_threads -----------------------------------------------------------

function runInWorker(code: string, workerData: unknown): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const w = new Worker(code, { eval: true, workerData });
    w.once('message', resolve);
    w.once('error', reject);
    w.once('exit', (c) => (c === 0 ? undefined : reject(new Error(`worker exited with ${c}`))));
  });
}

describe('worker_threads', () => {
  const workerCode = `
    const { parentPort, workerData } = require('worker_threads');
    const addon = require(workerData.file);
    const { x, eps, shape, a, b } = workerData;
    const sync = addon.ddimLastStepReduce(x.slice(), eps, a, b, shape);
    const xa = x.slice();
    addon.ddimLastStepReduceAsync(xa, eps, a, b, shape).then((r) => {
      parentPort.postMessage({ info: addon.buildInfo(), sync, async: r, x: xa });
    });
  `;

  test('the addon loads and runs inside Workers, also two at once', async () => {
    const shape = { n: 4, c: 32, h: 9, w: 11 };
    const x = randomArray(total(shape), 51);
    const eps = randomArray(total(shape), 52);
    const xs = x.slice();
    const expected = addon.ddimLastStepReduce(xs, eps, A, B, shape);
    const data = { file: addonSource().path, x, eps, shape, a: A, b: B };
    const results = (await Promise.all([runInWorker(workerCode, data), runInWorker(workerCode, data)])) as Array<{
      info: { version: string };
      sync: ChannelNormResult;
      async: ChannelNormResult;
      x: Float32Array;
    }>;
    for (const r of results) {
      expect(r.info.version).toBe(addon.buildInfo().version);
      expectSameNorm(r.sync, expected, 'worker sync', true);
      expectSameNorm(r.async, expected, 'worker async', true);
      expect(Array.from(r.x)).toEqual(Array.from(xs));
    }
  });

  test('terminating a Worker with async work in flight does not crash the process', async () => {
    const code = `
      const { parentPort, workerData } = require('worker_threads');
      const addon = require(workerData.file);
      const shape = { n: 8, c: 272, h: 32, w: 32 };
      const len = shape.n * shape.c * shape.h * shape.w;
      for (let i = 0; i < 4; i++) {
        addon.ddimLastStepReduceAsync(new Float32Array(len), new Float32Array(len), 0.5, 0.5, shape);
      }
      parentPort.postMessage('queued');
    `;
    const w = new Worker(code, { eval: true, workerData: { file: addonSource().path } });
    await new Promise((resolve) => w.once('message', resolve));
    await w.terminate();
    // still alive and working
    const out = addon.resizeBilinear(new Float32Array([1, 2, 3, 4]), 1, 2, 2, 4, 4);
    expect(out[5]).toBe(1.75);
  });
});
