/**
 * onnxruntime-node's run() is synchronous in native code. The Detector runs it
 * in a worker thread, so the caller's event loop must stay responsive during a
 * long inference. The control case shows the measurement does catch blocking.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import * as ort from 'onnxruntime-node';
import { Detector } from '../src';
import { tempDir, writeSlowBundle, TINY } from './helpers/bundles';
import { randomRaw } from './helpers/images';

let tmp: ReturnType<typeof tempDir>;
let bundle: string;
beforeAll(async () => {
  tmp = tempDir();
  bundle = await writeSlowBundle(tmp.dir, 350);
});
afterAll(() => tmp.cleanup());

async function p99DelayMs(work: () => Promise<unknown>): Promise<number> {
  const h = monitorEventLoopDelay({ resolution: 5 });
  h.enable();
  await work();
  h.disable();
  return h.percentile(99) / 1e6;
}

test('p99 event-loop delay stays under a quarter of one inference while scoring', async () => {
  const det = await Detector.load(bundle, { steps: 1, intraOpThreads: 1 });
  try {
    const img = randomRaw(32, 32, 3, 1);
    await det.score(img); // warm-up
    const single = (await det.score(img)).timings.unetMs[0];
    expect(single).toBeGreaterThanOrEqual(200); // otherwise the test proves nothing
    const p99 = await p99DelayMs(async () => {
      for (let i = 0; i < 4; i++) await det.score(img);
    });
    console.log(`one inference ${single.toFixed(0)} ms, event-loop delay p99 ${p99.toFixed(1)} ms while scoring`);
    expect(p99).toBeLessThan(single / 4);
  } finally {
    await det.dispose();
  }
});

test('control: the same model run on the main thread blocks the loop', async () => {
  const session = await ort.InferenceSession.create(readFileSync(join(bundle, 'unet.onnx')), { intraOpNumThreads: 1 });
  const side = TINY.inputSize / TINY.stride;
  const feeds = {
    x: new ort.Tensor('float32', new Float32Array(TINY.channels * side * side), [1, TINY.channels, side, side]),
    t: new ort.Tensor('int64', new BigInt64Array(1), [1]),
  };
  await session.run(feeds);
  const p99 = await p99DelayMs(async () => {
    for (let i = 0; i < 3; i++) {
      await session.run(feeds);
      await new Promise((r) => setTimeout(r, 10)); // let the histogram sample between runs
    }
  });
  await session.release();
  console.log(`main-thread ORT: event-loop delay p99 ${p99.toFixed(1)} ms`);
  expect(p99).toBeGreaterThan(150);
});
