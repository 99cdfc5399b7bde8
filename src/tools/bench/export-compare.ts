/**
 * The exported one-graph model (`invad export`) against Detector, on the CPU, in one process:
 *
 *   npx tsc -p . && node dist/src/tools/bench/export-compare.js [--quick] [--steps S] [--threads T] [--bundle DIR] [--json out.json]
 *
 * Per bundle and batch size n (1 and 8), the two paths score the same n images, interleaved (one
 * call of each per repetition, alternating which goes first) after a warm-up:
 * - Detector.scoreBatch on raw RGB pixels already at the input size (sharp's raw intake,
 *   normalization, the engine worker, backbone, S UNet calls, kernels, resizing the map to the
 *   image's size);
 * - the exported graph, run with onnxruntime-node on the same pixels as uint8 [n, H, W, 3].
 * Both use the CPU provider with ONNX Runtime's default intra-op threads, or T each (--threads). The bundles are the
 * synthetic presets of engine-compare.ts (the paper's feature shape with a cheap UNet, where
 * overheads show, and with a MatMul-heavy one), or the bundle given with --bundle.
 * Prints medians and p90s per call, images/s, the process's CPU time per call (all its threads:
 * less sensitive than wall time to other processes on a shared machine) and the ratio of the
 * wall-time medians; asserts nothing.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { Detector } from '../../runtime/detector';
import { loadBundle } from '../../runtime/bundle/load';
import type { RawImage } from '../../runtime/preprocess';
import { buildExport } from '../../deploy/export';
import { parityImages, runExported } from '../../deploy/export/parity';
import { writeBundle } from '../../fit/write-bundle';
import { PRESETS, presetContents } from './engine-compare';
import { machineInfo, machineLine } from './machine';
import { type Summary, summarize } from './stats';

interface Row {
  bundle: string;
  steps: number;
  batch: number;
  /** wall-clock ms per call */
  detectorMs: Summary;
  exportedMs: Summary;
  /** CPU ms per call, all of this process's threads: less sensitive to other processes on a shared machine */
  detectorCpuMs: Summary;
  exportedCpuMs: Summary;
  /** Detector median / exported median; > 1: the exported graph is faster */
  ratio: number;
}

function option(argv: readonly string[], name: string): string | undefined {
  const at = argv.indexOf(name);
  return at >= 0 ? argv[at + 1] : undefined;
}

function stack(images: readonly RawImage[]): Uint8Array {
  const out = new Uint8Array(images.reduce((n, img) => n + img.data.length, 0));
  images.forEach((img, i) => out.set(img.data, i * img.data.length));
  return out;
}

/** Runs the variants interleaved (rotating order); returns wall-clock and process CPU milliseconds per call. */
async function interleave(variants: Array<() => Promise<unknown>>, warmup: number, reps: number): Promise<Array<[Summary, Summary]>> {
  const wall = variants.map(() => [] as number[]);
  const cpu = variants.map(() => [] as number[]);
  for (let rep = 0; rep < warmup + reps; rep++) {
    for (let k = 0; k < variants.length; k++) {
      const i = (rep + k) % variants.length;
      const [t0, c0] = [performance.now(), process.cpuUsage()];
      await variants[i]();
      const c = process.cpuUsage(c0);
      if (rep >= warmup) {
        wall[i].push(performance.now() - t0);
        cpu[i].push((c.user + c.system) / 1000);
      }
    }
  }
  return variants.map((_, i) => [summarize(wall[i]), summarize(cpu[i])]);
}

async function benchBundle(name: string, dir: string, steps: number, threads: number, reps: number, warmup: number): Promise<Row[]> {
  const m = (await loadBundle(dir)).manifest;
  const built = await buildExport(dir, { steps, scoreDefinition: 'combined' });
  const session = await ort.InferenceSession.create(built.bytes, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    ...(threads > 0 ? { intraOpNumThreads: threads } : {}),
  });
  const detector = await Detector.load(dir, { steps, scoreDefinition: 'combined', maxBatchSize: 8, intraOpThreads: threads });
  const rows: Row[] = [];
  try {
    for (const n of [1, 8]) {
      const images = parityImages(m.input, n, 100 + n);
      const pixels = stack(images);
      const [[det, detCpu], [exp, expCpu]] = await interleave(
        [() => detector.scoreBatch(images, { batchSize: n }), () => runExported(session, pixels, n, m.input)],
        warmup,
        reps,
      );
      const row = {
        bundle: name,
        steps,
        batch: n,
        detectorMs: det,
        exportedMs: exp,
        detectorCpuMs: detCpu,
        exportedCpuMs: expCpu,
        ratio: det.median / exp.median,
      };
      rows.push(row);
      const ips = (s: Summary) => ((1000 * n) / s.median).toFixed(1).padStart(7);
      const ms = (x: Summary) => x.median.toFixed(2).padStart(8);
      console.log(
        `  ${name.padEnd(20)} S=${steps} n=${String(n).padEnd(2)}  Detector ${ms(det)} ms (p90 ${det.p90.toFixed(2)}, ${ips(det)} img/s, CPU ${ms(detCpu)} ms)` +
          `   exported ${ms(exp)} ms (p90 ${exp.p90.toFixed(2)}, ${ips(exp)} img/s, CPU ${ms(expCpu)} ms)   Detector/exported ${row.ratio.toFixed(2)}x`,
      );
    }
  } finally {
    await Promise.all([detector.dispose(), session.release()]);
  }
  return rows;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const quick = argv.includes('--quick');
  const steps = Number(option(argv, '--steps') ?? 3);
  const threads = Number(option(argv, '--threads') ?? 0);
  const reps = Number(process.env.BENCH_REPS ?? (quick ? 10 : 30));
  const warmup = quick ? 2 : 5;
  const info = machineInfo();
  console.log('invad export benchmark (CPU): the exported one-graph model (onnxruntime-node) vs Detector');
  console.log(`  machine   ${machineLine(info)}`);
  console.log(`  load      ${info.loadAverage.join(' / ')} (1/5/15 min; a shared machine's other work is in these numbers)`);
  console.log(
    `  settings  S = ${steps}, combined score, CPU provider, ${threads > 0 ? `${threads} intra-op thread(s) per session` : 'ORT default intra-op threads'} (Detector: its default engine; ${os.availableParallelism()} cores), ${reps} interleaved reps after ${warmup} warm-up`,
  );
  const rows: Row[] = [];
  const tmp = mkdtempSync(join(os.tmpdir(), 'invad-bench-export-'));
  try {
    const given = option(argv, '--bundle');
    if (given) {
      rows.push(...(await benchBundle(given, given, steps, threads, reps, warmup)));
    } else {
      for (const p of PRESETS.filter((q) => q.name !== 'tiny')) {
        console.log(`  preset    ${p.name}: ${p.description}`);
        const dir = join(tmp, p.name);
        await writeBundle(dir, presetContents(p));
        rows.push(...(await benchBundle(p.name, dir, steps, threads, reps, warmup)));
      }
    }
    const jsonOut = option(argv, '--json');
    if (jsonOut) {
      writeFileSync(jsonOut, JSON.stringify({ machine: info, steps, threads, reps, warmup, rows }, null, 2));
      console.log(`wrote ${jsonOut}`);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
