/**
 * The evaluation report's data model. An EvalReport is plain JSON: it is
 * written as-is to report.json and rendered to report.html by renderReportHtml.
 * Non-finite numbers do not survive JSON (JSON.stringify writes them as null);
 * the HTML renderer shows null, NaN and missing values as a dash.
 */
import type { Proportion } from '../metrics/binomial';

export type { Proportion } from '../metrics/binomial';

/** One ROC curve, downsampled to at most MAX_CURVE_POINTS points (see downsampleCurve). */
export interface CurvePoints {
  fpr: number[];
  tpr: number[];
}

/** Threshold-free metrics; the pixel metrics are null when there are no ground-truth masks. */
export interface MetricSet {
  imageAuroc: number;
  imageAp: number;
  imageF1Max: number;
  pixelAuroc: number | null;
  pixelAp: number | null;
  aupro: number | null;
}

export interface EvalRow {
  scoreDefinition: string;
  /** number of DDIM steps S */
  steps: number;
  /** 'all' or one defect type */
  subset: string;
  metrics: MetricSet;
}

/** Image-score histogram: edges has one more entry than normal and anomalous (counts per bin). */
export interface ScoreHistogram {
  scoreDefinition: string;
  steps: number;
  edges: number[];
  normal: number[];
  anomalous: number[];
}

export interface GalleryItem {
  file: string;
  kind: 'false-positive' | 'false-negative';
  score: number;
  threshold: number;
  /** 'good' (a normal image) or the defect type (its folder name in the dataset) */
  label: string;
  /** base64 PNG data, without a data: prefix */
  overlayPng: string;
}

export interface RocSeries {
  scoreDefinition: string;
  steps: number;
  curve: CurvePoints;
}

/**
 * Latency at one S and batch size, from one timed run over `samples` images. Two different
 * quantities: the cost of an image (wall time over images, so 1 / throughput) and how long
 * each image waited for its result. At batch 1 they agree; in a batch the first is smaller,
 * since images share model runs, and the second larger, since each waits for its batch.
 */
export interface LatencyRow {
  steps: number;
  /** images per model run (1: one score() call at a time) */
  batchSize: number;
  /** images timed */
  samples: number;
  /** the run's wall time divided by its images: a mean, not a percentile */
  meanMsPerImage: number;
  /** each image's time from the start of its decoding to its result: nearest-rank percentiles */
  latencyMs: { median: number; p90: number; p99: number };
}

/** A test image that could not be scored; evaluation goes on without it. */
export interface SkippedImage {
  file: string;
  /** the error's code (ERR_INVAD_...) */
  code: string;
  message: string;
}

/**
 * What a threshold does on the test set: an image is flagged when its score is above the
 * threshold, as Detector flags it. Each count comes with its exact 95% interval.
 */
export interface DecisionOutcome {
  /** the image threshold, on the score scale of the calibration that set it */
  threshold: number;
  /** good test images flagged: the observed false-alarm rate */
  falseAlarms: Proportion;
  /** defective test images flagged, all defect types together */
  recall: Proportion;
  /** the same per defect type, A-Z */
  recallByType: Array<{ type: string; recall: Proportion }>;
}

/** The bundle's own threshold at one S, applied to the test set. */
export interface BundleDecision extends DecisionOutcome {
  /** how the bundle set it: 'conformal', 'f1-max' or 'false-alarm-rate' (older bundles); null while uncalibrated */
  method: string | null;
  /** the false-alarm rate on normals it was calibrated for */
  targetFalseAlarmRate: number | null;
}

/**
 * One target false-alarm rate: the threshold calibration from normals sets for it (the same rule
 * as the bundle's calibration, on the normals named in {@link DecisionReport.normals}), and what
 * that threshold really gives on the test set.
 */
export interface OperatingPoint {
  targetFalseAlarmRate: number;
  /** calibration normals behind the threshold (for some definitions held-out ones only) */
  normals: number;
  /** the fewest normals that carry the rate's guarantee (split-conformal: n + 1 >= 1/rate) */
  normalsNeeded: number;
  /** null when no threshold could be set; `note` says why */
  outcome: DecisionOutcome | null;
  note?: string;
  /**
   * The highest recall on the test ROC at an observed false-alarm rate at most the target: what
   * the rate could buy with a threshold picked on the test set itself (an upper bound, not a
   * deployable setting). NaN (null in JSON) without both classes.
   */
  bestRecall: number;
}

/** The decision at one score definition and S. */
export interface DecisionRow {
  scoreDefinition: string;
  steps: number;
  /** null when the bundle has no threshold for this definition at this S */
  bundle: BundleDecision | null;
  operatingPoints: OperatingPoint[];
}

/** How the thresholds behave on the test set: the bundle's own and those for a few target rates. */
export interface DecisionReport {
  /** the target false-alarm rates of the operating points, ascending */
  rates: number[];
  /** where the operating points' calibration normals came from */
  normals: { source: 'bundle' | 'folder' | 'none'; description: string };
  rows: DecisionRow[];
}

export interface EvalReport {
  /** ISO 8601 */
  createdAt: string;
  dataset: string;
  model: string;
  machine: { cpu: string; cores: number; node: string; providers: string[] };
  settings: Record<string, unknown>;
  rows: EvalRow[];
  rocImage: RocSeries[];
  rocPixel: RocSeries[];
  histograms: ScoreHistogram[];
  latency: LatencyRow[];
  gallery: GalleryItem[];
  notes: string[];
  /** test images that could not be scored (each also has a line in notes); absent in older reports */
  skipped?: SkippedImage[];
  /** the calibrated thresholds applied to the test set (inversion mode); absent in older reports */
  decisions?: DecisionReport;
}

export const MAX_CURVE_POINTS = 512;

/**
 * Reduces a curve to at most maxPoints points, evenly spaced along the
 * polyline's length (so corners and long straight runs both keep their
 * shape), always keeping the first and last point.
 */
export function downsampleCurve(fpr: ArrayLike<number>, tpr: ArrayLike<number>, maxPoints = MAX_CURVE_POINTS): CurvePoints {
  if (fpr.length !== tpr.length) throw new RangeError(`fpr has ${fpr.length} points, tpr has ${tpr.length}`);
  if (!Number.isInteger(maxPoints) || maxPoints < 2) throw new RangeError(`maxPoints must be an integer >= 2, got ${maxPoints}`);
  const n = fpr.length;
  if (n <= maxPoints) return { fpr: Array.from(fpr), tpr: Array.from(tpr) };
  const cum = new Float64Array(n);
  for (let i = 1; i < n; i++) {
    const d = Math.hypot(fpr[i] - fpr[i - 1], tpr[i] - tpr[i - 1]);
    cum[i] = cum[i - 1] + (Number.isFinite(d) ? d : 0);
  }
  const total = cum[n - 1];
  const keep: number[] = [0];
  let j = 0;
  for (let k = 1; k < maxPoints - 1; k++) {
    const target = (total * k) / (maxPoints - 1);
    while (j < n - 1 && cum[j] < target) j++;
    // never repeat a point, and leave room for the last one
    const idx = Math.min(Math.max(j, keep[keep.length - 1] + 1), n - 2);
    if (idx > keep[keep.length - 1]) keep.push(idx);
  }
  keep.push(n - 1);
  return { fpr: keep.map((i) => fpr[i]), tpr: keep.map((i) => tpr[i]) };
}
