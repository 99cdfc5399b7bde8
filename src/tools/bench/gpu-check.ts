/**
 * The GPU check behind scripts/gpu-check.sh (run that: it unpacks what
 * scripts/gpu-pack.sh packed, or builds what is missing in a checkout). On a
 * GPU machine:
 *
 *   1. the CUDA kernels against the CPU kernels (cudaKernelCheck: needs a GPU,
 *      not ONNX Runtime's CUDA provider), with CUDA-event kernel times;
 *   2. the addon's device self-test (deviceSelfTest: the device-resident path
 *      with stand-in CUDA "models" instead of ORT sessions, against the CPU path);
 *   3. a bundle: a paper-size UNet (the "paper" preset, random weights) exported
 *      with PyTorch when python3 has torch, else a synthetic ONNX of the same
 *      shapes (272x16x16 features); a synthetic conv backbone 256x256 -> 16x16;
 *   4. the native pipeline on each provider that loads (cuda, tensorrt; cuda
 *      with CUDA graphs), its sessions logging at WARNING (so ORT's notes on
 *      nodes placed on the CPU show), against the native CPU pipeline: max |diff|
 *      of the maps (l2) and of the scores (spatial range, NLL);
 *   5. latency at batch 1, 8, 64 for S = 2 and 3 (median, p90, and the stage
 *      times from CUDA events), and throughput (images/s);
 *   6. writes everything to JSON ($OUT/gpu-check.json, or --out), saved after
 *      every part. A part that could not run has `skipped` (the reason), and
 *      `skipped` at the top lists them all.
 *
 * --quick keeps to a time budget (--budget-s, default 300 s with --quick): parts
 * not started by then are skipped, saying so.
 *
 * --cpu-only runs the same on this machine's CPU: the native C API path against
 * the onnxruntime-node path (parity and timings), batches 1 and 8.
 *
 *   node dist/src/tools/bench/gpu-check.js [--cpu-only] [--quick] [--budget-s N] [--out file] [--bundle dir] [--paper]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import { join, resolve } from 'node:path';
import * as ort from 'onnxruntime-node';

import { packageRoot } from '../../util/package-info';
import { loadAddonWithDiagnostics, type DeviceResidentPipeline, type NativeProvider, type NativeRunResult } from '../../binding';
import { loadBundle, type LoadedBundle } from '../../runtime/bundle/load';
import { writeBundle } from '../../fit/write-bundle';
import { nativePipelineOptions, ortLibraryPath } from '../../runtime/engine/native-engine';
import { runInversion } from '../../runtime/engine/ort-node-inversion';
import { convBackbone, slowUnet } from '../../fit/onnx/synthetic';
import { inversionSteps, type InversionStep } from '../../runtime/schedule';
import { interleave, machine, makeBundle as makeBenchBundle, PRESETS, randomBatch } from './engine-compare';

const addon = loadAddonWithDiagnostics();
const argv = process.argv.slice(2);
const flag = (name: string) => argv.includes(name);
const value = (name: string) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const CPU_ONLY = flag('--cpu-only');
const QUICK = flag('--quick');
const STARTED = performance.now();
/** Seconds after which no new part starts (parts then record why they were skipped). */
const BUDGET_S = Number(value('--budget-s') ?? (QUICK ? 300 : 3600));
const OUT_FILE = resolve(value('--out') ?? join(process.env.OUT ?? '.', 'gpu-check.json'));
const PAPER = { input: 256, stride: 16, channels: 272 };
const HALF_LOG_2PI = 0.5 * Math.log(2 * Math.PI);

const report: Record<string, unknown> = { startedAt: new Date().toISOString(), mode: CPU_ONLY ? 'cpu-only' : 'gpu', quick: QUICK, budgetSeconds: BUDGET_S };
/** part -> why it did not run (mirrored at report.skipped) */
const skipped: Record<string, string> = {};
report.skipped = skipped;
const log = (msg: string) => console.log(`[gpu-check] ${msg}`);

/** Records that `part` could not run, and returns the entry to store in its place. */
function skip(part: string, why: string): { skipped: string } {
  skipped[part] = why;
  log(`${part}: skipped (${why})`);
  return { skipped: why };
}

/** Why a part must not start now (the time budget is spent), or null. */
function overBudget(): string | null {
  const s = (performance.now() - STARTED) / 1000;
  return s > BUDGET_S ? `the time budget of ${BUDGET_S} s was spent (${s.toFixed(0)} s elapsed)` : null;
}

function save(): void {
  report.finishedAt = new Date().toISOString();
  writeFileSync(OUT_FILE, JSON.stringify(report, null, 2));
}

function nvidiaSmi(): string | null {
  try {
    return execFileSync('nvidia-smi', ['--query-gpu=name,driver_version,memory.total,compute_cap', '--format=csv,noheader'], {
      encoding: 'utf8',
      timeout: 20_000,
    }).trim();
  } catch {
    return null;
  }
}

/** Exports the paper-preset UNet with random weights, or returns why it could not. */
function exportPaperUnet(out: string): { ok: true; how: string } | { ok: false; why: string } {
  const root = packageRoot();
  const script = `
import sys, torch
sys.path.insert(0, ${JSON.stringify(root)})
from train.unet import UNet, UNetConfig
from train.presets import PRESETS
from train.trainer import export_onnx
torch.manual_seed(0)
cfg = UNetConfig(in_channels=${PAPER.channels}, **PRESETS["paper"]["model"])
model = UNet(cfg).eval()
# The output conv starts at zero in training; random weights make eps non-trivial.
torch.nn.init.normal_(model.out[-1].weight, std=0.02)
export_onnx(model, (${PAPER.channels}, ${PAPER.input / PAPER.stride}, ${PAPER.input / PAPER.stride}), ${JSON.stringify(out)})
print(sum(p.numel() for p in model.parameters()))
`;
  for (const py of ['python3', '/usr/bin/python3']) {
    const probe = spawnSync(py, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
    if (probe.status !== 0) continue;
    const r = spawnSync(py, ['-c', script], { encoding: 'utf8', timeout: QUICK ? 240_000 : 600_000 });
    if (r.status === 0) return { ok: true, how: `${py}: torch ${probe.stdout.trim()}, paper preset, ${r.stdout.trim()} parameters, random weights` };
    if (r.error) return { ok: false, why: `${py} has torch but the export did not finish: ${r.error.message}` };
    return { ok: false, why: `${py} has torch but the export failed: ${(r.stderr || r.stdout).slice(-800)}` };
  }
  return { ok: false, why: 'no python3 with torch' };
}

async function makeBundle(dir: string): Promise<LoadedBundle> {
  const side = PAPER.input / PAPER.stride;
  const features = { channels: PAPER.channels, height: side, width: side };
  const unetFile = join(dir, 'paper-unet.onnx');
  const exported = exportPaperUnet(unetFile);
  let unet: { bytes: Uint8Array } | { path: string };
  if (exported.ok) {
    unet = { path: unetFile };
    report.unet = { kind: 'paper-preset UNet', how: exported.how };
  } else {
    // Same shapes; 16 chained 512x512 MatMuls per sample stand in for the UNet's work.
    unet = { bytes: slowUnet({ ...features, k: 0.7, size: 512, repeats: 16 }) };
    report.unet = { kind: 'synthetic (slowUnet: eps = 0.7x plus 16 chained 512x512 MatMuls per sample)', why: exported.why };
    report.paperUnet = skip('paperUnet', exported.why);
  }
  log(`UNet: ${JSON.stringify(report.unet)}`);
  const out = join(dir, 'bundle');
  await writeBundle(
    out,
    {
      input: { width: PAPER.input, height: PAPER.input, resizeKernel: 'linear' },
      features,
      defaultSteps: 3,
      backbone: {
        bytes: convBackbone({ height: PAPER.input, width: PAPER.input, channels: PAPER.channels, stride: PAPER.stride, seed: 7 }),
        name: 'synthetic-conv',
        taps: ['conv'],
      },
      unet,
      training: { synthetic: true, purpose: 'gpu-check' },
    },
    { overwrite: true },
  );
  return loadBundle(out);
}

interface Scores {
  spatialRange: number[];
  nll: number[];
}

function scoresOf(r: { min: Float32Array; max: Float32Array; sumSq: Float64Array }, d: number): Scores {
  return {
    spatialRange: Array.from(r.max, (mx, i) => mx - r.min[i]),
    nll: Array.from(r.sumSq, (s) => 0.5 * s + d * HALF_LOG_2PI),
  };
}

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let w = 0;
  for (let i = 0; i < a.length; i++) w = Math.max(w, Math.abs(a[i] - b[i]));
  return w;
}

function maxRel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let w = 0;
  for (let i = 0; i < a.length; i++) w = Math.max(w, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
  return w;
}

function parity(got: { l2: Float32Array; min: Float32Array; max: Float32Array; sumSq: Float64Array }, want: typeof got, d: number) {
  const g = scoresOf(got, d);
  const w = scoresOf(want, d);
  return {
    mapsMaxAbs: maxAbs(got.l2, want.l2),
    mapsMaxRel: maxRel(got.l2, want.l2),
    spatialRangeMaxAbs: maxAbs(g.spatialRange, w.spatialRange),
    nllMaxRel: maxRel(g.nll, w.nll),
  };
}

interface Candidate {
  name: string;
  providers: NativeProvider[];
  cudaGraph?: boolean;
  tensorrt?: { fp16?: boolean; cacheDir?: string };
}

/** ORT's log level for the GPU sessions: WARNING shows its notes on nodes placed on the CPU. */
const GPU_LOG_LEVEL = 'warning' as const;

function open(b: LoadedBundle, c: Candidate, maxBatch: number): { pipeline?: DeviceResidentPipeline; error?: string } {
  const config = {
    backbonePath: b.backbonePath,
    unetPath: b.unetPath,
    manifest: b.manifest,
    executionProviders: c.providers,
    intraOpThreads: 0,
    maxBatch,
    ...(c.tensorrt ? { tensorrt: c.tensorrt } : {}),
  };
  try {
    const opts = nativePipelineOptions(config, b.unetPath, c.providers);
    const gpu = c.providers.some((p) => p !== 'cpu');
    const options = { ...opts, ...(c.cudaGraph ? { cudaGraph: true } : {}), ...(gpu ? { logLevel: GPU_LOG_LEVEL } : {}) };
    return { pipeline: new addon.DeviceResidentPipeline(options) };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN;
}

async function latency(p: DeviceResidentPipeline, plane: number, batches: number[], reps: number) {
  const rows: Array<Record<string, unknown>> = [];
  for (const S of [2, 3]) {
    const steps = inversionSteps(S);
    for (const n of batches) {
      const batch = randomBatch(n, plane, 7 * n + S);
      const timings: NativeRunResult['timings'][] = [];
      const [stats] = await interleave([async () => timings.push((await p.runAsync(batch, n, steps)).timings)], 2, reps);
      const t = timings.slice(2);
      const stage = {
        uploadMs: median(t.map((x) => x.uploadMs)),
        backboneMs: median(t.map((x) => x.backboneMs)),
        unetMsPerCall: median(t.flatMap((x) => x.unetMs)),
        kernelMs: median(t.map((x) => x.kernelMs)),
        downloadMs: median(t.map((x) => x.downloadMs)),
        clock: t[0]?.clock,
      };
      const row = { steps: S, batch: n, wallMs: stats, imagesPerSecond: (1000 * n) / stats.median, stagesMedian: stage };
      rows.push(row);
      log(
        `  S=${S} n=${String(n).padEnd(2)} median ${stats.median.toFixed(2)} ms (p90 ${stats.p90.toFixed(2)}), ${row.imagesPerSecond.toFixed(1)} images/s; stages ${JSON.stringify(stage)}`,
      );
      save();
    }
  }
  return rows;
}

async function cpuOnly(b: LoadedBundle): Promise<void> {
  const m = b.manifest;
  const plane = 3 * m.input.width * m.input.height;
  const d = m.features.channels * m.features.height * m.features.width;
  const native = open(b, { name: 'native-cpu', providers: ['cpu'] }, 64);
  if (!native.pipeline) throw new Error(`the native CPU pipeline did not open: ${native.error}`);
  const so: ort.InferenceSession.SessionOptions = { executionProviders: ['cpu'], graphOptimizationLevel: 'all' };
  const sessions = { backbone: await ort.InferenceSession.create(b.backbonePath, so), unet: await ort.InferenceSession.create(b.unetPath, so) };
  const reps = QUICK ? 3 : 10;
  const results: Array<Record<string, unknown>> = [];
  try {
    for (const S of [2, 3]) {
      const steps: InversionStep[] = inversionSteps(S, m.schedule);
      for (const n of [1, 8]) {
        const batch = randomBatch(n, plane, 11 * n + S);
        const got = await native.pipeline.runAsync(batch, n, steps);
        const want = (await runInversion(sessions, addon, m, batch, n, steps)).reduced;
        const [nat, node] = await interleave(
          [() => native.pipeline!.runAsync(batch, n, steps), () => runInversion(sessions, addon, m, batch, n, steps)],
          1,
          reps,
        );
        const row = {
          steps: S,
          batch: n,
          parityNativeVsOnnxruntimeNode: parity(got, want, d),
          nativeMs: nat,
          onnxruntimeNodeMs: node,
          ratio: node.median / nat.median,
        };
        results.push(row);
        log(
          `S=${S} n=${n}: parity ${JSON.stringify(row.parityNativeVsOnnxruntimeNode)}; native ${nat.median.toFixed(2)} ms, onnxruntime-node ${node.median.toFixed(2)} ms (${row.ratio.toFixed(2)}x)`,
        );
        report.cpu = results;
        save();
      }
    }
  } finally {
    native.pipeline.release();
    await sessions.backbone.release();
    await sessions.unet.release();
  }
  const worst = Math.max(...results.map((r) => (r.parityNativeVsOnnxruntimeNode as { mapsMaxRel: number }).mapsMaxRel));
  report.cpuParityPass = worst <= 1e-5;
  log(`native CPU vs onnxruntime-node: worst relative map difference ${worst.toExponential(2)} (${worst <= 1e-5 ? 'PASS' : 'FAIL'} at 1e-5)`);
}

async function gpu(b: LoadedBundle, work: string): Promise<void> {
  const m = b.manifest;
  const plane = 3 * m.input.width * m.input.height;
  const d = m.features.channels * m.features.height * m.features.width;
  const probe = addon.ortProbe(ortLibraryPath());
  const loads = new Set(probe.providers.filter((p) => p.ok).map((p) => p.name));
  const candidates: Candidate[] = [
    { name: 'cuda', providers: ['cuda'] },
    { name: 'cuda+graph', providers: ['cuda'], cudaGraph: true },
    { name: 'tensorrt-fp32', providers: ['tensorrt'], tensorrt: { cacheDir: join(work, 'trt-cache') } },
    { name: 'tensorrt-fp16', providers: ['tensorrt'], tensorrt: { fp16: true, cacheDir: join(work, 'trt-cache-fp16') } },
  ];
  const batches = QUICK ? [1, 8] : [1, 8, 64];
  const reps = QUICK ? 5 : 20;
  const cpuRef = open(b, { name: 'native-cpu', providers: ['cpu'] }, 64);
  if (!cpuRef.pipeline) throw new Error(`the native CPU pipeline did not open: ${cpuRef.error}`);
  const gpus: Record<string, unknown> = {};
  report.pipelines = gpus;
  const runnable = candidates.filter((c) => {
    const provider = c.providers[0];
    if (loads.has(provider)) return true;
    gpus[c.name] = skip(
      `pipelines.${c.name}`,
      `the ${provider} provider does not load: ${probe.providers.find((p) => p.name === provider)?.error ?? 'not reported by ortProbe'}`,
    );
    return false;
  });
  save();
  // CPU references for parity (n = 4, S = 2 and 3), computed once, only when some GPU pipeline can use them.
  const refs = new Map<number, { batch: Float32Array; result: NativeRunResult }>();
  if (runnable.length > 0) {
    for (const S of [2, 3]) {
      const batch = randomBatch(4, plane, 1234 + S);
      refs.set(S, { batch, result: await cpuRef.pipeline.runAsync(batch, 4, inversionSteps(S, m.schedule)) });
    }
  }
  for (const c of runnable) {
    const late = overBudget();
    if (late) {
      gpus[c.name] = skip(`pipelines.${c.name}`, late);
      save();
      continue;
    }
    log(`${c.name}: opening (TensorRT may build engines for a while)`);
    const t0 = performance.now();
    const opened = open(b, c, 64);
    if (!opened.pipeline) {
      gpus[c.name] = { error: opened.error };
      log(`${c.name}: failed to open: ${opened.error}`);
      save();
      continue;
    }
    const p = opened.pipeline;
    const entry: Record<string, unknown> = { openMs: performance.now() - t0, providers: p.providers() };
    gpus[c.name] = entry;
    try {
      const par: Record<string, unknown> = {};
      for (const S of [2, 3]) {
        const ref = refs.get(S)!;
        const got = await p.runAsync(ref.batch, 4, inversionSteps(S, m.schedule));
        par[`S${S}`] = parity(got, ref.result, d);
      }
      entry.parityVsCpu = par;
      log(`${c.name}: device-resident ${p.providers().deviceResident}; parity vs CPU ${JSON.stringify(par)}`);
      save();
      entry.latency = await latency(p, plane, batches, reps);
    } catch (err) {
      const message = (err as Error).message;
      entry.error = message;
      log(`${c.name}: ${message}`);
    } finally {
      p.release();
      save();
    }
  }
  const late = overBudget();
  if (late) {
    report.cpuLatency = skip('cpuLatency', late);
  } else {
    // Without a GPU pipeline to compare with, --quick keeps the CPU reference to batch 1.
    const cpuBatches = QUICK && runnable.length === 0 ? [1] : [1, 8];
    log(`CPU reference latency (native CPU pipeline, batch ${cpuBatches.join(' and ')}):`);
    report.cpuLatency = await latency(cpuRef.pipeline, plane, cpuBatches, QUICK ? 2 : 5);
  }
  cpuRef.pipeline.release();
}

/** cudaKernelCheck per shape; one `skipped` entry when CUDA cannot run them at all. */
function kernelCheck(shapes: Array<{ n: number; c: number; h: number; w: number }>): unknown {
  const rows: Array<Record<string, unknown>> = [];
  for (const shape of shapes) {
    const r = addon.cudaKernelCheck(shape, QUICK ? 20 : 200);
    if (!r.available) {
      if (rows.length === 0) return { ...skip('kernels', `cudaKernelCheck: ${r.reason ?? 'CUDA unavailable'}`), shape };
      rows.push({ shape, ...r });
      continue;
    }
    rows.push({ shape, ...r });
    log(`kernels ${JSON.stringify(rows[rows.length - 1])}`);
  }
  return rows;
}

interface SelfTestReport {
  ok: boolean;
  skipped?: string;
  host?: { ok: boolean; error?: string };
  device?: { ok: boolean; error?: string };
}

/** The addon's deviceSelfTest (host part always; device part needs a GPU). */
function selfTest(): unknown {
  const fn = (addon as unknown as { deviceSelfTest?: () => SelfTestReport }).deviceSelfTest;
  if (typeof fn !== 'function') return skip('deviceSelfTest', 'this addon build has no deviceSelfTest()');
  try {
    const r = fn();
    log(`device self-test: ok ${r.ok}; host ${JSON.stringify(r.host)}${r.device ? `; device ${JSON.stringify(r.device)}` : ''}`);
    if (r.skipped) skip('deviceSelfTest.device', r.skipped);
    return r;
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
}

async function main(): Promise<void> {
  mkdirSync(join(OUT_FILE, '..'), { recursive: true });
  report.machine = { ...machine(), nvidiaSmi: nvidiaSmi() };
  log(`machine: ${JSON.stringify(report.machine)}`);
  try {
    report.ortProbe = addon.ortProbe(ortLibraryPath());
  } catch (err) {
    report.ortProbe = { error: (err as Error).message };
  }
  log(`ONNX Runtime: ${JSON.stringify(report.ortProbe)}`);
  if (!CPU_ONLY && !(report.ortProbe as { providers?: Array<{ name: string; ok: boolean }> }).providers?.some((p) => p.name !== 'cpu' && p.ok)) {
    log('no ONNX Runtime GPU provider loads here: the pipelines on the GPU are skipped; the kernels and the self-test still use the GPU');
  }
  save();

  // 1. kernels (no ONNX Runtime involved)
  const shapes = [
    { n: 1, c: PAPER.channels, h: 16, w: 16 },
    { n: 8, c: PAPER.channels, h: 16, w: 16 },
    { n: 64, c: PAPER.channels, h: 16, w: 16 },
  ];
  report.kernels = kernelCheck(shapes);
  save();

  // 2. the device self-test (no ONNX Runtime involved either)
  report.deviceSelfTest = selfTest();
  save();

  const work = mkdtempSync(join(os.tmpdir(), 'invad-gpu-check-'));
  try {
    const bundleDir = value('--bundle');
    let b: LoadedBundle;
    if (bundleDir) {
      b = await loadBundle(resolve(bundleDir));
      report.unet = { kind: 'given bundle', dir: resolve(bundleDir) };
    } else if (CPU_ONLY && !flag('--paper')) {
      // On the CPU the paper-size UNet takes seconds per call; the synthetic one shows the engines.
      b = await makeBenchBundle(
        work,
        PRESETS.find((p) => p.name === 'paper-shape')!,
      );
      report.unet = { kind: 'synthetic linear UNet at the paper feature shape (bench/engine.ts paper-shape); --paper for the paper-size one' };
    } else {
      b = await makeBundle(work);
    }
    report.bundle = { dir: b.dir, input: b.manifest.input, features: b.manifest.features };
    save();
    if (CPU_ONLY) {
      report.pipelines = skip('pipelines', '--cpu-only: the GPU pipelines were not asked for');
      await cpuOnly(b);
    } else {
      await gpu(b, work);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  report.elapsedSeconds = (performance.now() - STARTED) / 1000;
  save();
  const gaps = Object.keys(skipped);
  log(
    `done in ${(report.elapsedSeconds as number).toFixed(0)} s; ${gaps.length ? `skipped: ${gaps.join(', ')} (reasons in the report's "skipped")` : 'nothing skipped'}`,
  );
  log(`wrote ${OUT_FILE}`);
}

main().catch((err: unknown) => {
  report.fatal = (err as Error).stack ?? String(err);
  try {
    save();
  } catch {
    // nothing more to do
  }
  console.error(err);
  process.exitCode = 1;
});
