/**
 * Smoke tests of `invad bench`: tiny bundle, few runs, short durations. They
 * check that every report has its fields and that percentiles are ordered; they
 * assert nothing about speed (the machine running them may be anything).
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { benchCompare, ortProfileByOp } from '../src/tools/bench/compare';
import { syntheticImages } from '../src/tools/bench/images';
import { benchLine } from '../src/tools/bench/line';
import { benchSoak } from '../src/tools/bench/soak';
import { benchStages } from '../src/tools/bench/stages';
import { parseDurationMs, type Summary, summarize } from '../src/tools/bench/stats';
import { quantileSorted } from '../src/util/stats';
import { Detector } from '../src/runtime/detector';
import { packageRoot } from '../src/util/package-info';
import { tempDir, writeTinyBundle } from './helpers/bundles';
import { hasTorch } from './helpers/requirements';

const run = promisify(execFile);
const cli = join(packageRoot(), 'dist', 'src', 'tools', 'cli', 'main.js');

let tmp: ReturnType<typeof tempDir>;
let bundle: string;
let det: Detector;
beforeAll(async () => {
  tmp = tempDir('invad-bench-');
  bundle = await writeTinyBundle(tmp.dir);
  det = await Detector.load(bundle);
});
afterAll(async () => {
  await det.dispose();
  tmp.cleanup();
});

function isSummary(v: unknown): v is Summary {
  return typeof v === 'object' && v !== null && 'median' in v && 'p90' in v && 'p99' in v && 'n' in v;
}

/** Every Summary anywhere in `v` has min <= median <= p90 <= p99 <= max; returns how many were checked. */
function checkSummaries(v: unknown, path = '$'): number {
  if (isSummary(v)) {
    if (v.n === 0) return 1;
    const order = [v.min, v.median, v.p90, v.p99, v.max];
    for (let i = 1; i < order.length; i++) {
      if (!(order[i - 1] <= order[i])) throw new Error(`${path}: percentiles out of order: ${JSON.stringify(v)}`);
    }
    return 1;
  }
  if (Array.isArray(v)) return v.reduce((n: number, x, i) => n + checkSummaries(x, `${path}[${i}]`), 0);
  if (typeof v === 'object' && v !== null) return Object.entries(v).reduce((n, [k, x]) => n + checkSummaries(x, `${path}.${k}`), 0);
  return 0;
}

test('summaries: linear-interpolation percentiles, ordered', () => {
  const s = summarize([5, 1, 4, 2, 3]);
  expect(s).toMatchObject({ n: 5, min: 1, median: 3, max: 5, mean: 3 });
  expect(s.p90).toBeCloseTo(4.6);
  expect(quantileSorted([], 0.5)).toBeNaN();
  expect(summarize([7]).p99).toBe(7);
  expect(checkSummaries(summarize(Array.from({ length: 101 }, (_, i) => (i * 37) % 101)))).toBe(1);
  expect(parseDurationMs('60s')).toBe(60_000);
  expect(parseDurationMs('2m')).toBe(120_000);
  expect(parseDurationMs('250ms')).toBe(250);
  expect(parseDurationMs('1.5')).toBe(1500);
  expect(() => parseDurationMs('soon')).toThrow(/duration/);
});

test('stage benchmark: every stage per input kind, batch and S', async () => {
  const images = await syntheticImages(32, 32, 4);
  expect(images.raw[0].data.length).toBe(32 * 32 * 3);
  expect(images.encoded[0][1]).toBe(0x50); // PNG
  const rows = await benchStages(det, images, { batches: [1, 3], steps: [2, 3], inputs: ['raw', 'encoded'], runs: 3, warmup: 1 });
  expect(rows).toHaveLength(8);
  expect(rows.map((r) => `${r.input}/${r.batch}/${r.steps}`)).toContain('encoded/3/2');
  for (const r of rows) {
    expect(r.images).toBe(3 * r.batch);
    expect(r.modelBatch).toBe(r.batch);
    expect(r.stages.unet).toHaveLength(r.steps);
    for (const k of ['decode', 'preprocess', 'queue', 'other', 'endToEnd', 'call'] as const) expect(r.stages[k].n).toBeGreaterThan(0);
    for (const k of ['backbone', 'unetTotal', 'kernels', 'resize'] as const) {
      expect(r.stages[k].perBatch.n).toBe(3);
      if (r.batch === 1) expect(r.stages[k].perImage.median).toBeCloseTo(r.stages[k].perBatch.median);
      else expect(r.stages[k].perImage.median).toBeLessThanOrEqual(r.stages[k].perBatch.median);
    }
    expect(r.imagesPerSecond).toBeGreaterThan(0);
    expect(r.peakRssMiB).toBeGreaterThan(0);
    expect(r.cpu).toHaveProperty('others');
  }
  expect(checkSummaries(rows)).toBeGreaterThan(8 * 10);
});

test('line scenario: latency, deadline misses, queue depth samples and saturation', async () => {
  const images = await syntheticImages(32, 32, 4);
  const r = await benchLine(det, images, {
    fps: 40,
    fpsMode: 'each',
    durationMs: 600,
    concurrency: 3,
    saturationMs: 300,
    sampleMs: 100,
    maxInFlight: 64,
    warmup: 1,
    input: 'raw',
  });
  expect(r.deadlineMs).toBe(25);
  expect(r.offeredFps).toBe(120);
  // 0, 25, ..., 575 ms: 24 frames per producer
  expect(r.frames.offered).toBe(72);
  expect(r.frames.completed + r.frames.failed + r.frames.dropped).toBe(r.frames.offered);
  expect(typeof r.misses).toBe('number');
  expect(r.missRate).toBeGreaterThanOrEqual(0);
  expect(r.queueDepth.samples.length).toBeGreaterThanOrEqual(3);
  for (const [t, depth] of r.queueDepth.samples) {
    expect(t).toBeGreaterThanOrEqual(0);
    expect(depth).toBeGreaterThanOrEqual(0);
  }
  expect(r.perSecond.length).toBeGreaterThanOrEqual(1);
  expect(r.saturation?.images).toBeGreaterThan(0);
  expect(r.saturation?.imagesPerSecond).toBeGreaterThan(0);
  expect(checkSummaries(r)).toBeGreaterThanOrEqual(5);

  const split = await benchLine(det, images, {
    fps: 40,
    fpsMode: 'split',
    durationMs: 300,
    concurrency: 2,
    saturationMs: 0,
    sampleMs: 50,
    maxInFlight: 64,
    warmup: 0,
    input: 'encoded',
  });
  expect(split.offeredFps).toBe(40);
  expect(split.frames.offered).toBe(12);
  expect(split.saturation).toBeNull();
});

test('soak: RSS every n images, growth, descriptors and handles', async () => {
  const images = await syntheticImages(32, 32, 4);
  const r = await benchSoak(det, images, { count: 300, every: 100, input: 'alternate', warmup: 5, gc: true, limitPct: 5 });
  expect(r.samples.map((s) => s.images)).toEqual([100, 200, 300]);
  expect(r.growth).toMatchObject({ from: 100, to: 300, limitPct: 5 });
  for (const k of ['rssFromMiB', 'rssToMiB', 'rssPct', 'heapPct'] as const) expect(Number.isFinite(r.growth[k])).toBe(true);
  expect(typeof r.growth.pass).toBe('boolean');
  if (process.platform === 'linux') expect(typeof r.growth.fds).toBe('number');
  expect(r.growth.resources).toBeDefined();
  expect(r.start.resources).toBeDefined();
  expect(r.samples[0].rssMiB).toBeGreaterThan(0);
  expect(checkSummaries(r)).toBe(1);
});

test('ORT profile events aggregate by operator', () => {
  const ops = ortProfileByOp([
    { cat: 'Node', name: 'conv1_kernel_time', dur: 3000, args: { op_name: 'Conv' } },
    { cat: 'Node', name: 'conv2_kernel_time', dur: 1000, args: { op_name: 'Conv' } },
    { cat: 'Node', name: 'conv2_fence_before', dur: 1000, args: { op_name: 'Conv' } },
    { cat: 'Node', name: 'add_kernel_time', dur: 500, args: { op_name: 'Add' } },
    { cat: 'Session', name: 'model_run', dur: 9000 },
  ]);
  expect(ops).toEqual([
    { op: 'Conv', calls: 2, selfMs: 4 },
    { op: 'Add', calls: 1, selfMs: 0.5 },
  ]);
});

test('CLI: invad bench writes a JSON report with the machine and the stages', async () => {
  const out = join(tmp.dir, 'bench.json');
  const { stdout } = await run(process.execPath, [
    cli,
    'bench',
    '--model',
    bundle,
    '--batch',
    '1,2',
    '--runs',
    '2',
    '--warmup',
    '1',
    '--inputs',
    'raw',
    '--json',
    out,
    '--quiet',
  ]);
  expect(stdout).toContain('end to end');
  expect(stdout).toContain('images/s');
  const report = JSON.parse(readFileSync(out, 'utf8'));
  expect(report.kind).toBe('stages');
  expect(report.machine).toMatchObject({ cores: expect.any(Number), onnxruntime: expect.any(String), cpuModel: expect.any(String) });
  expect(report.machine.addon.version).toBeDefined();
  expect(report.detector.providers.unet).toBe('cpu');
  expect(report.result).toHaveLength(2);
  expect(checkSummaries(report.result)).toBeGreaterThan(0);

  const bad = await run(process.execPath, [cli, 'bench', '--model', bundle, '--soak', '10', '--scenario', 'line']).catch(
    (e) => e as { code: number; stderr: string },
  );
  expect((bad as { code: number }).code).not.toBe(0);
  expect((bad as { stderr: string }).stderr).toContain('choose one of');
});

test('CLI: line scenario and soak from the command line', async () => {
  const line = join(tmp.dir, 'line.json');
  await run(process.execPath, [
    cli,
    'bench',
    '-m',
    bundle,
    '--scenario',
    'line',
    '--fps',
    '20',
    '--duration',
    '500ms',
    '--concurrency',
    '2',
    '--saturation',
    '200ms',
    '--json',
    line,
    '-q',
  ]);
  const l = JSON.parse(readFileSync(line, 'utf8'));
  expect(l.kind).toBe('line');
  expect(l.result).toHaveProperty('misses');
  expect(l.result.queueDepth.samples.length).toBeGreaterThan(0);
  const soak = join(tmp.dir, 'soak.json');
  await run(process.execPath, [cli, 'bench', '-m', bundle, '--soak', '200', '--rss-every', '100', '--json', soak, '-q']).catch((e) => {
    // exit code 1 only means the (tiny, noisy) growth verdict failed; the report is still written
    if ((e as { code: number }).code !== 1) throw e;
  });
  const s = JSON.parse(readFileSync(soak, 'utf8'));
  expect(s.result.samples.map((x: { images: number }) => x.images)).toEqual([100, 200]);
  expect(s.result.growth).toHaveProperty('rssPct');
});

test('compare with PyTorch: tiny preset, 2 reps (needs PyTorch)', async () => {
  if (!hasTorch()) return;
  const r = await benchCompare({
    preset: 'tiny',
    batches: [1, 2],
    steps: [2],
    reps: 2,
    warmup: 1,
    threads: 1,
    providers: ['cpu'],
    seed: 0,
    gapMs: 0,
    e2e: true,
    profile: false,
  });
  expect(r.featureShape).toEqual({ channels: 6, height: 4, width: 4 });
  expect(r.rows.map((x) => [x.batch, x.steps])).toEqual([
    [1, 2],
    [2, 2],
  ]);
  expect(r.engines).toContain('onnxruntime-node');
  for (const row of r.rows) {
    expect(row.references.map((x) => x.variant)).toEqual(['default', 'onednn']);
    expect(row.engines.map((e) => e.engine)).toEqual(r.engines);
    for (const e of row.engines) {
      expect(e.time.n).toBe(2);
      // same weights, same features: the stacks agree
      expect(e.parityRelDiff).toBeLessThan(1e-3);
    }
    for (const ref of row.references) expect(ref.torch.n).toBe(2);
    expect(row.ratios).toHaveLength(r.engines.length * 2);
    for (const q of row.ratios) expect(q.speedup).toBeGreaterThan(0);
    expect(r.engines).toContain(row.targetEngine);
  }
  expect(r.rows[0].target).toBe(2);
  expect(r.rows[1].target).toBeNull();
  expect(r.endToEnd?.map((x) => x.engine)).toEqual(r.engines);
  for (const e2e of r.endToEnd ?? []) expect(e2e.rows).toHaveLength(2);
  expect(r.torch).toHaveProperty('torch');
  expect(checkSummaries(r)).toBeGreaterThan(4);
}, 300_000);
