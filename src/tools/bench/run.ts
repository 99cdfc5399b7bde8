/**
 * `invad bench` without the command line: loads the detector and inputs, runs
 * one benchmark mode and returns a JSON-ready report with the machine and the
 * settings it ran under.
 */
import { cpus } from 'node:os';
import { Detector, type DetectorInfo } from '../../runtime/detector';
import { DEFAULT_THREAD_SPINNING, type EngineKind, type ExecutionProvider, type ThreadSpinning } from '../../runtime/engine/protocol';
import { packageVersion } from '../../util/package-info';
import { benchCompare, type CompareOptions, type CompareResult } from './compare';
import { type BenchImages, folderImages, type InputKind, syntheticImages } from './images';
import { benchLine, type LineOptions, type LineResult } from './line';
import { type MachineInfo, machineInfo } from './machine';
import { benchSoak, type SoakOptions, type SoakResult } from './soak';
import { benchStages, type StageBenchRow } from './stages';

export type BenchMode = 'stages' | 'line' | 'soak' | 'compare';

export interface BenchDetectorOptions {
  /** model bundle folder (every mode but compare) */
  model: string;
  providers: ExecutionProvider[];
  /** the Detector's engine; default its own choice (defaultEngine()) */
  engine?: EngineKind;
  /** ORT intra-op threads; 0 lets ORT decide (the Detector default) */
  threads: number;
  /** DetectorOptions.threadSpinning; default DEFAULT_THREAD_SPINNING */
  threadSpinning?: ThreadSpinning;
  maxWaitMs?: number;
  maxBatchSize?: number;
  /** images folder; default synthetic frames of the bundle's input size */
  images?: string;
  /** distinct images to cycle through */
  imageCount: number;
}

export type BenchRequest =
  | ({ mode: 'stages'; batches: number[]; steps?: number[]; inputs: InputKind[]; runs: number; warmup: number } & BenchDetectorOptions)
  | ({ mode: 'line' } & Omit<LineOptions, 'onProgress'> & BenchDetectorOptions)
  | ({ mode: 'soak' } & Omit<SoakOptions, 'onProgress'> & BenchDetectorOptions)
  | ({ mode: 'compare' } & Omit<CompareOptions, 'onProgress'>);

export interface BenchReport {
  kind: BenchMode;
  invad: string;
  startedAt: string;
  finishedAt: string;
  command: string | null;
  machine: MachineInfo;
  settings: Record<string, unknown>;
  detector: Pick<
    DetectorInfo,
    'bundle' | 'providers' | 'fallbacks' | 'steps' | 'maxBatchSize' | 'inputSize' | 'featureShape' | 'scoreDefinition' | 'engine' | 'device' | 'engineFallback'
  > | null;
  inputs: { source: string; width: number; height: number; encodedBytes: number } | null;
  result: StageBenchRow[] | LineResult | SoakResult | CompareResult;
}

export function defaultThreads(): number {
  return cpus().length;
}

async function loadInputs(det: Detector, o: BenchDetectorOptions): Promise<BenchImages> {
  const { width, height } = det.info().inputSize;
  return o.images ? folderImages(o.images, o.imageCount) : syntheticImages(width, height, o.imageCount);
}

export async function runBench(req: BenchRequest, onProgress?: (line: string) => void, command: string | null = null): Promise<BenchReport> {
  const startedAt = new Date().toISOString();
  const machine = machineInfo();
  const { onProgress: _drop, ...settings } = req as BenchRequest & { onProgress?: unknown };
  const base = { kind: req.mode, invad: packageVersion(), startedAt, command, machine, settings: settings as Record<string, unknown> };
  if (req.mode === 'compare') {
    const result = await benchCompare({ ...req, onProgress });
    return { ...base, finishedAt: new Date().toISOString(), detector: null, inputs: null, result };
  }
  const det = await Detector.load(req.model, {
    executionProviders: req.providers,
    intraOpThreads: req.threads,
    threadSpinning: req.threadSpinning ?? DEFAULT_THREAD_SPINNING,
    ...(req.engine === undefined ? {} : { engine: req.engine }),
    ...(req.maxWaitMs === undefined ? {} : { maxWaitMs: req.maxWaitMs }),
    ...(req.maxBatchSize === undefined ? {} : { maxBatchSize: req.maxBatchSize }),
  });
  try {
    const info = det.info();
    const images = await loadInputs(det, req);
    const inputs = { source: images.source, width: images.width, height: images.height, encodedBytes: images.encodedBytes };
    const detector = {
      bundle: info.bundle,
      providers: info.providers,
      fallbacks: info.fallbacks,
      steps: info.steps,
      maxBatchSize: info.maxBatchSize,
      inputSize: info.inputSize,
      featureShape: info.featureShape,
      scoreDefinition: info.scoreDefinition,
      engine: info.engine,
      device: info.device,
      engineFallback: info.engineFallback,
    };
    let result: BenchReport['result'];
    if (req.mode === 'stages') {
      result = await benchStages(det, images, {
        batches: req.batches,
        steps: req.steps ?? [info.steps],
        inputs: req.inputs,
        runs: req.runs,
        warmup: req.warmup,
        onProgress,
      });
    } else if (req.mode === 'line') {
      result = await benchLine(det, images, { ...req, onProgress });
    } else {
      result = await benchSoak(det, images, { ...req, onProgress });
    }
    return { ...base, finishedAt: new Date().toISOString(), detector, inputs, result };
  } finally {
    await det.dispose();
  }
}
