import { writeFileSync } from 'node:fs';
import { Detector, DisposedError, InvalidArgumentError, InvalidInputError, type ScoreResult } from '../src';
import { toTensor } from '../src/runtime/preprocess';
import { referenceScore, tempDir, TINY, writeTinyBundle } from './helpers/bundles';
import { png16, pngDeclaring, pngOf, randomRaw } from './helpers/images';

let tmp: ReturnType<typeof tempDir>;
let bundle: string;
let det: Detector;

beforeAll(async () => {
  tmp = tempDir();
  bundle = await writeTinyBundle(tmp.dir);
  det = await Detector.load(bundle, { executionProviders: ['cpu'], steps: 3 });
});

afterAll(async () => {
  await det?.dispose();
  tmp?.cleanup();
});

function expectClose(got: number, want: number, tol = 1e-5) {
  expect(Math.abs(got - want)).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(want)));
}

function sameResult(a: ScoreResult, b: ScoreResult) {
  expect(a.score).toBe(b.score);
  expect(a.components).toEqual(b.components);
  expect(Buffer.from(a.map.buffer, a.map.byteOffset, a.map.byteLength).equals(Buffer.from(b.map.buffer, b.map.byteOffset, b.map.byteLength))).toBe(true);
}

describe('Detector pipeline', () => {
  test.each([2, 3, 4, 5])('score, NLL and map match the TypeScript reference at S = %i', async (steps) => {
    const raw = randomRaw(40, 24, 3, 11);
    const manifestInput = {
      width: 32,
      height: 32,
      mean: [0.485, 0.456, 0.406] as [number, number, number],
      std: [0.229, 0.224, 0.225] as [number, number, number],
      alpha: 'drop' as const,
      resizeKernel: 'linear' as const,
    };
    const tensor = await toTensor({ rgb: Buffer.from(raw.data), width: 40, height: 24 }, manifestInput, 'ref');
    const ref = referenceScore(tensor, 40, 24, TINY, steps);
    const r = await det.score(raw, { steps });
    expect(r.width).toBe(40);
    expect(r.height).toBe(24);
    expect(r.map).toHaveLength(40 * 24);
    expect(r.steps).toBe(steps);
    expectClose(r.components.spatialRange, ref.spatialRange);
    expectClose(r.components.nll, ref.nll);
    // Uncalibrated bundle: identity normalization, so combined = SP + NLL, and no decision.
    expectClose(r.score, ref.spatialRange + ref.nll);
    expect(r.isAnomalous).toBe(false);
    expect(r.threshold).toBeNull();
    let worst = 0;
    for (let i = 0; i < ref.map.length; i++) worst = Math.max(worst, Math.abs(r.map[i] - ref.map[i]) / Math.max(1, Math.abs(ref.map[i])));
    expect(worst).toBeLessThanOrEqual(1e-5);
    expect(r.timings.unetMs).toHaveLength(steps);
    for (const v of [r.timings.decodeMs, r.timings.backboneMs, r.timings.kernelMs, r.timings.totalMs]) expect(v).toBeGreaterThanOrEqual(0);
  });

  test('file path, encoded buffer and raw pixels of one image give one result', async () => {
    const raw = randomRaw(32, 32, 3, 3);
    const png = await pngOf(raw);
    const path = `${tmp.dir}/img.png`;
    writeFileSync(path, png);
    const [a, b, c] = await Promise.all([det.score(raw), det.score(png), det.score(path)]);
    sameResult(a, b);
    sameResult(a, c);
  });

  test('64 concurrent score() calls give exactly the sequential results', async () => {
    const inputs = Array.from({ length: 64 }, (_, i) => randomRaw(20 + (i % 5) * 7, 30 + (i % 3) * 5, 3, 100 + i));
    const sequential: ScoreResult[] = [];
    for (const input of inputs) sequential.push(await det.score(input));
    const concurrent = await Promise.all(inputs.map((input) => det.score(input)));
    concurrent.forEach((r, i) => sameResult(r, sequential[i]));
    // They really were batched together.
    expect(Math.max(...concurrent.map((r) => r.timings.batchSize))).toBeGreaterThan(1);
    expect(sequential.every((r) => r.timings.batchSize === 1)).toBe(true);
  });

  test('scoreBatch keeps order, equals score(), and collects per-image errors', async () => {
    const inputs = Array.from({ length: 11 }, (_, i) => randomRaw(32, 32, 3, 200 + i));
    const batch = await det.scoreBatch(inputs, { batchSize: 4 });
    expect(batch).toHaveLength(11);
    for (let i = 0; i < 11; i++) sameResult(batch[i], await det.score(inputs[i]));
    expect(batch[0].timings.batchSize).toBe(4);
    const mixed = await det.scoreBatch([inputs[0], Buffer.from('not an image'), inputs[1]], { errors: 'collect' });
    expect(mixed[1]).toBeInstanceOf(InvalidInputError);
    sameResult(mixed[0] as ScoreResult, batch[0]);
    sameResult(mixed[2] as ScoreResult, batch[1]);
    await expect(det.scoreBatch([inputs[0], Buffer.alloc(0)])).rejects.toMatchObject({ code: 'ERR_INVAD_INVALID_INPUT', input: 'input[1]' });
  });

  test('info() reports the provider in use and the addon build', () => {
    const info = det.info();
    expect(info.providers).toEqual({ backbone: 'cpu', unet: 'cpu' });
    expect(info.steps).toBe(3);
    expect(info.calibrated).toBe(false);
    expect(typeof info.addon.version).toBe('string');
  });
});

describe('bad images give typed errors and no crash', () => {
  const cases: Array<[string, () => unknown]> = [
    ['0 bytes', () => Buffer.alloc(0)],
    ['random bytes', () => Buffer.from(randomRaw(64, 1, 1, 9).data)],
    ['a truncated PNG', async () => (await pngOf(randomRaw(64, 64, 3, 1))).subarray(0, 200)],
    ['a very large declared size', () => pngDeclaring(100_000, 100_000)],
    ['a missing file', () => '/nonexistent/invad/image.png'],
    ['raw pixels of the wrong length', () => ({ data: new Uint8Array(10), width: 4, height: 4, channels: 3 })],
  ];
  test.each(cases)('%s', async (_name, make) => {
    await expect(det.score((await make()) as never)).rejects.toBeInstanceOf(InvalidInputError);
  });

  test('wrong argument types are InvalidArgumentError', async () => {
    for (const bad of [
      42,
      null,
      undefined,
      {},
      { data: [1, 2, 3], width: 1, height: 1, channels: 3 },
      { data: new Uint8Array(3), width: 0, height: 1, channels: 3 },
    ]) {
      await expect(det.score(bad as never)).rejects.toBeInstanceOf(InvalidArgumentError);
    }
    await expect(det.score(randomRaw(8, 8, 3, 1), { steps: 0 })).rejects.toMatchObject({ code: 'ERR_INVAD_INVALID_ARGUMENT', argument: 'options.steps' });
  });

  test.each([
    ['a 16-bit PNG', () => png16(30, 20), 30, 20],
    ['an RGBA PNG', () => pngOf(randomRaw(25, 17, 4, 2)), 25, 17],
    ['a grayscale PNG', () => pngOf(randomRaw(19, 23, 1, 3)), 19, 23],
    ['raw gray+alpha pixels', () => randomRaw(9, 7, 2, 4), 9, 7],
    ['a 1x1 image', () => pngOf(randomRaw(1, 1, 3, 4)), 1, 1],
  ])('%s scores', async (_name, make, w, h) => {
    const r = await det.score((await make()) as never);
    expect(r.width).toBe(w);
    expect(r.height).toBe(h);
    expect(r.map).toHaveLength(w * h);
    expect(Number.isFinite(r.score)).toBe(true);
  });

  test('gray images become RGB by replicating the channel', async () => {
    const gray = randomRaw(16, 16, 1, 8);
    const rgb = new Uint8Array(16 * 16 * 3);
    gray.data.forEach((v, i) => rgb.fill(v, 3 * i, 3 * i + 3));
    sameResult(await det.score(gray), await det.score({ data: rgb, width: 16, height: 16, channels: 3 }));
  });
});

describe('dispose', () => {
  test('finishes queued work, then use throws DisposedError', async () => {
    const d = await Detector.load(bundle);
    const pending = Promise.all([d.score(randomRaw(8, 8, 3, 1)), d.score(randomRaw(8, 8, 3, 2))]);
    await d.dispose();
    await expect(pending).resolves.toHaveLength(2);
    await expect(d.score(randomRaw(8, 8, 3, 1))).rejects.toBeInstanceOf(DisposedError);
    await expect(d.scoreBatch([randomRaw(8, 8, 3, 1)])).rejects.toMatchObject({ code: 'ERR_INVAD_DISPOSED' });
    await d.dispose(); // idempotent
  });

  test('bad load options are InvalidArgumentError naming the option', async () => {
    await expect(Detector.load(bundle, { steps: 0 })).rejects.toMatchObject({ argument: 'options.steps' });
    await expect(Detector.load(bundle, { executionProviders: ['gpu' as never] })).rejects.toMatchObject({ argument: 'options.executionProviders[0]' });
    await expect(Detector.load(bundle, { maxBatchSize: 1.5 })).rejects.toMatchObject({ argument: 'options.maxBatchSize' });
    await expect(Detector.load(bundle, { threadSpinning: true as never })).rejects.toMatchObject({ argument: 'options.threadSpinning' });
  });

  test.each(['native', 'onnxruntime-node'] as const)('every thread-spinning mode gives the same scores (%s engine)', async (engine) => {
    const input = randomRaw(8, 8, 3, 21);
    const results = [];
    for (const threadSpinning of ['none', 'unet', 'all'] as const) {
      const d = await Detector.load(bundle, { executionProviders: ['cpu'], steps: 3, engine, threadSpinning, intraOpThreads: 2 });
      try {
        results.push(await d.score(input));
      } finally {
        await d.dispose();
      }
    }
    sameResult(results[0], results[1]);
    sameResult(results[0], results[2]);
  });

  test('an unavailable provider falls back to the next and says so', async () => {
    const d = await Detector.load(bundle, { executionProviders: ['cuda', 'cpu'] });
    try {
      const info = d.info();
      expect(info.providers.unet).toBe('cpu');
      expect(info.fallbacks.some((f) => f.provider === 'cuda')).toBe(true);
    } finally {
      await d.dispose();
    }
  });
});
