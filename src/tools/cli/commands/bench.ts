/**
 * `invad bench`: latency per stage, the line-controller scenario, the soak run,
 * and the comparison with the PyTorch eager reference. A text report on stdout,
 * progress on stderr, and with --json the full report as a file.
 */
import { writeFile } from 'node:fs/promises';
import { Command, InvalidArgumentError as CommanderArgError, Option } from 'commander';
import { compareMarkdown, formatCompare, formatLine, formatMachine, formatSoak, formatStages } from '../../bench/format';
import { INPUT_KINDS, type InputKind } from '../../bench/images';
import { PRESETS, TORCH_VARIANTS, type CompareResult, type Preset, type TorchVariant } from '../../bench/compare';
import type { LineResult } from '../../bench/line';
import { type BenchReport, type BenchRequest, defaultThreads, runBench } from '../../bench/run';
import type { SoakResult } from '../../bench/soak';
import type { StageBenchRow } from '../../bench/stages';
import { parseDurationMs } from '../../bench/stats';
import { DEFAULT_THREAD_SPINNING, THREAD_SPINNING, type EngineKind, type ExecutionProvider, type ThreadSpinning } from '../../../runtime/engine/protocol';
import { formatDrift } from '../../../runtime/drift';
import { parsePositiveInt, parseProviders } from './score';
import { formatEngineChoice, whichEngine } from '../../bench/engine-choice';

function parseNonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new CommanderArgError('expected an integer >= 0');
  return n;
}

function parsePositiveNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new CommanderArgError('expected a number > 0');
  return n;
}

function parseNonNegativeNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new CommanderArgError('expected a number >= 0');
  return n;
}

export function parseIntList(value: string): number[] {
  const list = value.split(',').map((s) => Number(s.trim()));
  if (list.length === 0 || list.some((n) => !Number.isInteger(n) || n < 1))
    throw new CommanderArgError('expected a comma-separated list of positive integers, e.g. 1,8,32');
  return [...new Set(list)];
}

function parseDuration(value: string): number {
  try {
    return parseDurationMs(value);
  } catch (err) {
    throw new CommanderArgError((err as Error).message);
  }
}

function parseInputs(value: string): InputKind[] {
  const list = value.split(',').map((s) => s.trim());
  for (const k of list) if (!INPUT_KINDS.includes(k as InputKind)) throw new CommanderArgError(`expected raw, encoded or raw,encoded, got "${k}"`);
  return [...new Set(list)] as InputKind[];
}

function parseShape(value: string): { channels: number; height: number; width: number } {
  const parts = value.toLowerCase().split('x').map(Number);
  if (parts.length !== 3 || parts.some((n) => !Number.isInteger(n) || n < 1)) throw new CommanderArgError('expected CxHxW, e.g. 152x14x14');
  return { channels: parts[0], height: parts[1], width: parts[2] };
}

interface BenchCliOptions {
  model?: string;
  batch?: number[];
  steps?: number[];
  providers: ExecutionProvider[];
  engine?: EngineKind[];
  threads?: number;
  threadSpinning: ThreadSpinning;
  runs: number;
  warmup?: number;
  inputs: InputKind[];
  images?: string;
  imageCount: number;
  maxWaitMs?: number;
  maxBatchSize?: number;
  json?: string;
  quiet?: boolean;
  scenario?: 'line';
  fps: number;
  duration: number;
  concurrency: number;
  fpsMode: 'each' | 'split';
  saturation: number;
  maxInFlight: number;
  soak?: number;
  rssEvery: number;
  limitPct: number;
  gc: boolean;
  compare?: 'torch';
  preset: Preset[];
  checkpoint?: string;
  features?: { channels: number; height: number; width: number };
  reps: number;
  gapMs: number;
  e2e: boolean;
  profile?: boolean;
  torchVariants: TorchVariant[];
  python?: string;
  workDir?: string;
  seed: number;
  whichEngine?: boolean;
  against?: string;
}

function requests(o: BenchCliOptions): BenchRequest[] {
  const modes = [o.scenario ? 'line' : null, o.soak !== undefined ? 'soak' : null, o.compare ? 'compare' : null].filter((m) => m !== null);
  if (modes.length > 1) throw new CommanderArgError(`choose one of --scenario, --soak and --compare (got ${modes.join(', ')})`);
  if (o.compare) {
    const threads = o.threads && o.threads > 0 ? o.threads : defaultThreads();
    return o.preset.map((preset) => ({
      engines: o.engine,
      mode: 'compare' as const,
      preset,
      checkpoint: o.checkpoint,
      features: o.features,
      batches: o.batch ?? [1, 8],
      steps: o.steps ?? [2, 3],
      reps: o.reps,
      warmup: o.warmup ?? 2,
      threads,
      threadSpinning: o.threadSpinning,
      providers: o.providers,
      seed: o.seed,
      gapMs: o.gapMs,
      e2e: o.e2e,
      profile: o.profile === true,
      torchVariants: o.torchVariants,
      python: o.python,
      workDir: o.workDir,
    }));
  }
  if (!o.model) throw new CommanderArgError('--model <dir> is required (except with --compare torch)');
  if (o.engine && o.engine.length > 1) throw new CommanderArgError('--engine takes one engine except with --compare');
  const det = {
    model: o.model,
    providers: o.providers,
    engine: o.engine?.[0],
    threads: o.threads ?? 0,
    threadSpinning: o.threadSpinning,
    maxWaitMs: o.maxWaitMs,
    maxBatchSize: o.maxBatchSize,
    images: o.images,
    imageCount: o.imageCount,
  };
  const steps = o.steps?.[0];
  if (o.scenario === 'line') {
    return [
      {
        mode: 'line',
        ...det,
        fps: o.fps,
        fpsMode: o.fpsMode,
        durationMs: o.duration,
        concurrency: o.concurrency,
        saturationMs: o.saturation,
        sampleMs: 100,
        maxInFlight: o.maxInFlight,
        warmup: o.warmup ?? 3,
        steps,
        input: o.inputs.length === 1 ? o.inputs[0] : 'raw',
      },
    ];
  }
  if (o.soak !== undefined) {
    return [
      {
        mode: 'soak',
        ...det,
        count: o.soak,
        every: Math.min(o.rssEvery, o.soak),
        input: o.inputs.length === 1 ? o.inputs[0] : 'alternate',
        warmup: o.warmup ?? 20,
        steps,
        gc: o.gc,
        limitPct: o.limitPct,
      },
    ];
  }
  return [{ mode: 'stages', ...det, batches: o.batch ?? [1, 8], steps: o.steps, inputs: o.inputs, runs: o.runs, warmup: o.warmup ?? 3 }];
}

function textReport(report: BenchReport): string {
  const head = formatMachine(report.machine);
  const inputs = report.inputs
    ? `\ninputs: ${report.inputs.source}${report.inputs.encodedBytes ? `, ${(report.inputs.encodedBytes / 1024).toFixed(0)} KiB encoded on average` : ''}`
    : '';
  const det = report.detector
    ? `\nbundle: ${report.detector.bundle} (input ${report.detector.inputSize.width}x${report.detector.inputSize.height}, features ${report.detector.featureShape.channels}x${report.detector.featureShape.height}x${report.detector.featureShape.width}, ${report.detector.engine} engine${report.detector.engineFallback ? ` (native fell back: ${report.detector.engineFallback})` : ''}, providers ${report.detector.providers.backbone}/${report.detector.providers.unet}, default S=${report.detector.steps})`
    : '';
  let body: string;
  if (report.kind === 'stages') body = formatStages(report.result as StageBenchRow[]);
  else if (report.kind === 'line') body = `${formatLine(report.result as LineResult)}\n${formatDrift((report.result as LineResult).drift)}`;
  else if (report.kind === 'soak') body = formatSoak(report.result as SoakResult);
  else body = formatCompare(report.result as CompareResult);
  return `${head}${det}${inputs}\n\n${body}\n`;
}

async function run(o: BenchCliOptions): Promise<number> {
  if (o.whichEngine) {
    if (!o.model) throw new CommanderArgError('--which-engine needs --model <dir>');
    const r = await whichEngine({
      model: o.model,
      batches: o.batch ?? [1, 2, 4, 8],
      steps: o.steps ?? [2, 3],
      reps: o.reps,
      warmup: o.warmup ?? 2,
      threads: o.threads ?? 0,
      threadSpinning: o.threadSpinning,
      against: o.against,
      onProgress: o.quiet ? undefined : (line: string) => process.stderr.write(`invad bench: ${line}\n`),
    });
    process.stdout.write(formatEngineChoice(r) + '\n');
    if (o.json) await writeFile(o.json, JSON.stringify(r, null, 2) + '\n');
    return 0;
  }
  const reqs = requests(o);
  const progress = o.quiet ? undefined : (line: string) => process.stderr.write(`invad bench: ${line}\n`);
  const command = ['invad', ...process.argv.slice(2)].join(' ');
  const reports: BenchReport[] = [];
  for (const req of reqs) {
    const report = await runBench(req, progress, command);
    reports.push(report);
    process.stdout.write(textReport(report) + (reqs.length > 1 ? '\n' : ''));
  }
  const compares = reports.filter((r) => r.kind === 'compare').map((r) => r.result as CompareResult);
  if (compares.length) process.stdout.write(`\nmarkdown:\n${compareMarkdown(compares)}\n`);
  if (o.json) await writeFile(o.json, JSON.stringify(reports.length === 1 ? reports[0] : reports, null, 2) + '\n');
  const soak = reports.find((r) => r.kind === 'soak');
  return soak && !(soak.result as SoakResult).growth.pass ? 1 : 0;
}

function parseVariants(value: string): TorchVariant[] {
  const list = value.split(',').map((s) => s.trim());
  for (const v of list)
    if (!TORCH_VARIANTS.includes(v as TorchVariant)) throw new CommanderArgError(`expected ${TORCH_VARIANTS.join(', ')} (comma-separated), got "${v}"`);
  return [...new Set(list)] as TorchVariant[];
}

function parseEngines(value: string): EngineKind[] {
  const list = value.split(',').map((s) => s.trim());
  for (const e of list) if (e !== 'native' && e !== 'onnxruntime-node') throw new CommanderArgError(`expected native or onnxruntime-node, got "${e}"`);
  return [...new Set(list)] as EngineKind[];
}

function parsePresets(value: string): Preset[] {
  const list = value.split(',').map((s) => s.trim());
  for (const p of list) if (!PRESETS.includes(p as Preset)) throw new CommanderArgError(`expected ${PRESETS.join(', ')} (comma-separated), got "${p}"`);
  return [...new Set(list)] as Preset[];
}

export function benchCommand(): Command {
  return new Command('bench')
    .description(
      'Benchmark latency per stage (default), the line-controller scenario (--scenario line), a soak run (--soak N), or invad against the PyTorch eager reference (--compare torch)',
    )
    .option('-m, --model <dir>', 'model bundle folder (not needed with --compare)')
    .option('-b, --batch <list>', 'batch sizes, e.g. 1,8,32 (default 1,8)', parseIntList)
    .option('-s, --steps <list>', "inversion steps S, e.g. 2,3,5 (default: the bundle's; compare: 2,3)", parseIntList)
    .option('-p, --providers <list>', 'execution providers to try in order', parseProviders, ['cpu'] as ExecutionProvider[])
    .option(
      '-e, --engine <engine>',
      "the Detector's engine: native or onnxruntime-node (default: the Detector's choice); compare: the invad engines to time (default both)",
      parseEngines,
    )
    .addOption(
      new Option('--thread-spinning <whose>', "whose ORT intra-op threads spin between runs: none, unet, all (the Detector's threadSpinning)")
        .choices([...THREAD_SPINNING])
        .default(DEFAULT_THREAD_SPINNING),
    )
    .option('-t, --threads <n>', 'ONNX Runtime intra-op threads (0: ORT decides; compare: also PyTorch threads, default = cores)', parseNonNegativeInt)
    .option('-r, --runs <n>', 'timed calls per configuration, after the warm-up', parsePositiveInt, 30)
    .option('-w, --warmup <n>', 'untimed calls first (default 3; compare 2; soak 20)', parseNonNegativeInt)
    .option('--inputs <kinds>', 'raw frames, encoded images, or both: raw,encoded', parseInputs, ['raw', 'encoded'] as InputKind[])
    .option('--images <dir>', "use these images (default: synthetic frames of the bundle's input size)")
    .option('--image-count <n>', 'distinct images to cycle through', parsePositiveInt, 16)
    .option('--max-wait-ms <ms>', "the Detector's micro-batching wait (default 2)", parseNonNegativeNumber)
    .option('--max-batch-size <n>', "the Detector's largest merged batch (default 8)", parsePositiveInt)
    .option('--json <file>', 'write the full report (every number, machine, settings) as JSON')
    .option('-q, --quiet', 'no progress lines on stderr')
    .addOption(new Option('--scenario <name>', 'line: frames at a fixed rate from several producers').choices(['line']))
    .option('--fps <n>', 'line: frames per second per producer (see --fps-mode)', parsePositiveNumber, 30)
    .addOption(new Option('--duration <time>', 'line: how long frames arrive, e.g. 60s, 2m').argParser(parseDuration).default(60_000, '60s'))
    .option('--concurrency <n>', 'line: producers (cameras)', parsePositiveInt, 4)
    .addOption(
      new Option('--fps-mode <mode>', 'line: each producer at --fps, triggered together (each), or --fps shared round-robin (split)')
        .choices(['each', 'split'])
        .default('each'),
    )
    .addOption(
      new Option('--saturation <time>', 'line: then closed loops for this long to find the throughput ceiling (0 skips)')
        .argParser(parseDuration)
        .default(10_000, '10s'),
    )
    .option('--max-in-flight <n>', 'line: frames beyond this many unanswered are dropped', parsePositiveInt, 256)
    .option('--soak <n>', 'score n images in sequence, recording RSS, descriptors and handles', parsePositiveInt)
    .option('--rss-every <n>', 'soak: sample every n images', parsePositiveInt, 1000)
    .option('--limit-pct <pct>', 'soak: allowed RSS growth from the first sample to the last', parsePositiveNumber, 5)
    .option('--no-gc', 'soak: do not force a full GC before each sample')
    .addOption(new Option('--compare <stack>', 'time the inversion against this reference stack').choices(['torch']))
    .option('--preset <list>', `compare: UNet preset(s) with random weights: ${PRESETS.join(', ')}`, parsePresets, ['small'] as Preset[])
    .option('--checkpoint <file>', "compare: a training checkpoint's EMA weights instead of random ones")
    .option('--features <CxHxW>', 'compare: feature shape (default small 152x14x14, paper 272x16x16)', parseShape)
    .option('--reps <n>', 'compare: timed alternating repetitions per (batch, S)', parsePositiveInt, 20)
    .option('--gap-ms <ms>', 'compare: idle gap between timed calls', parseNonNegativeNumber, 20)
    .option('--no-e2e', 'compare: skip the end-to-end invad numbers')
    .option('--profile', 'compare: per-operator profile of one inversion on each side')
    .option('--torch-variants <list>', "compare: PyTorch's own convolution dispatch (default) and/or every convolution on oneDNN (onednn)", parseVariants, [
      ...TORCH_VARIANTS,
    ])
    .option('--python <path>', 'compare: Python with PyTorch (default: $INVAD_PYTHON, python3, /usr/bin/python3)')
    .option('--work-dir <dir>', 'compare: keep the exported UNet, features and bundle here')
    .option('--seed <n>', 'compare: seed for the random weights and features', parseNonNegativeInt, 0)
    .option(
      '--which-engine',
      'time both engines side by side on --model (alternating, batch 1,2,4,8 and S 2,3 unless given, --reps repetitions) and say which is faster here',
    )
    .option('--against <dir>', 'with --which-engine: a second bundle of the same shapes (e.g. the int8 one from invad quantize) timed in the same alternation')
    .action(async (o: BenchCliOptions) => {
      process.exitCode = await run(o);
    });
}
