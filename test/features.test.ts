import { join } from 'node:path';
import { Detector } from '../src';
import { writeBundle } from '../src/fit/write-bundle';
import { channelStats, FeatureExtractor } from '../src/fit/features';
import { decodeNpy, encodeNpy } from '../src/util/npy';
import { linearUnet } from '../src/fit/onnx/synthetic';
import { splitFiles } from '../src/fit/fit';
import { tempDir, tinyContents, TINY } from './helpers/bundles';
import { pngOf, randomRaw } from './helpers/images';
import { writeFileSync } from 'node:fs';

let tmp: ReturnType<typeof tempDir>;
beforeAll(() => {
  tmp = tempDir();
});
afterAll(() => tmp.cleanup());

test('train-time features equal the features Detector scores', async () => {
  // With S = 1 and eps = 1*x + 0*t the inversion returns the clean features,
  // so Detector's l2 map at feature resolution is their channel norm.
  const side = TINY.inputSize / TINY.stride;
  const bundle = join(tmp.dir, 'identity');
  await writeBundle(bundle, { ...tinyContents(), unet: { bytes: linearUnet({ channels: TINY.channels, height: side, width: side, k: 1, m: 0 }) } });
  const files: string[] = [];
  for (let i = 0; i < 5; i++) {
    const f = join(tmp.dir, `img${i}.png`);
    writeFileSync(f, await pngOf(randomRaw(side * 9, side * 7, 3, 40 + i)));
    files.push(f);
  }
  const contents = tinyContents();
  const extractor = await FeatureExtractor.open(join(bundle, 'backbone.onnx'), { input: contents.input, features: contents.features });
  const progress: number[] = [];
  const ex = await extractor.extract(files, { batchSize: 2, onProgress: (d) => progress.push(d) });
  await extractor.close();
  expect(progress).toEqual([2, 4, 5]);
  expect(ex.shape).toEqual([5, TINY.channels, side, side]);

  const det = await Detector.load(bundle, { steps: 1 });
  try {
    for (let i = 0; i < files.length; i++) {
      const r = await det.score(files[i]);
      const per = TINY.channels * side * side;
      const f = ex.features.subarray(i * per, (i + 1) * per);
      let sumSq = 0;
      for (const v of f) sumSq += v * v;
      expect(Math.abs(r.components.nll - (0.5 * sumSq + 0.5 * per * Math.log(2 * Math.PI)))).toBeLessThan(1e-4 * Math.max(1, r.components.nll));
    }
  } finally {
    await det.dispose();
  }
});

test('unreadable images are skipped and listed, or fail with strict', async () => {
  const contents = tinyContents();
  const bundle = join(tmp.dir, 'skip');
  await writeBundle(bundle, contents);
  const good = join(tmp.dir, 'good.png');
  const bad = join(tmp.dir, 'bad.png');
  writeFileSync(good, await pngOf(randomRaw(32, 32, 3, 1)));
  writeFileSync(bad, 'nope');
  const extractor = await FeatureExtractor.open(join(bundle, 'backbone.onnx'), { input: contents.input, features: contents.features });
  try {
    const r = await extractor.extract([good, bad, good]);
    expect(r.files).toEqual([good, good]);
    expect(r.skipped.map((s) => s.file)).toEqual([bad]);
    await expect(extractor.extract([good, bad], { strict: true })).rejects.toMatchObject({ code: 'ERR_INVAD_INVALID_INPUT' });
  } finally {
    await extractor.close();
  }
});

test('channel statistics and .npy round trip', () => {
  const f = Float32Array.from([1, 2, 3, 4, 10, 10, 10, 10, 5, 6, 7, 8, 10, 10, 10, 10]); // n=2, c=2, h=1, w=4
  const { mean, std } = channelStats(f, [2, 2, 1, 4]);
  expect([...mean]).toEqual([4.5, 10]);
  expect(std[0]).toBeCloseTo(Math.sqrt(5.25), 6);
  expect(std[1]).toBe(0);
  const back = decodeNpy(encodeNpy(f, [2, 2, 1, 4]));
  expect(back.shape).toEqual([2, 2, 1, 4]);
  expect([...back.data]).toEqual([...f]);
  const ints = decodeNpy(encodeNpy(BigInt64Array.from([1n, -2n, 999n]), [3]));
  expect(ints).toMatchObject({ dtype: '<i8', shape: [3] });
});

test('the validation split is deterministic and refuses too few images', () => {
  const files = Array.from({ length: 20 }, (_, i) => `f${i}.png`);
  const a = splitFiles(files, 0.1, 0);
  expect(a.val).toHaveLength(2);
  expect(a.train).toHaveLength(18);
  expect(splitFiles([...files].reverse(), 0.1, 0)).toEqual(a);
  expect(splitFiles(files, 0.1, 1)).not.toEqual(a);
  expect(() => splitFiles(files.slice(0, 5), 0.1, 0)).toThrow(/too few images/);
});
