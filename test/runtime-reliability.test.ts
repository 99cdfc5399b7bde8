/**
 * Issue 12, runtime findings 3, 5, 6, 7 (run-time half), 10, 11 and 14, and issue 11's idle
 * engine worker. Each test reproduces its finding first. What could crash or hang the process
 * (findings 3 and 5, a script that never calls dispose()) runs in a child process on the built
 * package, so a crash or a hang fails its test instead of killing jest.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Detector, InferenceError, InvalidArgumentError, type ScoreResult } from '../src';
import { writeBundle } from '../src/fit/write-bundle';
import { DataType, attr, encodeModel, floatTensor, makeGraph, makeModel, makeNode, valueInfo } from '../src/fit/onnx/proto';
import { BATCH_DIM } from '../src/fit/onnx/synthetic';
import { writeLatentGaussian } from '../src/runtime/bundle/latent';
import { EngineClient } from '../src/runtime/engine/client';
import { checkIntraOpThreads, maxIntraOpThreads, sampleTransferList, type SampleOutput } from '../src/runtime/engine/protocol';
import { decodeImage, takeInput } from '../src/runtime/preprocess';
import { packageRoot } from '../src/util/package-info';
import { editManifest, tempDir, tinyContents, TINY, writeTinyBundle } from './helpers/bundles';
import { pngOf, randomRaw } from './helpers/images';

const ENGINES = ['native', 'onnxruntime-node'] as const;
const ENTRY = join(packageRoot(), 'dist', 'src', 'index.js');
const SIDE = TINY.inputSize / TINY.stride;

let tmp: ReturnType<typeof tempDir>;
let bundle: string;

beforeAll(async () => {
  if (!existsSync(ENTRY)) throw new Error(`${ENTRY} missing: build first (npx tsc -p tsconfig.json; npm test does it)`);
  tmp = tempDir('invad-reliability-');
  bundle = await writeTinyBundle(tmp.dir);
});
afterAll(() => tmp?.cleanup());

interface ChildResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  /** the last stdout line, parsed as JSON */
  json: any;
}

/**
 * Runs `body` (an async function body; `Detector`, `invad`, `fs` and `BUNDLE` are in scope) in a
 * fresh node, killed after `timeoutMs`. The caller asserts on the outcome: a crash shows as a
 * signal, a hang as timedOut.
 */
function runChild(body: string, timeoutMs = 60_000, nodeArgs: string[] = []): ChildResult {
  const script = `
    const invad = require(${JSON.stringify(ENTRY)});
    const { Detector } = invad;
    const fs = require('node:fs');
    const BUNDLE = ${JSON.stringify(bundle)};
    (async () => { ${body} })().catch((e) => { console.error(e); process.exitCode = 3; });
  `;
  const r = spawnSync(process.execPath, [...nodeArgs, '-e', script], { encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL' });
  const last = r.stdout.trim().split('\n').pop() ?? '';
  let json: unknown;
  try {
    json = JSON.parse(last);
  } catch {
    json = undefined;
  }
  return {
    status: r.status,
    signal: r.signal,
    timedOut: (r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT',
    stdout: r.stdout,
    stderr: r.stderr,
    json,
  };
}

/** A child that neither crashed, hung nor failed; shows its stderr when it did. */
function expectClean(r: ChildResult): void {
  expect({ status: r.status, signal: r.signal, timedOut: r.timedOut, stderr: r.status === 0 ? '' : r.stderr }).toEqual({
    status: 0,
    signal: null,
    timedOut: false,
    stderr: '',
  });
}

/** The error a promise rejects with; fails the test if it resolves. */
async function rejection(p: Promise<unknown>): Promise<any> {
  const outcome = await p.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
  if (!('error' in outcome)) throw new Error(`expected a rejection, but it resolved to ${JSON.stringify(outcome.value)?.slice(0, 200)}`);
  return outcome.error;
}

const mkfifo = (path: string) => {
  const r = spawnSync('mkfifo', [path], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`mkfifo ${path} failed: ${r.stderr}`);
};
const posix = process.platform !== 'win32';

describe('finding 3: score() owns its input before it returns', () => {
  test('raw pixels and encoded bytes on resizable, shared and transferred buffers, changed right after score()', () => {
    // 4096 x 4096 x 3 raw is the reproducer: sharp is still reading when resize(0) frees the pages.
    const r = runChild(
      `
      const det = await Detector.load(BUNDLE);
      const W = 4096, H = 4096, N = W * H * 3;
      const fill = (u8) => { for (let i = 0; i < u8.length; i++) u8[i] = (i * 7) & 255; return u8; };
      const reference = (await det.score({ data: fill(new Uint8Array(N)), width: W, height: H, channels: 3 })).score;

      const ab = new ArrayBuffer(N, { maxByteLength: N });
      const pRaw = det.score({ data: fill(new Uint8Array(ab)), width: W, height: H, channels: 3 });
      ab.resize(0);

      const png = await require(${JSON.stringify(require.resolve('sharp'))})(fill(new Uint8Array(N)), { raw: { width: W, height: H, channels: 3 } }).png({ compressionLevel: 1 }).toBuffer();
      const encAb = new ArrayBuffer(png.length, { maxByteLength: png.length });
      new Uint8Array(encAb).set(png);
      const pEncoded = det.score(new Uint8Array(encAb));
      encAb.resize(0);

      const sab = new SharedArrayBuffer(N);
      const pShared = det.score({ data: fill(new Uint8Array(sab)), width: W, height: H, channels: 3 });
      new Uint8Array(sab).fill(255); // written after the call: must not change the score

      const plain = new ArrayBuffer(N);
      const pTransferred = det.score({ data: fill(new Uint8Array(plain)), width: W, height: H, channels: 3 });
      structuredClone(plain, { transfer: [plain] }); // detached, and its memory freed at the next GC
      global.gc();
      const junk = Array.from({ length: 8 }, () => Buffer.alloc(N / 4, 1)); // reuse the freed pages

      const scores = await Promise.all([pRaw, pEncoded, pShared, pTransferred].map((p) => p.then((s) => s.score)));
      await det.dispose();
      console.log(JSON.stringify({ reference, scores, junk: junk.length }));
      `,
      120_000,
      ['--expose-gc'],
    );
    expectClean(r);
    expect(Number.isFinite(r.json.reference)).toBe(true);
    // Each call scored the image as it was when score() was called.
    expect(r.json.scores).toEqual([r.json.reference, r.json.reference, r.json.reference, r.json.reference]);
  });

  test('recycled copy buffers never mix images up (sequential and concurrent, over 1 MB each)', async () => {
    const det = await Detector.load(bundle);
    try {
      const [a, b, c] = [1, 2, 3].map((seed) => randomRaw(640, 640, 3, seed));
      const alone = [];
      for (const img of [a, b, c]) alone.push((await det.score(img)).score);
      expect(new Set(alone).size).toBe(3);
      const again = [];
      for (const img of [c, a, b]) again.push((await det.score(img)).score);
      expect(again).toEqual([alone[2], alone[0], alone[1]]);
      const concurrent = await Promise.all([a, b, c, a, b, c].map((img) => det.score(img)));
      expect(concurrent.map((r) => r.score)).toEqual([...alone, ...alone]);
      const png = await pngOf(b);
      expect((await det.score(png)).score).toBe(alone[1]);
    } finally {
      await det.dispose();
    }
  });

  test('an owned input is decoded once; its copy then goes back to the pool', async () => {
    const owned = takeInput(randomRaw(640, 640, 3, 4), 'input[0]');
    await expect(decodeImage(owned, 'input[0]')).resolves.toMatchObject({ width: 640, height: 640 });
    await expect(decodeImage(owned, 'input[0]')).rejects.toThrow(/decoded already/);
  });

  test('a raw-pixel object is read once: a getter cannot swap the data after the length check', async () => {
    const det = await Detector.load(bundle);
    try {
      let reads = 0;
      const input = {
        get data() {
          reads++;
          return reads === 1 ? new Uint8Array(8 * 8 * 3) : new Uint8Array(1);
        },
        width: 8,
        height: 8,
        channels: 3 as const,
      };
      const r = await det.score(input);
      expect(reads).toBe(1);
      expect(Number.isFinite(r.score)).toBe(true);
    } finally {
      await det.dispose();
    }
  });
});

describe('finding 5: paths that are not regular files fail at once, never hang', () => {
  (posix ? test : test.skip)('a FIFO as an image, in a scanned folder and as manifest.json; the pool stays free and dispose() resolves', () => {
    const dir = join(tmp.dir, 'fifos');
    mkdirSync(join(dir, 'images'), { recursive: true });
    mkfifo(join(dir, 'images', 'pipe.png'));
    writeFileSync(join(dir, 'images', 'ok.txt'), 'a regular file');
    const fifoBundle = join(dir, 'bundle');
    mkdirSync(fifoBundle);
    mkfifo(join(fifoBundle, 'manifest.json'));
    const imageFiles = join(packageRoot(), 'dist', 'src', 'util', 'image-files.js');
    const r = runChild(
      `
      const dir = ${JSON.stringify(dir)};
      const det = await Detector.load(BUNDLE);
      const fifo = dir + '/images/pipe.png';
      const describe = (e) => ({ name: e.name, code: e.code, message: e.message });
      // Four at once filled libuv's pool of four threads, and then every fs call hung.
      const scored = await Promise.allSettled([0, 1, 2, 3, 4].map(() => det.score(fifo)));
      const batch = await det.scoreBatch([fifo], { errors: 'collect' });
      const text = await fs.promises.readFile(dir + '/images/ok.txt', 'utf8');
      const listed = await require(${JSON.stringify(imageFiles)}).expandImagePaths([dir + '/images']);
      const manifest = await Detector.load(${JSON.stringify(fifoBundle)}).then(() => 'loaded', describe);
      await det.dispose();
      console.log(JSON.stringify({ scored: scored.map((s) => describe(s.reason)), batch: batch.map(describe), text, listed, manifest }));
      `,
      30_000,
    );
    expectClean(r);
    const notRegular = { name: 'InvalidInputError', code: 'ERR_INVAD_INVALID_INPUT', message: expect.stringMatching(/not a regular file \(it is a FIFO/) };
    expect(r.json.scored).toEqual(Array(5).fill(notRegular));
    expect(r.json.batch).toEqual([notRegular]);
    expect(r.json.text).toBe('a regular file');
    // The scan lists it, so that scoring reports it rather than dropping it silently.
    expect(r.json.listed).toEqual([join(dir, 'images', 'pipe.png')]);
    expect(r.json.manifest).toEqual({
      name: 'ModelBundleError',
      code: 'ERR_INVAD_MODEL_BUNDLE',
      message: expect.stringMatching(/manifest\.json .* not a regular file/),
    });
  });

  (posix ? test : test.skip)('`invad score` on a folder holding a FIFO reports it and exits', () => {
    const dir = join(tmp.dir, 'cli-fifo');
    mkdirSync(dir, { recursive: true });
    mkfifo(join(dir, 'pipe.png'));
    const cli = join(packageRoot(), 'dist', 'src', 'tools', 'cli', 'main.js');
    const r = spawnSync(process.execPath, [cli, 'score', '--model', bundle, dir], { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' });
    expect({ timedOut: r.error !== undefined, signal: r.signal }).toEqual({ timedOut: false, signal: null });
    expect(r.stdout + r.stderr).toMatch(/not a regular file/);
    expect(r.status).not.toBe(0);
  });

  test('a directory given as an image is an InvalidInputError, and a missing file still is', async () => {
    const det = await Detector.load(bundle);
    try {
      expect(await rejection(det.score(tmp.dir))).toMatchObject({
        code: 'ERR_INVAD_INVALID_INPUT',
        input: tmp.dir,
        message: expect.stringMatching(/not a regular file \(it is a directory\)/),
      });
      expect(await rejection(det.score(join(tmp.dir, 'missing.png')))).toMatchObject({
        code: 'ERR_INVAD_INVALID_INPUT',
        message: expect.stringMatching(/does not exist/),
      });
    } finally {
      await det.dispose();
    }
  });
});

/** image [N,3,H,W] -> sqrt(patch mean + 1.5) [N,C,h,w]: NaN for dark patches, finite for mid-gray ones. */
function nanBackbone(): Uint8Array {
  const s = TINY.stride;
  const c = TINY.channels;
  // A black pixel normalizes to about -2 (ImageNet mean and std), mid-gray to about +0.2.
  const weights = new Float32Array(c * 3 * s * s).fill(1 / (3 * s * s));
  const graph = makeGraph({
    name: 'nan_backbone',
    inputs: [valueInfo('image', DataType.FLOAT, [BATCH_DIM, 3, TINY.inputSize, TINY.inputSize])],
    outputs: [valueInfo('features', DataType.FLOAT, [BATCH_DIM, c, SIDE, SIDE])],
    initializers: [floatTensor('w', [c, 3, s, s], weights), floatTensor('b', [c], new Float32Array(c).fill(1.5))],
    nodes: [
      makeNode('Conv', ['image', 'w', 'b'], ['mean'], { attributes: [attr.ints('kernel_shape', [s, s]), attr.ints('strides', [s, s])] }),
      makeNode('Sqrt', ['mean'], ['features']),
    ],
  });
  return encodeModel(makeModel(graph));
}

const gray = (v: number) => ({
  data: new Uint8Array(TINY.inputSize * TINY.inputSize * 3).fill(v),
  width: TINY.inputSize,
  height: TINY.inputSize,
  channels: 3 as const,
});

describe('finding 6: one image with a NaN model output fails alone', () => {
  let nanBundle: string;
  beforeAll(async () => {
    nanBundle = join(tmp.dir, 'nan-bundle');
    await writeBundle(nanBundle, { ...tinyContents(), backbone: { bytes: nanBackbone(), name: 'nan-backbone', taps: ['sqrt'] } });
  });

  test.each(ENGINES)('%s engine: scoreBatch and concurrent score() calls', async (engine) => {
    const det = await Detector.load(nanBundle, { engine, maxWaitMs: 200 });
    try {
      const alone = [await det.score(gray(100)), await det.score(gray(150))];
      const black = gray(0);
      const batch = await det.scoreBatch([gray(100), black, gray(150)], { errors: 'collect', batchSize: 3 });
      const concurrent = await Promise.allSettled([det.score(gray(100)), det.score(black), det.score(gray(150))]);
      for (const [first, bad, last] of [batch, concurrent.map((s) => (s.status === 'fulfilled' ? s.value : s.reason))]) {
        expect(bad).toBeInstanceOf(InferenceError);
        expect((bad as Error).message).toMatch(/non-finite/);
        expect((bad as Error).message).not.toMatch(/duplicate/i);
        // The others shared the model run and scored exactly as they do alone.
        for (const [r, ref] of [
          [first, alone[0]],
          [last, alone[1]],
        ] as Array<[ScoreResult, ScoreResult]>) {
          expect(r.timings.batchSize).toBe(3);
          expect(r.score).toBe(ref.score);
          expect(r.map).toEqual(ref.map);
        }
      }
    } finally {
      await det.dispose();
    }
  });

  test('a result message lists each buffer once, even when two maps share one', () => {
    const shared = new Float32Array(0);
    const own = new Float32Array(4);
    const samples = [
      { featureMaps: { l2: shared }, map: shared },
      { featureMaps: { l2: own, latentGaussian: new Float32Array(4) }, map: new Float32Array(9) },
    ] as unknown as SampleOutput[];
    const list = sampleTransferList(samples);
    expect(list).toHaveLength(4);
    expect(new Set(list).size).toBe(list.length);
    // postMessage accepts it (it threw "Transfer list contains duplicate ArrayBuffer").
    expect(() => structuredClone(samples, { transfer: list })).not.toThrow();
  });
});

describe('finding 7 (run time): a non-finite score or map is an InferenceError, never a good part', () => {
  test.each(ENGINES)('%s engine: a score made infinite by the calibration in use', async (engine) => {
    const det = await Detector.load(bundle, { engine });
    try {
      // The loader rejects such a calibration (finding 7, load time); change it after load to
      // reach the run-time check behind it.
      (det as unknown as { manifest: { calibration: { nll: { scale: number } } } }).manifest.calibration.nll.scale = 5e-324;
      const err = await rejection(det.score(gray(120)));
      expect(err).toBeInstanceOf(InferenceError);
      expect(err.message).toMatch(/input\[0\]: the image score is (Infinity|NaN)/);
      const batch = await det.scoreBatch([gray(120)], { errors: 'collect' });
      expect(batch[0]).toBeInstanceOf(InferenceError);
    } finally {
      await det.dispose();
    }
  });

  test.each(ENGINES)('%s engine: a latent-Gaussian map that overflows float32', async (engine) => {
    // Finite statistics whose Mahalanobis distance exceeds float32's range: the map became
    // Infinity, and so did the latent-gaussian score.
    const b = join(tmp.dir, `overflow-${engine}`);
    await writeBundle(b, tinyContents());
    const positions = SIDE * SIDE;
    const c = TINY.channels;
    const precision = new Float32Array(positions * c * c);
    for (let p = 0; p < positions; p++) for (let k = 0; k < c; k++) precision[(p * c + k) * c + k] = 1;
    const spec = await writeLatentGaussian(b, TINY.steps, { positions, channels: c, mean: new Float32Array(positions * c).fill(-3e38), precision }, 10, {
      amount: 0.01,
      relativeTo: 'mean-variance',
    });
    editManifest(b, (m) => (m.latentGaussian = [spec]));
    // The latent-gaussian score, and the combined score with all maps: its score stays finite
    // but its latent-Gaussian map does not.
    for (const [scoreDefinition, options] of [
      ['latent-gaussian', {}],
      ['combined', { allMaps: true }],
    ] as const) {
      const outcome = await Detector.load(b, { engine, scoreDefinition }).then(
        async (det) => {
          try {
            return await Promise.allSettled([det.score(gray(120), options), det.scoreBatch([gray(130)], options)]);
          } finally {
            await det.dispose();
          }
        },
        (error: Error) => error,
      );
      if (outcome instanceof Error) {
        // Also fine: the loader refused the statistics.
        expect(outcome).toMatchObject({ code: 'ERR_INVAD_MODEL_BUNDLE' });
        continue;
      }
      for (const s of outcome) {
        expect(s.status).toBe('rejected');
        expect((s as PromiseRejectedResult).reason).toBeInstanceOf(InferenceError);
        expect((s as PromiseRejectedResult).reason.message).toMatch(/latent-Gaussian map .* not finite/);
      }
    }
  });
});

describe('finding 10: latents() checks its arguments', () => {
  test('steps and batchSize out of range are InvalidArgumentError; valid calls still work', async () => {
    const det = await Detector.load(bundle);
    try {
      const f = gray(90);
      for (const [steps, batch, argument] of [
        [0, undefined, 'steps'],
        [1.5, undefined, 'steps'],
        [100_001, undefined, 'steps'],
        [3, 0, 'batchSize'],
        [3, -1, 'batchSize'],
        [3, 2000, 'batchSize'],
      ] as const) {
        const err = await rejection(det.latents([f], steps, batch));
        expect(err).toBeInstanceOf(InvalidArgumentError);
        expect(err.argument).toBe(argument);
      }
      expect(await rejection(det.latents('not an array' as never, 3))).toMatchObject({ argument: 'inputs' });
      const latents = await det.latents([f, gray(140), f], 3, 2);
      expect(latents).toHaveLength(3 * TINY.channels * SIDE * SIDE);
      // latents([f], 0) used to return the backbone's features; S = 1 must differ from them.
      const one = await det.latents([f], 1);
      expect(one).not.toEqual(latents.subarray(0, one.length));
    } finally {
      await det.dispose();
    }
  });
});

describe('finding 11: a path with a NUL byte is refused, not cut short', () => {
  test('score, scoreBatch and Detector.load', async () => {
    const png = join(tmp.dir, 'normal.png');
    writeFileSync(png, await pngOf(randomRaw(16, 16, 3, 5)));
    const det = await Detector.load(bundle);
    try {
      await expect(det.score(png)).resolves.toMatchObject({ width: 16 }); // control: the prefix scores
      const cut = `${png}\0/x.jpg`;
      expect(await rejection(det.score(cut))).toMatchObject({ code: 'ERR_INVAD_INVALID_ARGUMENT', message: expect.stringMatching(/NUL/) });
      const [r] = await det.scoreBatch([cut], { errors: 'collect' });
      expect(r).toBeInstanceOf(InvalidArgumentError);
    } finally {
      await det.dispose();
    }
    expect(await rejection(Detector.load(`${bundle}\0/elsewhere`))).toMatchObject({ code: 'ERR_INVAD_INVALID_ARGUMENT', argument: 'dir' });
    expect(await rejection(Detector.load(bundle, { engine: 'native', tensorrt: { cacheDir: `${tmp.dir}\0x` } }))).toMatchObject({
      argument: 'options.tensorrt.cacheDir',
    });
  });
});

describe('finding 14: intraOpThreads is capped at 4 x availableParallelism()', () => {
  test('the cap: 4 x availableParallelism() passes, one more does not', () => {
    const max = maxIntraOpThreads();
    expect(max).toBe(4 * availableParallelism());
    expect(checkIntraOpThreads('t', max)).toBe(max);
    expect(checkIntraOpThreads('t', 0)).toBe(0);
    for (const bad of [max + 1, -1, 1.5, '2']) expect(() => checkIntraOpThreads('t', bad)).toThrow(InvalidArgumentError);
  });

  test.each(ENGINES)('%s engine: 1024 is refused at once with the limit in the message', async (engine) => {
    const started = Date.now();
    const err = await rejection(Detector.load(bundle, { engine, intraOpThreads: 1024 }));
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect(err.argument).toBe('options.intraOpThreads');
    expect(err.message).toContain(`from 0 to ${maxIntraOpThreads()}`);
    expect(Date.now() - started).toBeLessThan(5_000); // it took 47 s to open
  });

  test('engine starts outside the Detector (fit, bench) are checked too', async () => {
    const err = await rejection(
      EngineClient.start({
        backbonePath: join(bundle, 'backbone.onnx'),
        unetPath: null,
        manifest: {} as never,
        executionProviders: ['cpu'],
        intraOpThreads: 1024,
      }),
    );
    expect(err).toMatchObject({ code: 'ERR_INVAD_INVALID_ARGUMENT', argument: 'intraOpThreads' });
  });

  test('a count under the cap loads and scores', async () => {
    const det = await Detector.load(bundle, { intraOpThreads: Math.min(4, maxIntraOpThreads()) });
    try {
      expect(Number.isFinite((await det.score(gray(60))).score)).toBe(true);
    } finally {
      await det.dispose();
    }
  });
});

describe('issue 11: an idle detector does not hold the process open', () => {
  test.each(ENGINES)('%s engine: a script that scores and never calls dispose() exits by itself', (engine) => {
    const r = runChild(
      `
      const det = await Detector.load(BUNDLE, { engine: ${JSON.stringify(engine)} });
      // Nothing else keeps the loop alive while this waits: the busy worker must.
      const r = await det.score({ data: new Uint8Array(32 * 32 * 3).fill(77), width: 32, height: 32, channels: 3 });
      const later = await new Promise((resolve) => setTimeout(() => det.score({ data: new Uint8Array(12).fill(9), width: 2, height: 2, channels: 3 }).then(resolve), 50));
      console.log(JSON.stringify({ score: r.score, later: later.score }));
      `,
      60_000,
    );
    expectClean(r);
    expect(Number.isFinite(r.json.score)).toBe(true);
    expect(Number.isFinite(r.json.later)).toBe(true);
  });

  test('a pending dispose() still completes before the process exits', () => {
    const r = runChild(
      `
      const det = await Detector.load(BUNDLE);
      det.score({ data: new Uint8Array(12), width: 2, height: 2, channels: 3 }).then((s) => console.log('scored ' + s.width));
      det.dispose().then(() => console.log(JSON.stringify({ disposed: true })));
      `,
    );
    expectClean(r);
    expect(r.stdout).toContain('scored 2');
    expect(r.json).toEqual({ disposed: true });
  });
});
