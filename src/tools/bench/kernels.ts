/**
 * Kernel benchmark: `npm run bench:kernels`.
 *
 * At the feature shape 8x272x16x16 it times the last inversion step fused with
 * the channel-norm reduction (native sync, native async on the pool), the
 * unfused native two-pass version and a plain TypeScript loop, then the DDIM
 * step alone. Variants run interleaved (one call of each per repetition, in a
 * rotating order) after a warm-up, so drift in clock speed or cache state hits
 * all of them alike. Inputs are reset from a copy before every call, outside
 * the timed region. Prints medians and p90s; asserts nothing.
 */
import * as os from 'os';

import { addonSource, loadAddonWithDiagnostics, type TensorShape } from '../../binding';
import { summarize, type Summary } from './stats';

const SHAPE: TensorShape = { n: 8, c: 272, h: 16, w: 16 };
const WARMUP = Number(process.env.BENCH_WARMUP ?? 30);
const REPS = Number(process.env.BENCH_REPS ?? 300);
const A = 0.9128709;
const B = -0.4082483;

const addon = loadAddonWithDiagnostics();

function randomArray(length: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 4294967296) * 4 - 2;
  }
  return out;
}

/** Plain TypeScript: the same step + reduction, same loop order as the native kernel. */
function tsLastStepReduce(x: Float32Array, eps: Float32Array, a: number, b: number, s: TensorShape): Float64Array {
  const hw = s.h * s.w;
  const chw = s.c * hw;
  const l2 = new Float32Array(s.n * hw);
  const stats = new Float64Array(s.n * 3);
  const acc = new Float64Array(hw);
  for (let n = 0; n < s.n; n++) {
    acc.fill(0);
    for (let c = 0; c < s.c; c++) {
      const base = n * chw + c * hw;
      for (let p = 0; p < hw; p++) {
        const v = Math.fround(a * x[base + p] + b * eps[base + p]);
        x[base + p] = v;
        acc[p] += v * v;
      }
    }
    let mn = Infinity;
    let mx = -Infinity;
    let sum = 0;
    for (let p = 0; p < hw; p++) {
      const r = Math.sqrt(acc[p]);
      l2[n * hw + p] = r;
      if (r < mn) mn = r;
      if (r > mx) mx = r;
      sum += acc[p];
    }
    stats[n * 3] = mn;
    stats[n * 3 + 1] = mx;
    stats[n * 3 + 2] = sum;
  }
  return stats;
}

function tsStep(x: Float32Array, eps: Float32Array, a: number, b: number): void {
  for (let i = 0; i < x.length; i++) x[i] = a * x[i] + b * eps[i];
}

interface Variant {
  name: string;
  run: (x: Float32Array, eps: Float32Array) => unknown;
}

/** Runs every variant once per repetition, rotating the order; returns microseconds per variant. */
async function measure(variants: Variant[], x0: Float32Array, eps: Float32Array): Promise<Map<string, Summary>> {
  const work = variants.map(() => new Float32Array(x0.length));
  const samples = variants.map(() => [] as number[]);
  for (let rep = 0; rep < WARMUP + REPS; rep++) {
    for (let k = 0; k < variants.length; k++) {
      const i = (rep + k) % variants.length;
      work[i].set(x0);
      const t0 = process.hrtime.bigint();
      const r = variants[i].run(work[i], eps);
      if (r instanceof Promise) await r;
      const t1 = process.hrtime.bigint();
      if (rep >= WARMUP) samples[i].push(Number(t1 - t0) / 1e3);
    }
  }
  return new Map(variants.map((v, i) => [v.name, summarize(samples[i])]));
}

function printTable(title: string, stats: Map<string, Summary>): void {
  console.log(`\n${title}`);
  console.log(`  ${'variant'.padEnd(34)} ${'median us'.padStart(11)} ${'p90 us'.padStart(11)} ${'min us'.padStart(11)}`);
  for (const [name, s] of stats) {
    console.log(`  ${name.padEnd(34)} ${s.median.toFixed(1).padStart(11)} ${s.p90.toFixed(1).padStart(11)} ${s.min.toFixed(1).padStart(11)}`);
  }
}

function ratio(num: Summary | undefined, den: Summary | undefined): number {
  return num && den ? num.median / den.median : NaN;
}

async function main(): Promise<void> {
  const cpus = os.cpus();
  const len = SHAPE.n * SHAPE.c * SHAPE.h * SHAPE.w;
  console.log('invad kernel benchmark');
  console.log(`  cpu:     ${cpus[0]?.model ?? 'unknown'} (${cpus.length} logical cores)`);
  console.log(`  os:      ${os.type()} ${os.release()} ${os.arch()}`);
  console.log(`  node:    ${process.version}`);
  console.log(`  addon:   ${JSON.stringify(addon.buildInfo())}`);
  console.log(`  source:  ${JSON.stringify(addonSource())}`);
  console.log(`  shape:   ${SHAPE.n}x${SHAPE.c}x${SHAPE.h}x${SHAPE.w} (${len} floats, ${((len * 4) / 2 ** 20).toFixed(2)} MiB per tensor)`);
  console.log(`  reps:    ${REPS} interleaved after ${WARMUP} warm-up (BENCH_REPS / BENCH_WARMUP to change)`);

  const x0 = randomArray(len, 1);
  const eps = randomArray(len, 2);

  const reduce = await measure(
    [
      { name: 'fused native (sync)', run: (x, e) => addon.ddimLastStepReduce(x, e, A, B, SHAPE) },
      { name: 'fused native (async, pool)', run: (x, e) => addon.ddimLastStepReduceAsync(x, e, A, B, SHAPE) },
      { name: 'unfused native (sync)', run: (x, e) => addon.ddimLastStepReduceUnfused(x, e, A, B, SHAPE) },
      { name: 'TypeScript loop', run: (x, e) => tsLastStepReduce(x, e, A, B, SHAPE) },
    ],
    x0,
    eps,
  );
  printTable('last step + channel-norm reduction', reduce);
  const fused = reduce.get('fused native (sync)');
  const tsOverFused = ratio(reduce.get('TypeScript loop'), fused);
  const unfusedOverFused = ratio(reduce.get('unfused native (sync)'), fused);
  const syncOverAsync = ratio(fused, reduce.get('fused native (async, pool)'));
  console.log(`  TS / fused:          ${tsOverFused.toFixed(2)}x  (target >= 5x: ${tsOverFused >= 5 ? 'met' : 'NOT met'})`);
  console.log(`  unfused / fused:     ${unfusedOverFused.toFixed(2)}x  (target > 1x: ${unfusedOverFused > 1 ? 'met' : 'NOT met'})`);
  console.log(`  fused sync / async:  ${syncOverAsync.toFixed(2)}x  (pool of ${addon.buildInfo().threads} threads)`);

  const step = await measure(
    [
      { name: 'ddimStep native (sync)', run: (x, e) => addon.ddimStep(x, e, A, B) },
      { name: 'ddimStep native (async, pool)', run: (x, e) => addon.ddimStepAsync(x, e, A, B) },
      { name: 'ddimStep TypeScript loop', run: (x, e) => tsStep(x, e, A, B) },
    ],
    x0,
    eps,
  );
  printTable('DDIM step alone', step);
  const stepRatio = ratio(step.get('ddimStep TypeScript loop'), step.get('ddimStep native (sync)'));
  console.log(`  TS / native:         ${stepRatio.toFixed(2)}x`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
