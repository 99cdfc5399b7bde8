/**
 * `invad eval`: scores a dataset's test set with a bundle and measures image
 * and pixel metrics overall and per defect type, for each score definition and
 * each S, plus latency; writes report.json and report.html.
 *
 * Maps are kept at feature-grid resolution and upsampled one image at a time
 * (the same bilinear resize, and mapSmoothing blur, Detector applies), so memory stays bounded; pixel
 * metrics use streaming histograms over the maps' value range (src/metrics).
 */
import { cpus } from 'node:os';
import { basename, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadAddon } from '../binding';
import { loadBundle } from '../runtime/bundle/load';
import { upsampleMap } from '../runtime/map-smoothing';
import { type Manifest, SCORE_DEFINITIONS, type ScoreDefinition } from '../runtime/bundle/manifest';
import { calibrationAt } from '../runtime/calibration';
import { Detector, type ScoreOptions, type ScoreResult } from '../runtime/detector';
import type { ExecutionProvider } from '../runtime/engine/protocol';
import { InvadError } from '../util/errors';
import { auroc, averagePrecision, f1Max, PixelMetricsAccumulator, ProAccumulator, rocCurve } from './metrics';
import { downsampleCurve } from './report/types';
import type { EvalReport, EvalRow, GalleryItem, LatencyRow, MetricSet, RocSeries, ScoreHistogram, SkippedImage } from './report/types';
import { galleryItem } from './report/gallery';
import { writeReport } from './report/write';
import { type FeatureMap, hasParts, imageScore, SCORES } from '../runtime/scores';
import { loadMask, loadTestSet, type TestItem } from './dataset';
import { bundleTarget, type CalibrationRule, decisionRates, describeNormals, measureDecisions, type NormalPool, poolFromCalibrationScores } from './decision';
import type { DecisionReport, DecisionRow } from './report/types';
import { formatPercent, formatProportion, formatThreshold } from './report/decision-text';

export interface EvaluateOptions {
  dataset: string;
  model: string;
  /** step counts S to evaluate; default the bundle's */
  steps?: number[];
  /** `reconstruction` scores by the feature reconstruction error (ablation, paper Table 4) */
  mode?: 'inversion' | 'reconstruction';
  tStart?: number;
  reconSteps?: number;
  /** folder for report.json and report.html; none: no files */
  out?: string;
  batchSize?: number;
  executionProviders?: ExecutionProvider[];
  /** skip pixel metrics (faster) */
  imageOnly?: boolean;
  /** worst false positives and false negatives shown in the gallery, each; default 6 */
  gallery?: number;
  /** images timed one at a time for the batch-1 latency; default 20 */
  latencySamples?: number;
  /**
   * The threshold rule for the operating points: `{ calibrate: calibratePool, poolsOutOfFold }`
   * from fit (the CLI passes it). Without it the operating points carry no threshold.
   */
  calibrationRule?: CalibrationRule;
  /**
   * Normal images (never trained on) to calibrate the operating points from, scored at each S.
   * Default: the bundle's calibration sample (calibration.json), when it has one.
   */
  calibrationNormals?: string[];
  /** target false-alarm rates of the operating points; default 0.5%, 1%, 2%, 5% (and the bundle's own) */
  operatingRates?: number[];
  /**
   * A baseline bundle (`invad baseline`, issue 17) evaluated on the same test set: its padim and
   * patchcore rows, ROC curves and latency join this report, scored backbone-only as deployed.
   */
  baseline?: string;
  /** evaluate only these definitions, scored as a Detector with the first one deploys it (no allMaps) */
  only?: ScoreDefinition[];
  onProgress?: (message: string) => void;
}

/** One test image's scoring output, kept small: maps at feature-grid resolution. */
interface Scored {
  item: TestItem;
  result: Pick<ScoreResult, 'components' | 'featureMaps' | 'width' | 'height'>;
}

/** A score definition as evaluated: its image score and which feature map it uses. */
interface Definition {
  name: ScoreDefinition | 'reconstruction';
  score: (s: Scored) => number;
  map: (s: Scored) => Float32Array;
  /** which feature map: definitions sharing one share its pixel metrics */
  mapKind: FeatureMap;
  threshold: number | null;
}

/** Nearest-rank percentile of ascending values: the smallest value with at least q of them at or below it. */
function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/**
 * A latency row from one timed run: `wallMs` for all of `perImageMs.length` images, and each
 * image's own time from the start of its decoding to its result.
 */
export function latencyRow(steps: number, batchSize: number, wallMs: number, perImageMs: readonly number[]): LatencyRow {
  const sorted = [...perImageMs].sort((a, b) => a - b);
  return {
    steps,
    batchSize,
    samples: sorted.length,
    meanMsPerImage: sorted.length ? wallMs / sorted.length : NaN,
    latencyMs: { median: percentile(sorted, 0.5), p90: percentile(sorted, 0.9), p99: percentile(sorted, 0.99) },
  };
}

function definitionsAt(m: Manifest, steps: number, mode: 'inversion' | 'reconstruction', sample: Scored): Definition[] {
  if (mode === 'reconstruction') {
    return [
      { name: 'reconstruction', score: (s) => Math.max(...s.result.featureMaps.l2), map: (s) => s.result.featureMaps.l2, mapKind: 'l2', threshold: null },
    ];
  }
  const cal = calibrationAt(m.calibration, steps);
  const norms = cal ?? m.calibration;
  const hasLatent = sample.result.featureMaps.latentGaussian !== undefined;
  // Each definition whose parts and map the bundle gave (the feature statistics of issue 17 are optional).
  const available = (d: ScoreDefinition) =>
    (!SCORES[d].needsLatent || hasLatent) && hasParts(d, sample.result.components) && sample.result.featureMaps[SCORES[d].map] !== undefined;
  return SCORE_DEFINITIONS.filter(available).map((d: ScoreDefinition) => ({
    name: d,
    score: (s: Scored) => imageScore(d, s.result.components, norms),
    // Eval scores with allMaps, so the latent map is there whenever hasLatent is.
    map: (s: Scored) => s.result.featureMaps[SCORES[d].map]!,
    mapKind: SCORES[d].map,
    threshold: cal?.imageThresholds[d] ?? (d === m.score.definition && steps === m.schedule.defaultSteps ? m.calibration.imageThreshold : null),
  }));
}

function imageMetrics(scored: Scored[], def: Definition): Omit<MetricSet, 'pixelAuroc' | 'pixelAp' | 'aupro'> {
  const scores = scored.map(def.score);
  const labels = scored.map((s) => (s.item.anomalous ? 1 : 0));
  return { imageAuroc: auroc(scores, labels), imageAp: averagePrecision(scores, labels), imageF1Max: f1Max(scores, labels).f1 };
}

/**
 * Each ground-truth mask at its image's size, read once: pixel metrics need every mask for
 * each map kind and each S.
 */
class MaskCache {
  private readonly masks = new Map<string, Promise<Uint8Array>>();

  get(s: Scored): Promise<Uint8Array> {
    const { width, height } = s.result;
    if (!s.item.maskPath) return Promise.resolve(new Uint8Array(width * height));
    const key = `${s.item.maskPath}:${width}x${height}`;
    let mask = this.masks.get(key);
    if (!mask) this.masks.set(key, (mask = loadMask(s.item, width, height)));
    return mask;
  }
}

/** Pixel AUROC, AP and AUPRO of one map kind over subsets, in one pass over the images. */
async function pixelMetrics(
  masks: MaskCache,
  scored: Scored[],
  mapOf: (s: Scored) => Float32Array,
  subsets: string[],
  bundle: Pick<Manifest, 'features' | 'input' | 'mapSmoothing'>,
): Promise<{ bySubset: Map<string, Pick<MetricSet, 'pixelAuroc' | 'pixelAp' | 'aupro'>>; roc: ReturnType<PixelMetricsAccumulator['rocCurve']> }> {
  const addon = loadAddon();
  let lo = Infinity;
  let hi = -Infinity;
  for (const s of scored) for (const v of mapOf(s)) [lo, hi] = [Math.min(lo, v), Math.max(hi, v)];
  // Bilinear upsampling (and the mapSmoothing blur, a weighted mean) never leaves the low-resolution maps' range, so it bounds the histograms.
  const range: [number, number] = hi > lo ? [lo, hi] : [lo, lo + 1];
  const acc = new Map(subsets.map((k) => [k, { pixel: new PixelMetricsAccumulator({ range }), pro: new ProAccumulator({ range, bins: 10_000 }) }]));
  for (const s of scored) {
    const { width, height } = s.result;
    const map = upsampleMap(addon, bundle, mapOf(s), { width, height });
    const mask = await masks.get(s);
    for (const subset of subsets) {
      if (subset !== 'all' && s.item.anomalous && s.item.label !== subset) continue;
      const a = acc.get(subset)!;
      a.pixel.add(map, mask);
      a.pro.add(map, mask, width, height);
    }
  }
  const bySubset = new Map<string, Pick<MetricSet, 'pixelAuroc' | 'pixelAp' | 'aupro'>>();
  for (const [k, a] of acc) {
    const ok = a.pixel.positives > 0 && a.pixel.negatives > 0;
    bySubset.set(k, {
      pixelAuroc: ok ? a.pixel.auroc() : null,
      pixelAp: ok ? a.pixel.averagePrecision() : null,
      aupro: ok && a.pro.regions > 0 ? a.pro.aupro(0.3) : null,
    });
  }
  return { bySubset, roc: acc.get('all')!.pixel.rocCurve() };
}

function histogram(scored: Scored[], def: Definition, steps: number, bins = 30): ScoreHistogram {
  const scores = scored.map(def.score);
  const lo = Math.min(...scores);
  const hi = Math.max(...scores);
  const width = (hi - lo) / bins || 1;
  const edges = Array.from({ length: bins + 1 }, (_, i) => lo + i * width);
  const normal = new Array<number>(bins).fill(0);
  const anomalous = new Array<number>(bins).fill(0);
  scored.forEach((s, i) => {
    const b = Math.min(bins - 1, Math.floor((scores[i] - lo) / width));
    (s.item.anomalous ? anomalous : normal)[b]++;
  });
  return { scoreDefinition: def.name, steps, edges, normal, anomalous };
}

/** Scores the test set in batches (decoding overlaps the model runs), timing the whole run and each image. */
async function scoreAll(
  det: Detector,
  items: TestItem[],
  options: ScoreOptions,
  batchSize: number,
  steps: number,
  notes: string[],
  skipped: SkippedImage[],
): Promise<{ scored: Scored[]; latency: LatencyRow }> {
  const scored: Scored[] = [];
  const times: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < items.length; i += 64) {
    const part = items.slice(i, i + 64);
    const results = await det.scoreBatch(
      part.map((p) => p.file),
      { ...options, batchSize, errors: 'collect' },
    );
    results.forEach((r, j) => {
      if (r instanceof Error) {
        notes.push(`skipped ${part[j].file}: ${r.message}`);
        skipped.push({ file: part[j].file, code: r instanceof InvadError ? r.code : 'ERR_UNKNOWN', message: r.message });
        return;
      }
      times.push(r.timings.totalMs);
      scored.push({ item: part[j], result: { components: r.components, featureMaps: r.featureMaps, width: r.width, height: r.height } });
    });
  }
  return { scored, latency: latencyRow(steps, batchSize, performance.now() - t0, times) };
}

/** Batch 1: `samples` images scored one at a time, after one untimed warm-up call. */
async function latencyAtBatch1(det: Detector, items: TestItem[], options: ScoreOptions, steps: number, samples: number): Promise<LatencyRow> {
  const files = items.slice(0, samples).map((i) => i.file);
  await det.score(files[0], options); // warm-up
  const times: number[] = [];
  const t0 = performance.now();
  for (const f of files) times.push((await det.score(f, options)).timings.totalMs);
  return latencyRow(steps, 1, performance.now() - t0, times);
}

async function galleryFor(
  masks: MaskCache,
  scored: Scored[],
  def: Definition,
  bundle: Pick<Manifest, 'features' | 'input' | 'mapSmoothing'>,
  count: number,
): Promise<GalleryItem[]> {
  if (def.threshold === null || count === 0) return [];
  const thr = def.threshold;
  const withScore = scored.map((s) => ({ s, score: def.score(s) }));
  const fps = withScore
    .filter((x) => !x.s.item.anomalous && x.score > thr)
    .sort((a, b) => b.score - a.score)
    .slice(0, count);
  const fns = withScore
    .filter((x) => x.s.item.anomalous && x.score <= thr)
    .sort((a, b) => a.score - b.score)
    .slice(0, count);
  const addon = loadAddon();
  const items: GalleryItem[] = [];
  for (const [list, kind] of [
    [fps, 'false-positive'],
    [fns, 'false-negative'],
  ] as const) {
    for (const { s, score } of list) {
      const { width, height } = s.result;
      const map = upsampleMap(addon, bundle, def.map(s), { width, height });
      const mask = s.item.maskPath ? await masks.get(s) : null;
      items.push(await galleryItem(s.item.file, map, mask, { kind, score, threshold: thr, label: s.item.label }));
    }
  }
  return items;
}

/** Calibration normals scored at S, as a held-out pool (images that fail are left out, with a note). */
async function scoreNormals(det: Detector, files: readonly string[], steps: number, say: (m: string) => void): Promise<NormalPool> {
  say(`scoring ${files.length} calibration normals at S = ${steps}`);
  const results = await det.scoreBatch(files, { steps, allMaps: true, errors: 'collect' });
  const ok = results.filter((r): r is ScoreResult => !(r instanceof Error));
  if (ok.length < results.length) say(`  ${results.length - ok.length} calibration normal(s) could not be scored and are left out`);
  return { heldOut: ok.map((r) => r.components), outOfFold: [] };
}

export async function evaluate(o: EvaluateOptions): Promise<EvalReport> {
  const say = o.onProgress ?? (() => undefined);
  const bundle = await loadBundle(o.model);
  const m = bundle.manifest;
  const mode = o.mode ?? 'inversion';
  const stepsList = mode === 'reconstruction' ? [o.reconSteps ?? 5] : (o.steps ?? [m.schedule.defaultSteps]);
  const items = await loadTestSet(o.dataset);
  const types = [...new Set(items.filter((i) => i.anomalous).map((i) => i.label))];
  const subsets = ['all', ...types];
  const batchSize = o.batchSize ?? 8;
  const notes: string[] = [];
  const rows: EvalRow[] = [];
  const rocImage: RocSeries[] = [];
  const rocPixel: RocSeries[] = [];
  const histograms: ScoreHistogram[] = [];
  const latency: LatencyRow[] = [];
  const skipped: SkippedImage[] = [];
  const masks = new MaskCache();
  let gallery: GalleryItem[] = [];
  const decisionRows: DecisionRow[] = [];
  const rates = decisionRates(m.calibration.falseAlarmRate, o.operatingRates);
  const normalsSource = o.calibrationNormals ? 'folder' : bundle.calibrationScores ? 'bundle' : 'none';
  say(`${items.length} test images (${items.filter((i) => !i.anomalous).length} good; defects: ${types.join(', ')})`);

  const det = await Detector.load(o.model, { executionProviders: o.executionProviders, scoreDefinition: o.only?.[0] ?? 'sp', maxBatchSize: batchSize });
  try {
    for (const steps of stepsList) {
      const scoreOptions: ScoreOptions =
        mode === 'reconstruction' ? { reconstruction: { tStart: o.tStart ?? 0.2, reconSteps: steps } } : o.only ? { steps } : { steps, allMaps: true };
      say(mode === 'reconstruction' ? `reconstruction ablation: t_start ${o.tStart ?? 0.2}, ${steps} steps` : `scoring at S = ${steps}`);
      const run = await scoreAll(det, items, scoreOptions, batchSize, steps, notes, skipped);
      const { scored } = run;
      latency.push(await latencyAtBatch1(det, items, scoreOptions, steps, o.latencySamples ?? 20), run.latency);
      // A baseline bundle's UNet is a placeholder (invad baseline --backbone): only its backbone-only definitions mean anything.
      const placeholderUnet = m.provenance.training.placeholderUnet === true;
      const defs = definitionsAt(m, steps, mode, scored[0]).filter(
        (d) =>
          (!o.only || o.only.includes(d.name as ScoreDefinition)) &&
          (!placeholderUnet || (d.name !== 'reconstruction' && SCORES[d.name].backboneOnly === true)),
      );
      const pixelByMap = new Map<string, Awaited<ReturnType<typeof pixelMetrics>>>();
      for (const def of defs) {
        const labels = scored.map((s) => (s.item.anomalous ? 1 : 0));
        const roc = rocCurve(scored.map(def.score), labels);
        rocImage.push({ scoreDefinition: def.name, steps, curve: downsampleCurve(roc.fpr, roc.tpr) });
        histograms.push(histogram(scored, def, steps));
        let pixel: Awaited<ReturnType<typeof pixelMetrics>> | undefined;
        if (!o.imageOnly) {
          // sp, nll and combined share the l2 map: compute its pixel metrics once.
          pixel = pixelByMap.get(def.mapKind) ?? (await pixelMetrics(masks, scored, def.map, subsets, m));
          pixelByMap.set(def.mapKind, pixel);
          rocPixel.push({ scoreDefinition: def.name, steps, curve: downsampleCurve(pixel.roc.fpr, pixel.roc.tpr) });
        }
        for (const subset of subsets) {
          const part = subset === 'all' ? scored : scored.filter((s) => !s.item.anomalous || s.item.label === subset);
          const px = pixel?.bySubset.get(subset) ?? { pixelAuroc: null, pixelAp: null, aupro: null };
          rows.push({ scoreDefinition: def.name, steps, subset, metrics: { ...imageMetrics(part, def), ...px } });
        }
        const all = rows[rows.length - subsets.length].metrics;
        say(
          `  ${def.name.padEnd(16)} S=${steps}  image AUROC ${all.imageAuroc.toFixed(4)}  AP ${all.imageAp.toFixed(4)}  F1max ${all.imageF1Max.toFixed(4)}` +
            (all.pixelAuroc === null ? '' : `  pixel AUROC ${all.pixelAuroc.toFixed(4)}  AP ${all.pixelAp?.toFixed(4)}  AUPRO@0.3 ${all.aupro?.toFixed(4)}`),
        );
      }
      if (mode === 'inversion') {
        const pool =
          normalsSource === 'folder' ? await scoreNormals(det, o.calibrationNormals!, steps, say) : poolFromCalibrationScores(bundle.calibrationScores, steps);
        const rows = measureDecisions({
          steps,
          definitions: defs.flatMap((d) => (d.name === 'reconstruction' ? [] : [d.name])),
          test: scored.map((s) => ({ components: s.result.components, anomalous: s.item.anomalous, label: s.item.label })),
          normalization: calibrationAt(m.calibration, steps) ?? m.calibration,
          thresholds: Object.fromEntries(defs.map((d) => [d.name, d.threshold])),
          target: bundleTarget(m),
          pool,
          rule: o.calibrationRule,
          rates,
        });
        for (const r of rows)
          if (r.bundle)
            say(
              `  ${r.scoreDefinition.padEnd(16)} S=${steps}  threshold ${formatThreshold(r.bundle.threshold)} (target ${formatPercent(r.bundle.targetFalseAlarmRate)}): false alarms ${formatProportion(r.bundle.falseAlarms)}, recall ${formatProportion(r.bundle.recall)}`,
            );
        decisionRows.push(...rows);
      }
      const shown = defs.find((d) => d.name === m.score.definition) ?? defs[0];
      if (gallery.length === 0 && o.out) gallery = await galleryFor(masks, scored, shown, m, o.gallery ?? 6);
    }
  } finally {
    await det.dispose();
  }
  if (o.baseline) {
    // Each baseline as deployed: its own Detector, backbone only.
    const stats = (await loadBundle(o.baseline)).manifest.featureStatistics;
    const baselineDefs = (['padim', 'patchcore'] as const).filter((d) => (d === 'padim' ? stats?.gaussian : stats?.memoryBank));
    if (baselineDefs.length === 0) notes.push(`baseline ${o.baseline} has no feature statistics (run invad baseline): nothing to compare`);
    for (const d of baselineDefs) {
      say(`baseline ${d} from ${o.baseline}`);
      const b = await evaluate({ ...o, model: o.baseline, out: undefined, baseline: undefined, only: [d], steps: undefined });
      rows.push(...b.rows);
      rocImage.push(...b.rocImage);
      rocPixel.push(...b.rocPixel);
      histograms.push(...b.histograms);
      latency.push(...b.latency.map((l) => ({ ...l, scoreDefinition: d })));
      notes.push(...b.notes.map((n) => `${d}: ${n}`), `${d} rows and latency come from baseline bundle ${resolve(o.baseline)}`);
    }
  }
  const report: EvalReport = {
    createdAt: new Date().toISOString(),
    dataset: resolve(o.dataset),
    model: resolve(o.model),
    machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, node: process.version, providers: o.executionProviders ?? ['cpu'] },
    settings: {
      mode,
      steps: stepsList,
      batchSize,
      ...(mode === 'reconstruction' ? { tStart: o.tStart ?? 0.2, reconSteps: stepsList[0] } : {}),
      bundle: basename(resolve(o.model)),
      calibration: m.calibration.status,
    },
    rows,
    rocImage,
    rocPixel,
    histograms,
    latency,
    gallery,
    notes,
    skipped,
    ...(mode === 'inversion'
      ? {
          decisions: {
            rates,
            normals: describeNormals(normalsSource, o.calibrationNormals?.length, o.calibrationRule !== undefined),
            rows: decisionRows,
          } satisfies DecisionReport,
        }
      : {}),
  };
  if (o.out) await writeReport(o.out, report);
  return report;
}
