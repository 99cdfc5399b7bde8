/**
 * Why the engines' UNet calls differ (issue 16, item 1): ONNX Runtime's own profiler on
 * both invad engines, on the same graph, in one run.
 *
 *   npx tsc -p tsconfig.json && node dist/src/tools/bench/engine-profile.js [--preset small] [--batch 1,8] [--steps 2] [--reps 8] [--threads N] [--spinning none|unet|all] [--keep]
 *
 * - The preset's UNet with random weights, exported to ONNX by train/bench_torch.py (the
 *   trainer's exporter, as `invad bench --compare torch` does), behind the stand-in backbone
 *   that outputs fixed features (features-backbone.ts), so both engines run their production
 *   paths on exactly the same inputs.
 * - Both engines are opened as a Detector opens them: intra-op threads `--threads` (default 0,
 *   ORT's choice, the Detector's default) and spinning DEFAULT_THREAD_SPINNING.
 * - Timing: unprofiled engines, `--reps` inversions per (batch, S), the engines alternating
 *   call by call (who goes first rotates); medians of the per-call UNet times each engine
 *   reports.
 * - Profile: a second pair of engines with ORT's profiler on (onnxruntime-node's
 *   enableProfiling, the native engine's profileFilePrefix), one warm-up then `--profile-reps`
 *   inversions per batch, alternating. From the UNet sessions' chrome traces: the Session-level
 *   model_run time per call, the sum of its node kernel times, the rest (model_run minus
 *   kernels: scheduling, gaps between nodes, input/output handling), and the self time per
 *   operator type (ortProfileByOp, each node's median over the calls), side by side; and how
 *   often a node that used the intra-op pool had every pool thread on the caller's core (ORT's
 *   thread_scheduling_stats: the two then time-share one core).
 * - The load average is printed at the start and the end: on a shared machine compare the two
 *   engines only within this one run.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import * as ort from 'onnxruntime-node';
import { type DeviceResidentPipeline, loadAddon } from '../../binding';
import { buildManifest, type BundleContents } from '../../fit/write-bundle';
import { convBackbone } from '../../fit/onnx/synthetic';
import { findPython, UNET_PRESETS, type UnetPreset } from '../../fit/trainer/runner';
import { openPipeline, ortLibraryPath } from '../../runtime/engine/native-engine';
import { runInversion, type PipelineSessions } from '../../runtime/engine/ort-node-inversion';
import { DEFAULT_THREAD_SPINNING, sessionSpinning, type ThreadSpinning } from '../../runtime/engine/protocol';
import { inversionSteps } from '../../runtime/schedule';
import { readNpy } from '../../util/npy';
import { packageRoot } from '../../util/package-info';
import { ortProfileByOp, type ProfileEvent } from './compare';
import { constantFeaturesBackbone, STAND_IN_INPUT, STAND_IN_OUTPUT } from './features-backbone';
import { median } from './stats';

type Engine = 'native' | 'onnxruntime-node';
const ENGINES: readonly Engine[] = ['native', 'onnxruntime-node'];

export interface EngineProfileOptions {
  preset: UnetPreset;
  batches: number[];
  steps: number;
  reps: number;
  profileReps: number;
  threads: number;
  spinning: ThreadSpinning;
  seed: number;
  python?: string;
  /** keep the work folder (unet.onnx, the profiles) instead of removing it */
  keep?: boolean;
}

interface Ready {
  onnx: string;
  features: string;
  shape: [number, number, number];
  params: number;
}

/** Builds the preset's UNet (random weights) and exports it with train/bench_torch.py; returns its ready line. */
async function exportUnet(o: EngineProfileOptions, work: string): Promise<Ready> {
  const python = findPython(o.python);
  const args = [
    '-m',
    'train.bench_torch',
    '--preset',
    o.preset,
    '--out',
    work,
    '--threads',
    '1',
    '--seed',
    String(o.seed),
    '--max-batch',
    String(Math.max(...o.batches)),
  ];
  const child = spawn(python, args, { cwd: packageRoot(), stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, PYTHONUNBUFFERED: '1' } });
  const stderr: string[] = [];
  createInterface({ input: child.stderr }).on('line', (l) => stderr.push(l) > 20 && stderr.shift());
  try {
    return await new Promise<Ready>((resolve, reject) => {
      createInterface({ input: child.stdout }).on('line', (line) => {
        try {
          const msg = JSON.parse(line) as Ready & { event: string };
          if (msg.event === 'ready') resolve(msg);
        } catch {
          /* not JSON */
        }
      });
      child.once('exit', (code) => reject(new Error(`train.bench_torch exited (${code}) before exporting the UNet:\n${stderr.join('\n')}`)));
      child.once('error', reject);
    });
  } finally {
    child.stdin.end(JSON.stringify({ cmd: 'quit' }) + '\n');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await new Promise<void>((r) => (child.exitCode !== null ? r() : child.once('exit', () => r())));
    clearTimeout(timer);
  }
}

type Run = (n: number) => Promise<number[]>;

interface Opened {
  runs: Record<Engine, Run>;
  /** ends profiling and returns the UNet session's profile file (profiled engines only) */
  endProfiling: Record<Engine, () => Promise<string>>;
  close: () => Promise<void>;
}

/** Both engines on the stand-in backbone and the UNet, as the Detector opens them; profiled when `profileDir` is given. */
async function openEngines(o: EngineProfileOptions, ready: Ready, work: string, profileDir?: string): Promise<Opened> {
  const [channels, height, width] = ready.shape;
  const maxBatch = Math.max(...o.batches);
  const features = (await readNpy(ready.features)).data as Float32Array;
  const standIn = join(work, 'features-backbone.onnx');
  const standInInput = { height: 4, width: 4 };
  writeFileSync(standIn, constantFeaturesBackbone(features, { batch: maxBatch, channels, height, width }, standInInput));
  const contents: BundleContents = {
    input: { width: standInInput.width, height: standInInput.height },
    features: { channels, height, width },
    defaultSteps: o.steps,
    backbone: {
      bytes: convBackbone({ height: height * 16, width: width * 16, channels, stride: 16, seed: o.seed + 1 }),
      name: 'stand-in',
      taps: ['conv'],
      inputName: STAND_IN_INPUT,
      outputName: STAND_IN_OUTPUT,
    },
    unet: { path: ready.onnx },
    training: { synthetic: true, benchmark: `${o.preset} preset, random weights` },
  };
  const manifest = buildManifest(contents, { backbone: '0'.repeat(64), unet: '0'.repeat(64) });
  const sched = inversionSteps(o.steps, manifest.schedule);
  const image = (n: number) => new Float32Array(n * 3 * standInInput.height * standInInput.width);
  const addon = loadAddon();
  const spin = sessionSpinning(o.spinning);

  const ortDir = profileDir ? join(profileDir, 'onnxruntime-node') : undefined;
  const open = (path: string, spinning: boolean, name: string) =>
    ort.InferenceSession.create(path, {
      // the options of sessions.ts openSession() (CPU provider), plus the profiler when asked
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      logSeverityLevel: 2,
      ...(o.threads > 0 ? { intraOpNumThreads: o.threads } : {}),
      extra: { session: { intra_op: { allow_spinning: spinning ? '1' : '0' } } },
      ...(ortDir ? { enableProfiling: true, profileFilePrefix: join(ortDir, name) } : {}),
    });
  if (ortDir) mkdirSync(ortDir, { recursive: true });
  const sessions: PipelineSessions = { backbone: await open(standIn, spin.backbone, 'backbone'), unet: await open(ready.onnx, spin.unet, 'unet') };
  let pipeline: DeviceResidentPipeline | undefined;
  try {
    pipeline = openPipeline(addon, {
      ortLibraryPath: ortLibraryPath(),
      backbonePath: standIn,
      unetPath: ready.onnx,
      backbone: { inputName: STAND_IN_INPUT, outputName: STAND_IN_OUTPUT },
      unet: { xName: manifest.models.unet.xName, tName: manifest.models.unet.tName, outputName: manifest.models.unet.outputName },
      input: standInInput,
      features: { channels, height, width },
      providers: ['cpu'],
      cpuThreads: o.threads,
      cpuSpinning: o.spinning,
      maxBatch,
      ...(profileDir ? { profileFilePrefix: join(profileDir, 'native') } : {}),
    });
  } catch (err) {
    await sessions.backbone.release();
    await sessions.unet.release();
    throw err;
  }
  const p = pipeline;
  const nativeSteps = sched.map((s) => ({ t: s.t, a: s.a, b: s.b }));
  return {
    runs: {
      native: async (n) => (await p.runAsync(image(n), n, nativeSteps)).timings.unetMs,
      'onnxruntime-node': async (n) => (await runInversion(sessions, addon, manifest, image(n), n, sched)).unetMs,
    },
    endProfiling: {
      native: async () => (await p.endProfiling()).unet,
      'onnxruntime-node': () => {
        sessions.unet.endProfiling();
        sessions.backbone.endProfiling();
        const file = readdirSync(ortDir!).find((f) => f.startsWith('unet') && f.endsWith('.json'));
        if (!file) throw new Error(`onnxruntime-node wrote no UNet profile into ${ortDir}`);
        return Promise.resolve(join(ortDir!, file));
      },
    },
    close: async () => {
      p.release();
      await sessions.backbone.release();
      await sessions.unet.release();
    },
  };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** `reps` rounds of one call per engine, who goes first rotating; returns the per-call UNet times by engine. */
async function alternate(runs: Record<Engine, Run>, n: number, reps: number): Promise<Record<Engine, number[][]>> {
  const got: Record<Engine, number[][]> = { native: [], 'onnxruntime-node': [] };
  for (let r = 0; r < reps; r++) {
    for (let k = 0; k < ENGINES.length; k++) {
      const e = ENGINES[(k + r) % ENGINES.length];
      got[e].push(await runs[e](n));
      await sleep(20);
    }
  }
  return got;
}

/** One UNet call in a profile: its model_run time, the sum of its node kernel times, and its node events. */
interface ProfiledCall {
  runMs: number;
  kernelMs: number;
  nodes: ProfileEvent[];
  /** nodes that used the intra-op pool, and those whose pool threads all ran on the caller's core */
  pooled: number;
  sameCore: number;
}

/** ORT's per-node thread_scheduling_stats: the caller ("main_thread") and the pool threads, with the core each ran on. */
interface SchedulingStats {
  main_thread?: { core?: number };
  sub_threads?: Record<string, { num_run?: number; core?: number }>;
}

function profiledCalls(file: string): ProfiledCall[] {
  const events = JSON.parse(readFileSync(file, 'utf8')) as ProfileEvent[];
  const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run').sort((a, b) => (a.ts ?? 0) - (b.ts ?? 0));
  const nodes = events.filter((e) => e.cat === 'Node' && e.name?.endsWith('_kernel_time'));
  return runs.map((r) => {
    const from = r.ts ?? 0;
    const to = from + (r.dur ?? 0);
    const inside = nodes.filter((e) => (e.ts ?? 0) >= from && (e.ts ?? 0) <= to);
    let pooled = 0;
    let sameCore = 0;
    for (const e of inside) {
      const st = (e.args as { thread_scheduling_stats?: SchedulingStats } | undefined)?.thread_scheduling_stats;
      const cores = Object.values(st?.sub_threads ?? {})
        .filter((t) => (t.num_run ?? 0) > 0)
        .map((t) => t.core);
      if (cores.length === 0 || st?.main_thread?.core === undefined) continue;
      pooled++;
      if (cores.every((c) => c === st.main_thread!.core)) sameCore++;
    }
    return { runMs: (r.dur ?? 0) / 1000, kernelMs: inside.reduce((s, e) => s + (e.dur ?? 0), 0) / 1000, nodes: inside, pooled, sameCore };
  });
}

/** One event per node name with the median duration over the calls (ortProfileByOp's input form). */
function medianNodes(calls: ProfiledCall[]): ProfileEvent[] {
  const by = new Map<string, { e: ProfileEvent; durs: number[] }>();
  for (const c of calls) {
    for (const e of c.nodes) {
      const row = by.get(e.name!) ?? { e, durs: [] };
      row.durs.push(e.dur ?? 0);
      by.set(e.name!, row);
    }
  }
  return [...by.values()].map(({ e, durs }) => ({ ...e, dur: median(durs) }));
}

const fmt = (v: number, d = 2) => (Number.isFinite(v) ? v.toFixed(d) : '-');
const pad = (s: string, w: number) => (s.length >= w ? s : ' '.repeat(w - s.length) + s);
const load = () =>
  os
    .loadavg()
    .map((v) => v.toFixed(2))
    .join(' / ');

export async function engineProfile(o: EngineProfileOptions, log: (line: string) => void = console.log): Promise<void> {
  const work = mkdtempSync(join(os.tmpdir(), 'invad-engine-profile-'));
  try {
    log(`engine-profile: load average at start (1/5/15 min) ${load()}, ${os.cpus().length} logical CPUs (${os.cpus()[0]?.model ?? '?'})`);
    log(`engine-profile: building the ${o.preset} UNet (random weights, seed ${o.seed}) and exporting it to ONNX with train/bench_torch.py`);
    const ready = await exportUnet(o, work);
    const [c, h, w] = ready.shape;
    log(`engine-profile: ${ready.params.toLocaleString('en-US')} parameters, features ${c}x${h}x${w}, S=${o.steps}, onnxruntime ${ort.env.versions.common}`);
    log(
      `engine-profile: both engines: CPU provider, intra-op threads ${o.threads === 0 ? "0 (ORT's choice, the Detector default)" : o.threads}, spinning '${o.spinning}' (backbone ${sessionSpinning(o.spinning).backbone}, UNet ${sessionSpinning(o.spinning).unet})`,
    );

    // ---- timing, unprofiled ----
    const timed = await openEngines(o, ready, work);
    log('');
    log(`UNet ms per call, unprofiled, ${o.reps} alternating reps after 2 warm-up (median over calls of each step):`);
    log(`${pad('batch', 6)} ${pad('step', 5)} ${pad('native', 9)} ${pad('ort-node', 9)} ${pad('nat/ort', 8)}`);
    try {
      for (const n of o.batches) {
        await alternate(timed.runs, n, 2);
        const got = await alternate(timed.runs, n, o.reps);
        for (let k = 0; k < o.steps; k++) {
          const a = median(got.native.map((x) => x[k]));
          const b = median(got['onnxruntime-node'].map((x) => x[k]));
          log(`${pad(String(n), 6)} ${pad(String(k + 1), 5)} ${pad(fmt(a), 9)} ${pad(fmt(b), 9)} ${pad(fmt(a / b), 8)}`);
        }
      }
    } finally {
      await timed.close();
    }

    // ---- profile ----
    const profDir = join(work, 'profiles');
    mkdirSync(profDir, { recursive: true });
    const prof = await openEngines(o, ready, work, profDir);
    const order: number[] = [];
    try {
      for (const n of o.batches) {
        // one warm-up call each (its UNet runs are in the profile too and skipped below)
        await alternate(prof.runs, n, 1);
        await alternate(prof.runs, n, o.profileReps);
        order.push(...Array<number>(1 + o.profileReps).fill(n));
      }
      const files = { native: await prof.endProfiling.native(), 'onnxruntime-node': await prof.endProfiling['onnxruntime-node']() };
      log('');
      log(`ORT profiles (UNet session), ${o.profileReps} alternating inversions per batch after one warm-up:`);
      for (const e of ENGINES) log(`  ${e}: ${files[e]}`);
      const calls = { native: profiledCalls(files.native), 'onnxruntime-node': profiledCalls(files['onnxruntime-node']) };
      for (const e of ENGINES) {
        if (calls[e].length !== order.length * o.steps)
          throw new Error(`${e}: ${calls[e].length} model_run events in the UNet profile, expected ${order.length * o.steps}`);
      }
      for (const n of o.batches) {
        // the timed calls of this batch: skip the warm-up inversion's S runs
        const first = order.indexOf(n);
        const pick = (e: Engine) => calls[e].slice((first + 1) * o.steps, (first + 1 + o.profileReps) * o.steps);
        log('');
        log(`batch ${n}: per UNet call (median of ${o.profileReps * o.steps}), ms`);
        log(`${pad('', 18)} ${pad('model_run', 10)} ${pad('kernels', 9)} ${pad('rest', 7)} ${pad('nodes', 6)} ${pad('pool on caller core', 20)}`);
        for (const e of ENGINES) {
          const p = pick(e);
          log(
            `${pad(e, 18)} ${pad(fmt(median(p.map((x) => x.runMs))), 10)} ${pad(fmt(median(p.map((x) => x.kernelMs))), 9)} ${pad(fmt(median(p.map((x) => x.runMs - x.kernelMs))), 7)} ${pad(String(p[0]?.nodes.length ?? 0), 6)} ${pad(
              `${fmt(
                (100 * p.reduce((q, x) => q + x.sameCore, 0)) /
                  Math.max(
                    1,
                    p.reduce((q, x) => q + x.pooled, 0),
                  ),
                0,
              )}%`,
              20,
            )}`,
          );
        }
        // Per node the median over the calls (a preempted node on a shared machine is one outlier,
        // not a shift of the sum), then ortProfileByOp sums the nodes by operator type.
        const opsOf = (e: Engine) => new Map(ortProfileByOp(medianNodes(pick(e))).map((r) => [r.op, r]));
        const byOp: Record<Engine, ReturnType<typeof opsOf>> = { native: opsOf('native'), 'onnxruntime-node': opsOf('onnxruntime-node') };
        const ops = [...new Set([...byOp.native.keys(), ...byOp['onnxruntime-node'].keys()])];
        const per = 1;
        ops.sort((a, b) => (byOp['onnxruntime-node'].get(b)?.selfMs ?? 0) - (byOp['onnxruntime-node'].get(a)?.selfMs ?? 0));
        log(`  self time per operator, ms per UNet call (sum over its nodes of each node's median):`);
        log(`  ${'op'.padEnd(26)} ${pad('nodes', 6)} ${pad('native', 8)} ${pad('ort-node', 9)} ${pad('nat/ort', 8)}`);
        for (const op of ops) {
          const a = (byOp.native.get(op)?.selfMs ?? 0) / per;
          const b = (byOp['onnxruntime-node'].get(op)?.selfMs ?? 0) / per;
          const nodes = (byOp.native.get(op)?.calls ?? byOp['onnxruntime-node'].get(op)?.calls ?? 0) / per;
          log(`  ${op.padEnd(26)} ${pad(fmt(nodes, 0), 6)} ${pad(fmt(a, 3), 8)} ${pad(fmt(b, 3), 9)} ${pad(b > 0 ? fmt(a / b) : '-', 8)}`);
        }
      }
    } finally {
      await prof.close();
    }
    log('');
    log(`engine-profile: load average at end (1/5/15 min) ${load()}`);
  } finally {
    if (o.keep) log(`engine-profile: kept ${work}`);
    else rmSync(work, { recursive: true, force: true });
  }
}

function parseArgs(argv: string[]): EngineProfileOptions {
  const o: EngineProfileOptions = {
    preset: 'small',
    batches: [1, 8],
    steps: 2,
    reps: 8,
    profileReps: 3,
    threads: 0,
    spinning: DEFAULT_THREAD_SPINNING,
    seed: 0,
  };
  const ints = (s: string, name: string) =>
    s.split(',').map((v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new RangeError(`${name} takes positive integers, got "${s}"`);
      return n;
    });
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--keep') {
      o.keep = true;
      continue;
    }
    const v = argv[i + 1];
    if (v === undefined) throw new RangeError(`${a} needs a value`);
    i++;
    if (a === '--preset') {
      if (!(UNET_PRESETS as readonly string[]).includes(v)) throw new RangeError(`--preset must be one of ${UNET_PRESETS.join(', ')}`);
      o.preset = v as UnetPreset;
    } else if (a === '--batch') o.batches = ints(v, a);
    else if (a === '--steps') o.steps = ints(v, a)[0];
    else if (a === '--reps') o.reps = ints(v, a)[0];
    else if (a === '--profile-reps') o.profileReps = ints(v, a)[0];
    else if (a === '--threads') o.threads = v === '0' ? 0 : ints(v, a)[0];
    else if (a === '--seed') o.seed = Number(v);
    else if (a === '--python') o.python = v;
    else if (a === '--spinning') {
      if (!['none', 'unet', 'all'].includes(v)) throw new RangeError('--spinning must be none, unet or all');
      o.spinning = v as ThreadSpinning;
    } else throw new RangeError(`unknown option ${a}`);
  }
  return o;
}

if (require.main === module) {
  const t0 = performance.now();
  engineProfile(parseArgs(process.argv.slice(2)))
    .then(() => console.log(`engine-profile: done in ${((performance.now() - t0) / 1000).toFixed(1)} s`))
    .catch((err: unknown) => {
      console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
      process.exitCode = 1;
    });
}
