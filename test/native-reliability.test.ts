/**
 * Regression tests for the addon findings of the fuzz campaign (issue 12):
 *
 *  1. the addon read JS values (shape getters, steps[i], options) after it had
 *     taken a buffer's pointer, so a getter that resized or detached the
 *     buffer crashed the process;
 *  2. the async variants worked on buffers the caller could still resize;
 *  4. allocations inside the caps threw std::bad_alloc through N-API (abort),
 *     and napi_create_arraybuffer aborts on a failed allocation;
 * 10. (native half) n = 0 with an empty batch was reported as an empty batch.
 *
 * Every case that crashed runs in a child process (`node -e`), so a crash fails
 * the test (exit by signal) instead of killing jest. The child loads the same
 * addon file as the loader (INVAD_ADDON_PATH or the default candidates) and
 * prints one JSON line of results.
 */
import { spawnSync } from 'child_process';

import { addonSource, loadAddon, type NativePipelineOptions } from '../src/binding';
import { loadBundle } from '../src/runtime/bundle/load';
import { nativePipelineOptions } from '../src/runtime/engine/native-engine';
import { inversionSteps } from '../src/runtime/schedule';
import { tempDir, writeTinyBundle } from './helpers/bundles';

loadAddon();
const ADDON = addonSource().path;

interface Outcome {
  label: string;
  ok: boolean;
  name?: string;
  message?: string;
  value?: unknown;
}

interface ChildResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  outcomes: Record<string, Outcome>;
}

// Harness of the child: `check(label, fn)` records what fn returned (or the
// promise it returned resolved to) or what it threw/rejected with.
const PRELUDE = `
const addon = require(process.env.INVAD_TEST_ADDON);
const outcomes = {};
// Typed arrays (and results holding them) are summarised, not serialised.
const small = (v) => {
  if (ArrayBuffer.isView(v)) return '<' + v.constructor.name + '>';
  if (v && typeof v === 'object' && Object.values(v).some((x) => ArrayBuffer.isView(x))) return '<result object>';
  return v;
};
async function check(label, fn) {
  try {
    const value = small(await fn());
    outcomes[label] = { label, ok: true, value };
  } catch (e) {
    outcomes[label] = { label, ok: false, name: e && e.name, message: e && e.message };
  }
}
const data = JSON.parse(process.env.INVAD_TEST_DATA || 'null');
`;

function runChild(body: string, options: { data?: unknown; ulimitKb?: number; nodeArgs?: string[] } = {}): ChildResult {
  const script = `${PRELUDE}\n(async () => {\n${body}\n})().then(() => { process.stdout.write('\\n@@' + JSON.stringify(outcomes) + '\\n'); process.exit(0); });`;
  const env = { ...process.env, INVAD_TEST_ADDON: ADDON, INVAD_TEST_DATA: JSON.stringify(options.data ?? null) };
  const nodeArgs = [...(options.nodeArgs ?? []), '-e', script];
  const r =
    options.ulimitKb === undefined
      ? spawnSync(process.execPath, nodeArgs, { env, encoding: 'utf8', timeout: 120_000, maxBuffer: 64 << 20 })
      : spawnSync('/bin/sh', ['-c', `ulimit -v ${options.ulimitKb} && exec "$0" "$@"`, process.execPath, ...nodeArgs], {
          env,
          encoding: 'utf8',
          timeout: 120_000,
          maxBuffer: 64 << 20,
        });
  const line = (r.stdout ?? '').split('\n').find((l) => l.startsWith('@@'));
  return { status: r.status, signal: r.signal, stderr: r.stderr ?? '', outcomes: line ? (JSON.parse(line.slice(2)) as Record<string, Outcome>) : {} };
}

/** The child exited normally (no signal, no abort) and printed its outcomes. */
function expectSurvived(r: ChildResult): void {
  if (r.status !== 0 || r.signal !== null) {
    throw new Error(`child died (status ${r.status}, signal ${r.signal}):\n${r.stderr.slice(-2000)}`);
  }
}

function expectError(r: ChildResult, label: string, name: string, message: RegExp): void {
  const o = r.outcomes[label];
  expect(o).toBeDefined();
  expect({ label, ok: o.ok, name: o.name }).toEqual({ label, ok: false, name });
  expect(o.message).toMatch(message);
}

function expectOk(r: ChildResult, label: string): unknown {
  const o = r.outcomes[label];
  expect(o).toBeDefined();
  if (!o.ok) throw new Error(`${label}: ${o.name}: ${o.message}`);
  return o.value;
}

// ---- finding 1: every JS value is read before any buffer pointer ------------

describe('finding 1: getters that resize or detach a buffer cannot crash the addon', () => {
  test("the issue's reproducer: channelNorm with a shape getter that shrinks x's buffer to 0", () => {
    const r = runChild(`
      await check('repro', () => {
        const ab = new ArrayBuffer(4 << 24, { maxByteLength: 4 << 24 });
        return addon.channelNorm(new Float32Array(ab), { get n() { ab.resize(0); return 1; }, c: 16, h: 1024, w: 1024 }) && 'returned';
      });
    `);
    expectSurvived(r);
    expectError(r, 'repro', 'RangeError', /^x must not be empty/);
  });

  test('shape getters of every shape-taking function (resize to 0, resize to half, detach x, detach eps)', () => {
    const r = runChild(`
      const shape = { n: 1, c: 16, h: 1024, w: 1024 };
      const len = 16 * 1024 * 1024;
      const resizable = () => new ArrayBuffer(len * 4, { maxByteLength: len * 4 });
      const getterShape = (fn) => ({ get n() { fn(); return 1; }, c: 16, h: 1024, w: 1024 });
      const keep = [];
      const detach = (ab) => keep.push(structuredClone(ab, { transfer: [ab] }));
      const sync = {
        channelNorm: (x, eps, s) => addon.channelNorm(x, s),
        ddimLastStepReduce: (x, eps, s) => addon.ddimLastStepReduce(x, eps, 0.5, 0.5, s),
        ddimLastStepReduceUnfused: (x, eps, s) => addon.ddimLastStepReduceUnfused(x, eps, 0.5, 0.5, s),
      };
      const asyncs = {
        channelNormAsync: (x, eps, s) => addon.channelNormAsync(x, s),
        ddimLastStepReduceAsync: (x, eps, s) => addon.ddimLastStepReduceAsync(x, eps, 0.5, 0.5, s),
      };
      for (const [name, fn] of Object.entries(sync)) {
        await check(name + ' resize x to 0', () => { const ab = resizable(); fn(new Float32Array(ab), new Float32Array(len), getterShape(() => ab.resize(0))); });
        await check(name + ' resize x to half', () => { const ab = resizable(); fn(new Float32Array(ab), new Float32Array(len), getterShape(() => ab.resize(len * 2))); });
        await check(name + ' resize eps to 0', () => { const ab = resizable(); fn(new Float32Array(len), new Float32Array(ab), getterShape(() => ab.resize(0))); });
      }
      for (const [name, fn] of Object.entries({ ...sync, ...asyncs })) {
        await check(name + ' detach x', () => { const x = new Float32Array(len); return fn(x, new Float32Array(len), getterShape(() => detach(x.buffer))); });
        await check(name + ' detach eps', () => { const eps = new Float32Array(len); return fn(new Float32Array(len), eps, getterShape(() => detach(eps.buffer))); });
      }
    `);
    expectSurvived(r);
    for (const name of ['channelNorm', 'ddimLastStepReduce', 'ddimLastStepReduceUnfused']) {
      expectError(r, `${name} resize x to 0`, 'RangeError', /^x must not be empty/);
      expectError(r, `${name} resize x to half`, 'RangeError', /^x\.length \(8388608\) must equal n\*c\*h\*w = 16777216/);
    }
    for (const name of ['ddimLastStepReduce', 'ddimLastStepReduceUnfused']) {
      expectError(r, `${name} resize eps to 0`, 'RangeError', /^eps must not be empty/);
    }
    expect(r.outcomes['channelNorm resize eps to 0'].ok).toBe(true); // channelNorm has no eps
    for (const name of ['channelNorm', 'ddimLastStepReduce', 'ddimLastStepReduceUnfused', 'channelNormAsync', 'ddimLastStepReduceAsync']) {
      expectError(r, `${name} detach x`, 'TypeError', /^x is backed by a detached ArrayBuffer/);
      if (name !== 'channelNorm' && name !== 'channelNormAsync') {
        expectError(r, `${name} detach eps`, 'TypeError', /^eps is backed by a detached ArrayBuffer/);
      }
    }
  });

  test('a Proxy shape and getters that grow the buffer still give the right result', () => {
    const r = runChild(`
      const x = new Float32Array([3, 0, 0, 4, 0, 0, 0, 0]);
      await check('proxy', () => {
        const shape = new Proxy({}, { get: (_, k) => ({ n: 1, c: 2, h: 2, w: 2 })[k] });
        return Array.from(addon.channelNorm(x, shape).l2);
      });
      await check('grow', () => {
        const ab = new ArrayBuffer(16, { maxByteLength: 32 });
        const v = new Float32Array(ab);
        v.set([3, 0, 0, 4]);
        return Array.from(addon.channelNorm(v, { n: 1, c: 2, get h() { ab.resize(32); return 2; }, w: 2 }).l2);
      });
    `);
    expectSurvived(r);
    expect(expectOk(r, 'proxy')).toEqual([3, 0, 0, 4]);
    expect(expectOk(r, 'grow')).toEqual([3, 0, 0, 4]);
  });
});

// ---- finding 2: async variants take fixed-length buffers and hold them ------

describe('finding 2: the async variants never work on memory the caller can resize', () => {
  test("the issue's reproducers: resize(0) right after channelNormAsync / resizeBilinearAsync", () => {
    const r = runChild(`
      await check('channelNormAsync', async () => {
        const ab = new ArrayBuffer(4 << 24, { maxByteLength: 4 << 24 });
        let p;
        try { p = addon.channelNormAsync(new Float32Array(ab), { n: 1, c: 16, h: 1024, w: 1024 }); } finally { ab.resize(0); }
        return p;
      });
      await check('resizeBilinearAsync', async () => {
        const ab = new ArrayBuffer(4 << 24, { maxByteLength: 4 << 24 });
        let p;
        try { p = addon.resizeBilinearAsync(new Float32Array(ab), 16, 1024, 1024, 2048, 2048); } finally { ab.resize(0); }
        return p;
      });
    `);
    expectSurvived(r);
    expectError(r, 'channelNormAsync', 'TypeError', /^x is backed by a resizable ArrayBuffer; channelNormAsync\(\) .*fixed-length/);
    expectError(r, 'resizeBilinearAsync', 'TypeError', /^src is backed by a resizable ArrayBuffer; resizeBilinearAsync\(\)/);
  });

  test('every async variant rejects resizable ArrayBuffers and growable SharedArrayBuffers, naming the argument', () => {
    const r = runChild(`
      const shape = { n: 1, c: 2, h: 2, w: 2 };
      const fixed = () => new Float32Array(8);
      const kinds = {
        resizable: () => new Float32Array(new ArrayBuffer(32, { maxByteLength: 64 })),
        growable: () => new Float32Array(new SharedArrayBuffer(32, { maxByteLength: 64 })),
      };
      for (const [kind, make] of Object.entries(kinds)) {
        await check('ddimStepAsync x ' + kind, () => addon.ddimStepAsync(make(), fixed(), 1, 1));
        await check('ddimStepAsync eps ' + kind, () => addon.ddimStepAsync(fixed(), make(), 1, 1));
        await check('channelNormAsync x ' + kind, () => addon.channelNormAsync(make(), shape));
        await check('ddimLastStepReduceAsync x ' + kind, () => addon.ddimLastStepReduceAsync(make(), fixed(), 1, 1, shape));
        await check('ddimLastStepReduceAsync eps ' + kind, () => addon.ddimLastStepReduceAsync(fixed(), make(), 1, 1, shape));
        await check('resizeBilinearAsync src ' + kind, () => addon.resizeBilinearAsync(make(), 2, 2, 2, 3, 3));
      }
      await check('fixed SharedArrayBuffer', async () => {
        const x = new Float32Array(new SharedArrayBuffer(32)).fill(1);
        await addon.ddimStepAsync(x, new Float32Array(8).fill(1), 2, 3);
        return Array.from(x);
      });
    `);
    expectSurvived(r);
    for (const [kind, what] of [
      ['resizable', 'resizable ArrayBuffer'],
      ['growable', 'growable SharedArrayBuffer'],
    ]) {
      for (const [label, arg] of [
        ['ddimStepAsync x', 'x'],
        ['ddimStepAsync eps', 'eps'],
        ['channelNormAsync x', 'x'],
        ['ddimLastStepReduceAsync x', 'x'],
        ['ddimLastStepReduceAsync eps', 'eps'],
        ['resizeBilinearAsync src', 'src'],
      ]) {
        expectError(r, `${label} ${kind}`, 'TypeError', new RegExp(`^${arg} is backed by a ${what}; `));
      }
    }
    expect(expectOk(r, 'fixed SharedArrayBuffer')).toEqual(Array(8).fill(5));
  });

  test('the sync variants read a resizable buffer at its current length', () => {
    const r = runChild(`
      const values = [1, -2, 3, 0.5, 4, -1, 2, 2];
      const view = () => { const ab = new ArrayBuffer(64, { maxByteLength: 128 }); const v = new Float32Array(ab); v.set(values.concat(values)); ab.resize(32); return v; };
      const shape = { n: 1, c: 2, h: 2, w: 2 };
      await check('channelNorm', () => Array.from(addon.channelNorm(view(), shape).l2));
      await check('channelNorm fixed', () => Array.from(addon.channelNorm(new Float32Array(values), shape).l2));
      await check('resizeBilinear', () => Array.from(addon.resizeBilinear(view(), 2, 2, 2, 3, 3)));
      await check('resizeBilinear fixed', () => Array.from(addon.resizeBilinear(new Float32Array(values), 2, 2, 2, 3, 3)));
      await check('ddimStep', () => { const x = view(); addon.ddimStep(x, new Float32Array(8).fill(1), 1, 1); return Array.from(x); });
    `);
    expectSurvived(r);
    expect(expectOk(r, 'channelNorm')).toEqual(expectOk(r, 'channelNorm fixed'));
    expect(expectOk(r, 'resizeBilinear')).toEqual(expectOk(r, 'resizeBilinear fixed'));
    expect(expectOk(r, 'ddimStep')).toEqual([2, -1, 4, 1.5, 5, 0, 3, 3]);
  });

  test('inputs referenced only by the pending work survive a full GC', () => {
    const r = runChild(
      `
      const shape = { n: 2, c: 64, h: 64, w: 64 };
      const len = 2 * 64 * 64 * 64;
      const pending = [];
      for (let i = 0; i < 4; i++) pending.push(addon.ddimLastStepReduceAsync(new Float32Array(len).fill(1), new Float32Array(len).fill(1), 1, 1, shape));
      pending.push(addon.resizeBilinearAsync(new Float32Array(64 * 64).fill(3), 1, 64, 64, 512, 512));
      for (let i = 0; i < 3; i++) global.gc();
      await check('results', async () => {
        const rs = await Promise.all(pending);
        const norms = rs.slice(0, 4).map((r) => [r.min[0], r.max[1]]);
        const resized = rs[4];
        return { norms, resizedOk: resized.every((v) => v === 3) };
      });
    `,
      { nodeArgs: ['--expose-gc'] },
    );
    expectSurvived(r);
    expect(expectOk(r, 'results')).toEqual({ norms: Array(4).fill([16, 16]), resizedOk: true });
  });

  test('a buffer transferred away while the work runs rejects with a TypeError naming it (no crash)', () => {
    const r = runChild(`
      const shape = { n: 1, c: 16, h: 1024, w: 1024 };
      const len = 16 * 1024 * 1024;
      const keep = [];
      await check('x transferred', async () => {
        const x = new Float32Array(len);
        const p = addon.ddimLastStepReduceAsync(x, new Float32Array(len), 1, 1, shape);
        keep.push(structuredClone(x.buffer, { transfer: [x.buffer] }));
        return p;
      });
      await check('src transferred', async () => {
        const src = new Float32Array(len);
        const p = addon.resizeBilinearAsync(src, 16, 1024, 1024, 1024, 1024);
        keep.push(structuredClone(src.buffer, { transfer: [src.buffer] }));
        return p;
      });
    `);
    expectSurvived(r);
    expectError(r, 'x transferred', 'TypeError', /^x's ArrayBuffer was detached \(transferred\) while ddimLastStepReduceAsync\(\) ran/);
    expectError(r, 'src transferred', 'TypeError', /^src's ArrayBuffer was detached \(transferred\) while resizeBilinearAsync\(\) ran/);
  });
});

// ---- finding 4: allocations fail as RangeErrors ---------------------------------

describe('finding 4: sizes that cannot be allocated are RangeErrors, never an abort', () => {
  test("the issue's reproducers: a 2^31-1 wide resize and a 6000 x 6000 cudaKernelCheck", () => {
    const r = runChild(`
      await check('resizeBilinear', () => addon.resizeBilinear(new Float32Array(1), 1, 1, 1, 1, 2 ** 31 - 1) && 'returned');
      await check('resizeBilinearAsync', async () => (await addon.resizeBilinearAsync(new Float32Array(1), 1, 1, 1, 1, 2 ** 31 - 1)) && 'resolved');
      await check('resizeBilinear tall', () => addon.resizeBilinear(new Float32Array(1), 1, 1, 1, 2 ** 31 - 1, 1) && 'returned');
      await check('cudaKernelCheck', () => addon.cudaKernelCheck({ n: 1, c: 1, h: 6000, w: 6000 }, 1));
      await check('cudaKernelCheck total', () => addon.cudaKernelCheck({ n: 1, c: 2 ** 27, h: 1, w: 1 }, 1));
      await check('cudaKernelCheck small', () => typeof addon.cudaKernelCheck({ n: 1, c: 4, h: 4, w: 4 }, 1).available);
    `);
    expectSurvived(r);
    expectError(r, 'resizeBilinear', 'RangeError', /^outW must be at most 1048576 .*got 2147483647/);
    expectError(r, 'resizeBilinearAsync', 'RangeError', /^outW must be at most 1048576/);
    expectError(r, 'resizeBilinear tall', 'RangeError', /^outH must be at most 1048576, got 2147483647/);
    expectError(r, 'cudaKernelCheck', 'RangeError', /resized maps n\*\(16h\)\*\(16w\) = 9216000000 must be at most 67108864/);
    expectError(r, 'cudaKernelCheck total', 'RangeError', /shape product n\*c\*h\*w = 134217728 must be at most 67108864/);
    expect(expectOk(r, 'cudaKernelCheck small')).toBe('boolean');
  });

  // napi_create_arraybuffer aborts the process (FATAL ERROR: v8::ArrayBuffer::New
  // Allocation failed) when the memory is not there; the addon tries the size
  // first. A 4 GB address-space limit makes an 8 GiB output fail everywhere.
  const linux = process.platform === 'linux' ? test : test.skip;
  linux('an output the process cannot allocate is a RangeError naming its size (ulimit -v 4 GB)', () => {
    const r = runChild(
      `
      await check('started', () => true);
      await check('resizeBilinear', () => addon.resizeBilinear(new Float32Array(1), 1, 1, 1, 2048, 2 ** 20) && 'returned');
      await check('resizeBilinearAsync', async () => (await addon.resizeBilinearAsync(new Float32Array(1), 1, 1, 1, 2048, 2 ** 20)) && 'resolved');
      await check('still works', () => Array.from(addon.resizeBilinear(new Float32Array([1, 2, 3, 4]), 1, 2, 2, 2, 2)));
    `,
      { ulimitKb: 4_000_000 },
    );
    expectSurvived(r);
    expectOk(r, 'started');
    expectError(r, 'resizeBilinear', 'RangeError', /^could not allocate resizeBilinear\(\) output .*\(2147483648 elements, 8589934592 bytes\)/);
    expectError(r, 'resizeBilinearAsync', 'RangeError', /^could not allocate resizeBilinearAsync\(\) output .*8589934592 bytes/);
    expect(expectOk(r, 'still works')).toEqual([1, 2, 3, 4]);
  });
});

// ---- DeviceResidentPipeline (findings 1, 2, 4 and the native half of 10) ----

describe('DeviceResidentPipeline.runAsync / featuresAsync', () => {
  let tmp: ReturnType<typeof tempDir>;
  let data: { opts: NativePipelineOptions; steps: unknown[]; plane: number };

  beforeAll(async () => {
    tmp = tempDir();
    const bundle = await loadBundle(await writeTinyBundle(tmp.dir));
    const opts = nativePipelineOptions(
      { backbonePath: bundle.backbonePath, unetPath: bundle.unetPath, manifest: bundle.manifest, executionProviders: ['cpu'], intraOpThreads: 1 },
      bundle.unetPath,
      ['cpu'],
    );
    const { width, height } = bundle.manifest.input;
    data = { opts, steps: inversionSteps(2, bundle.manifest.schedule), plane: 3 * width * height };
  });

  afterAll(() => tmp?.cleanup());

  test('getters on steps[i] and options that release the pipeline, detach or shrink the batch cannot crash it', () => {
    const r = runChild(
      `
      const { opts, steps, plane } = data;
      const p = new addon.DeviceResidentPipeline(opts);
      const keep = [];
      const withGetter = (fn) => steps.map((s, i) => (i === steps.length - 1 ? { t: s.t, get a() { fn(); return s.a; }, b: s.b } : s));
      await check('baseline', async () => (await p.runAsync(new Float32Array(plane), 1, steps)).l2.length);
      await check('steps getter detaches batch', () => {
        const batch = new Float32Array(plane);
        return p.runAsync(batch, 1, withGetter(() => keep.push(structuredClone(batch.buffer, { transfer: [batch.buffer] }))));
      });
      await check('steps getter shrinks a resizable batch', () => {
        const ab = new ArrayBuffer(plane * 4, { maxByteLength: plane * 4 });
        return p.runAsync(new Float32Array(ab), 1, withGetter(() => ab.resize(0)));
      });
      await check('options getter detaches batch', () => {
        const batch = new Float32Array(plane);
        return p.runAsync(batch, 1, steps, { get latents() { keep.push(structuredClone(batch.buffer, { transfer: [batch.buffer] })); return true; } });
      });
      await check('steps getter releases the pipeline', () => {
        const q = new addon.DeviceResidentPipeline(opts);
        return q.runAsync(new Float32Array(plane), 1, withGetter(() => q.release()));
      });
      await check('resizable batch', () => p.runAsync(new Float32Array(new ArrayBuffer(plane * 4, { maxByteLength: plane * 8 })), 1, steps));
      await check('resizable batch features', () => p.featuresAsync(new Float32Array(new ArrayBuffer(plane * 4, { maxByteLength: plane * 8 })), 1));
      await check('growable batch', () => p.runAsync(new Float32Array(new SharedArrayBuffer(plane * 4, { maxByteLength: plane * 8 })), 1, steps));
      await check('n = 0 runAsync', () => p.runAsync(new Float32Array(0), 0, steps));
      await check('n = 0 featuresAsync', () => p.featuresAsync(new Float32Array(0), 0));
      await check('after', async () => (await p.featuresAsync(new Float32Array(plane), 1)).length > 0);
      p.release();
    `,
      { data },
    );
    expectSurvived(r);
    expect(expectOk(r, 'baseline')).toBeGreaterThan(0);
    expectError(r, 'steps getter detaches batch', 'TypeError', /^batch is backed by a detached ArrayBuffer/);
    expectError(r, 'steps getter shrinks a resizable batch', 'TypeError', /^batch is backed by a resizable ArrayBuffer; runAsync\(\)/);
    expectError(r, 'options getter detaches batch', 'TypeError', /^batch is backed by a detached ArrayBuffer/);
    expectError(r, 'steps getter releases the pipeline', 'Error', /release\(\) was called while runAsync\(\) read its arguments/);
    expectError(r, 'resizable batch', 'TypeError', /^batch is backed by a resizable ArrayBuffer; runAsync\(\)/);
    expectError(r, 'resizable batch features', 'TypeError', /^batch is backed by a resizable ArrayBuffer; featuresAsync\(\)/);
    expectError(r, 'growable batch', 'TypeError', /^batch is backed by a growable SharedArrayBuffer; runAsync\(\)/);
    expectError(r, 'n = 0 runAsync', 'RangeError', /^n must be a positive integer, got 0/);
    expectError(r, 'n = 0 featuresAsync', 'RangeError', /^n must be a positive integer, got 0/);
    expect(expectOk(r, 'after')).toBe(true);
  });
});
