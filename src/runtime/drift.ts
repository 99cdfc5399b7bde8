/**
 * Drift alarms (issue 14, section 3): does the line still make the parts the bundle was
 * calibrated on? Detector keeps, per step count S, a running window of the scores of the parts
 * it passed and compares it with the calibration normals' scores (calibration.json):
 *
 * - **like with like**: the window holds passed parts only (score <= threshold), so it is
 *   compared with the calibration normals at or below the same threshold. Both are then samples
 *   of the normals' score distribution cut at the threshold, and real defects (flagged, mostly)
 *   stay out of the test;
 * - **quantiles**: p50, p90 and p99 of the window against those of the passing normals;
 * - **KS test**: the two-sample Kolmogorov–Smirnov statistic and its asymptotic p-value
 *   (util/stats `ksTwoSample`, shared with calibration);
 * - **false-alarm rates**, see {@link DriftFalseAlarm}: the target, the rate the calibration
 *   sample implies, an estimate for the current window from passed parts only, and the observed
 *   flag rate over the last `window` scored parts (defects included);
 * - **alarm**: each time K = ceil(window / 10) more parts have been passed, the KS p-value is
 *   checked against `alpha`; below it, `onDrift` fires once and stays quiet until the p-value
 *   is back at or above 10 x alpha (hysteresis).
 *
 * Bundles without calibration.json (calibrated by an older invad) store no normals' scores,
 * only each part's median and spread and the threshold: there the report compares the flag
 * rate with the target rate, and the KS test (hence the alarm) is unavailable, with the reason.
 */
import { ksTwoSample, type KsResult, quantileSorted } from '../util/stats';
import type { CalibrationScores } from './bundle/calibration-scores';
import type { Manifest } from './bundle/manifest';
import { calibrationAt } from './calibration';
import { imageScore, SCORES, type ScoreComponents, type ScoreDefinition } from './scores';

/** Detector's `driftWindow` default: passed parts per window. */
export const DEFAULT_DRIFT_WINDOW = 1000;
/** Detector's `driftAlpha` default: the KS p-value below which `onDrift` fires. */
export const DEFAULT_DRIFT_ALPHA = 0.001;
/** The smallest window (other than 0, off): below about 20 parts a KS test sees only gross shifts. */
export const MIN_DRIFT_WINDOW = 20;
/** The largest window (the KS check sorts it every window/10 parts). */
export const MAX_DRIFT_WINDOW = 1_000_000;
/** The quantiles of passed scores the report compares. */
export const DRIFT_QUANTILES: readonly number[] = [0.5, 0.9, 0.99];
/** Fewest passing calibration normals for a KS test: with fewer its asymptotic p-value means little. */
export const MIN_DRIFT_REFERENCE = 10;
/** The alarm re-arms once the p-value is at least this many times alpha. */
export const DRIFT_REARM_FACTOR = 10;
/** The band below the threshold that the window's false-alarm estimate reads: the top fifth of the passing normals. */
const ESTIMATE_BAND = 0.2;

/** What the detector compares the line with, at one S. */
export type DriftReference =
  | {
      source: 'calibration.json';
      /** the held-out normals' image scores under the detector's definition, ascending */
      scores: Float64Array;
    }
  | {
      source: 'manifest';
      /** held-out normals behind the manifest's calibration */
      normals: number;
      /** why the normals' scores are not at hand */
      note: string;
    };

/** What one S of a detector is monitored against. */
export interface DriftSetup {
  manifest: Pick<Manifest, 'calibration'>;
  /** the bundle's calibration.json, when it has one */
  calibrationScores: CalibrationScores | undefined;
  steps: number;
  definition: ScoreDefinition;
  /** the image threshold at S (null: nothing is flagged) */
  threshold: number | null;
  /** the caller set the threshold (Detector's `threshold` option), so the bundle's target rate does not apply */
  thresholdOverridden: boolean;
}

/**
 * The reference sample for S: the held-out normals of calibration.json scored under the
 * definition with S's normalization, as Detector scores parts. Out-of-fold training normals are
 * left out: the UNet saw them, and they come from fold Gaussians, not the bundle's. Without
 * such normals, the manifest's figures stand in (see the module comment); without a
 * calibration at all, there is nothing to compare with.
 */
export function driftReference(setup: DriftSetup): DriftReference | { unavailable: string } {
  const cal = setup.manifest.calibration;
  if (cal.status !== 'calibrated') return { unavailable: 'the bundle is not calibrated: it holds no normals to compare the line with (run invad calibrate)' };
  const parts = SCORES[setup.definition].parts;
  const entry = setup.calibrationScores?.bySteps.find((s) => s.steps === setup.steps);
  const held = (entry?.samples ?? []).filter((s) => s.source === 'held-out' && parts.every((p) => (s as ScoreComponents)[p] !== undefined));
  if (held.length > 0) {
    const normalization = calibrationAt(cal, setup.steps) ?? cal;
    return { source: 'calibration.json', scores: Float64Array.from(held, (s) => imageScore(setup.definition, s, normalization)).sort() };
  }
  const note = !setup.calibrationScores
    ? "the bundle has no calibration.json (calibrated by an older invad), and its manifest keeps no normals' scores; re-run invad calibrate to store them"
    : !entry
      ? `the bundle's calibration.json has no normals scored at S = ${setup.steps}`
      : `the bundle's calibration.json has no held-out normals with the parts of the ${setup.definition} score at S = ${setup.steps}`;
  if (setup.threshold === null) return { unavailable: `${note}, and there is no image threshold at S = ${setup.steps} to compare the flag rate with` };
  return { source: 'manifest', normals: cal.samples, note };
}

/** One quantile of passed scores: the window's and the passing calibration normals'. */
export interface DriftQuantile {
  q: number;
  /** null while the window is empty */
  window: number | null;
  /** null without calibration.json */
  calibration: number | null;
}

/**
 * False-alarm rates at the threshold t. With n calibration normals of which k are at or below t,
 * a new normal exchangeable with them exceeds t with probability (n - k + 1) / (n + 1): that is
 * `calibration`. `estimated` asks the same of the line's current good parts, from passed parts
 * only (flagged parts mix false alarms and real defects, which cannot be told apart unlabelled):
 * take the band B = (u, t], u the 80th percentile of the passing normals, and assume that the
 * line's score density relative to the normals' is constant on B and above t (a shift or a
 * widening that moves mass towards t moves it past t in the same proportion). With
 * rho = (n - k + 1) / (normals in B) and g = (window parts in B) / (window size), the line's
 * rate x solves x = rho g (1 - x): x = rho g / (1 + rho g). Without drift, g ~ (normals in B) / k
 * and x ~ `calibration`. When scores move up and the line's density relative to the normals'
 * grows with the score (a location shift of a log-concave distribution, for one), the ratio
 * above t exceeds that on B, so `estimated` is then a lower bound and `flagged.rate` an upper
 * one. On the demo bundle at +10% brightness (test/drift.test.ts, all parts good) it read 2.3%
 * while 9% of the last 100 parts were flagged.
 */
export interface DriftFalseAlarm {
  /** the rate the bundle's threshold was set for; null for an F1-max or caller-set threshold */
  target: number | null;
  /** (n - k + 1) / (n + 1), see above; null without calibration.json or threshold */
  calibration: number | null;
  /** the window's estimate, see above; null without calibration.json, threshold, passed parts or normals in B */
  estimated: number | null;
  /**
   * Among the last `window` scored parts (passed or not): how many, how many were flagged and
   * their share. Real defects count too, so `rate` is an upper bound on the false-alarm rate.
   */
  flagged: { parts: number; flagged: number; rate: number | null };
}

/** The alarm's state and settings. */
export interface DriftAlarmState {
  /** the KS p-value below which `onDrift` fires */
  alpha: number;
  /** after firing, the alarm re-arms once a check's p-value is at least this (10 x alpha) */
  rearmAt: number;
  /** fired and not yet re-armed */
  active: boolean;
  /** how many times it fired */
  fired: number;
  /** KS checks so far: one each time `checkEvery` more parts have been passed, from 20 passed parts on */
  checks: number;
  checkEvery: number;
  /** the last check: passed parts so far, and its p-value */
  lastCheck: { passedParts: number; pValue: number } | null;
}

/** info().drift for one S while drift is monitored. */
export interface DriftReport {
  status: 'monitoring' | 'alarm';
  steps: number;
  scoreDefinition: ScoreDefinition;
  threshold: number | null;
  reference: { source: 'calibration.json'; normals: number; passing: number } | { source: 'manifest'; normals: number; note: string };
  /** the window of passed parts: capacity, how many it holds, and all passed parts seen */
  window: { capacity: number; size: number; passedParts: number };
  quantiles: DriftQuantile[];
  /** the window against the passing normals; null with the reason in `ksNote` */
  ks: KsResult | null;
  ksNote: string | null;
  falseAlarm: DriftFalseAlarm;
  alarm: DriftAlarmState;
}

/** info().drift: a report, or why there is none. */
export type DriftInfo = DriftReport | { status: 'disabled'; reason: string } | { status: 'unavailable'; steps: number; reason: string };

/** What `onDrift` receives when the alarm fires. */
export interface DriftEvent {
  steps: number;
  statistic: number;
  pValue: number;
  alpha: number;
  /** passed parts at S since the detector loaded */
  passedParts: number;
  report: DriftReport;
}

export type DriftCallback = (event: DriftEvent) => void | Promise<void>;

export interface DriftMonitorOptions {
  /** passed parts in the window, MIN_DRIFT_WINDOW to MAX_DRIFT_WINDOW */
  window: number;
  alpha: number;
  onDrift?: DriftCallback;
}

/** A fixed-capacity ring of the latest numbers. */
class Ring {
  private readonly buf: Float64Array;
  private next = 0;
  size = 0;
  constructor(capacity: number) {
    this.buf = new Float64Array(capacity);
  }
  /** Adds v; returns the value it pushed out, or undefined while not full. */
  push(v: number): number | undefined {
    const old = this.size === this.buf.length ? this.buf[this.next] : undefined;
    this.buf[this.next] = v;
    this.next = (this.next + 1) % this.buf.length;
    this.size = Math.min(this.size + 1, this.buf.length);
    return old;
  }
  sorted(): Float64Array {
    return this.buf.slice(0, this.size).sort();
  }
}

/** How many of the ascending `sorted` are <= v. */
function countAtMost(sorted: ArrayLike<number>, v: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid] <= v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * The drift statistics of a window of passed scores against the reference sample, both
 * ascending: quantiles, KS and the calibration's and the window's false-alarm rates (see
 * {@link DriftFalseAlarm}). Pure. `threshold` null means nothing was flagged (no cut).
 */
export function driftStatistics(
  window: Float64Array,
  reference: Float64Array,
  threshold: number | null,
): { quantiles: DriftQuantile[]; ks: KsResult | null; ksNote: string | null; passing: number; calibration: number | null; estimated: number | null } {
  const n = reference.length;
  const k = threshold === null ? n : countAtMost(reference, threshold);
  const passing = reference.subarray(0, k);
  const quantiles = DRIFT_QUANTILES.map((q) => ({
    q,
    window: window.length ? quantileSorted(window, q) : null,
    calibration: k ? quantileSorted(passing, q) : null,
  }));
  let ksNote: string | null = null;
  if (window.length < MIN_DRIFT_WINDOW) ksNote = `the window holds ${window.length} passed parts; the KS test starts at ${MIN_DRIFT_WINDOW}`;
  else if (k < MIN_DRIFT_REFERENCE) ksNote = `only ${k} calibration normals pass the threshold; the KS test needs at least ${MIN_DRIFT_REFERENCE}`;
  const ks = ksNote === null ? ksTwoSample(window, passing) : null;
  if (threshold === null || n === 0) return { quantiles, ks, ksNote, passing: k, calibration: null, estimated: null };
  const calibration = (n - k + 1) / (n + 1);
  const u = quantileSorted(passing, 1 - ESTIMATE_BAND);
  const inBandRef = k - countAtMost(passing, u);
  let estimated: number | null = null;
  if (window.length > 0 && inBandRef > 0 && k > 0) {
    const g = (window.length - countAtMost(window, u)) / window.length;
    const rhoG = ((n - k + 1) / inBandRef) * g;
    estimated = rhoG / (1 + rhoG);
  }
  return { quantiles, ks, ksNote, passing: k, calibration, estimated };
}

/**
 * Watches one S of a detector: a window of the last `window` passed scores, a window of the
 * last `window` decisions (passed or flagged), and the alarm. `record` never throws: an
 * `onDrift` that throws or rejects becomes a process warning (code INVAD_DRIFT_CALLBACK).
 */
export class DriftMonitor {
  private readonly passed: Ring;
  /** 1 for a flagged part, 0 for a passed one */
  private readonly decisions: Ring;
  private flaggedInWindow = 0;
  private passedParts = 0;
  private sinceCheck = 0;
  private readonly checkEvery: number;
  private readonly alarm: DriftAlarmState;

  constructor(
    private readonly setup: DriftSetup,
    private readonly reference: DriftReference,
    private readonly options: DriftMonitorOptions,
  ) {
    this.passed = new Ring(options.window);
    this.decisions = new Ring(options.window);
    this.checkEvery = Math.ceil(options.window / 10);
    this.alarm = {
      alpha: options.alpha,
      rearmAt: Math.min(1, DRIFT_REARM_FACTOR * options.alpha),
      active: false,
      fired: 0,
      checks: 0,
      checkEvery: this.checkEvery,
      lastCheck: null,
    };
  }

  /** Records one scored part; checks the alarm when K more parts have been passed since the last check. */
  record(score: number, flagged: boolean): void {
    this.flaggedInWindow += (flagged ? 1 : 0) - (this.decisions.push(flagged ? 1 : 0) ?? 0);
    if (flagged) return;
    this.passed.push(score);
    this.passedParts++;
    if (++this.sinceCheck >= this.checkEvery && this.reference.source === 'calibration.json' && this.passed.size >= MIN_DRIFT_WINDOW) {
      this.sinceCheck = 0;
      this.check();
    }
  }

  private check(): void {
    const report = this.report();
    if (!report.ks) return;
    const { pValue, statistic } = report.ks;
    this.alarm.checks++;
    this.alarm.lastCheck = { passedParts: this.passedParts, pValue };
    if (this.alarm.active) {
      if (pValue >= this.alarm.rearmAt) this.alarm.active = false;
      return;
    }
    if (!(pValue < this.alarm.alpha)) return;
    this.alarm.active = true;
    this.alarm.fired++;
    const onDrift = this.options.onDrift;
    if (!onDrift) return;
    // Fired after the state change, so the event's report says 'alarm'.
    const event: DriftEvent = { steps: this.setup.steps, statistic, pValue, alpha: this.alarm.alpha, passedParts: this.passedParts, report: this.report() };
    const warn = (err: unknown) =>
      process.emitWarning(`invad: the onDrift callback failed (S = ${this.setup.steps}): ${err instanceof Error ? err.message : String(err)}`, {
        code: 'INVAD_DRIFT_CALLBACK',
        detail: err instanceof Error ? err.stack : undefined,
      });
    try {
      // unknown: a JavaScript caller's callback may return any thenable
      const r: unknown = onDrift(event);
      if (typeof (r as PromiseLike<unknown> | null | undefined)?.then === 'function') Promise.resolve(r).catch(warn);
    } catch (err) {
      warn(err);
    }
  }

  report(): DriftReport {
    const window = this.passed.sorted();
    const parts = this.decisions.size;
    const flagged = { parts, flagged: this.flaggedInWindow, rate: parts ? this.flaggedInWindow / parts : null };
    const { setup, reference } = this;
    const cal = setup.manifest.calibration;
    const target = setup.thresholdOverridden || setup.threshold === null || cal.imageThresholdMethod === 'f1-max' ? null : cal.falseAlarmRate;
    const base = {
      status: this.alarm.active ? ('alarm' as const) : ('monitoring' as const),
      steps: setup.steps,
      scoreDefinition: setup.definition,
      threshold: setup.threshold,
      window: { capacity: this.options.window, size: window.length, passedParts: this.passedParts },
      alarm: { ...this.alarm, lastCheck: this.alarm.lastCheck && { ...this.alarm.lastCheck } },
    };
    if (reference.source === 'manifest') {
      return {
        ...base,
        reference: { source: 'manifest', normals: reference.normals, note: reference.note },
        quantiles: DRIFT_QUANTILES.map((q) => ({ q, window: window.length ? quantileSorted(window, q) : null, calibration: null })),
        ks: null,
        ksNote: `no KS test and no alarm: ${reference.note}`,
        falseAlarm: { target, calibration: null, estimated: null, flagged },
      };
    }
    const s = driftStatistics(window, reference.scores, setup.threshold);
    return {
      ...base,
      reference: { source: 'calibration.json', normals: reference.scores.length, passing: s.passing },
      quantiles: s.quantiles,
      ks: s.ks,
      ksNote: s.ksNote,
      falseAlarm: { target, calibration: s.calibration, estimated: s.estimated, flagged },
    };
  }
}

/** A monitor for one S, or why there is none. */
export function driftMonitor(setup: DriftSetup, options: DriftMonitorOptions): DriftMonitor | { unavailable: string } {
  const reference = driftReference(setup);
  return 'unavailable' in reference ? reference : new DriftMonitor(setup, reference, options);
}

const pct = (v: number | null) => (v === null ? '-' : `${+(v * 100).toPrecision(3)}%`);
const num = (v: number | null) => (v === null ? '-' : +v.toPrecision(4) + '');

/** A few lines for people (invad score, invad bench --scenario line). */
export function formatDrift(d: DriftInfo): string {
  if (d.status === 'disabled') return `drift: off (${d.reason})`;
  if (d.status === 'unavailable') return `drift (S = ${d.steps}): unavailable: ${d.reason}`;
  const ref =
    d.reference.source === 'calibration.json'
      ? `${d.reference.normals} held-out normals in calibration.json, ${d.reference.passing} at or below the threshold`
      : `the manifest (${d.reference.normals} normals, no scores)`;
  const q = d.quantiles.map((x) => `p${x.q * 100} ${num(x.window)}${x.calibration === null ? '' : ` (${num(x.calibration)})`}`).join(', ');
  const ks = d.ks
    ? `KS D = ${num(d.ks.statistic)}, p = ${d.ks.pValue.toPrecision(3)}; alarm below ${d.alarm.alpha}: ${d.status === 'alarm' ? 'DRIFT ALARM' : 'no alarm'} (fired ${d.alarm.fired} time${d.alarm.fired === 1 ? '' : 's'} in ${d.alarm.checks} checks, one every ${d.alarm.checkEvery} passed parts)`
    : `KS: ${d.ksNote ?? 'none'}`;
  const f = d.falseAlarm;
  return [
    `drift (S = ${d.steps}, ${d.scoreDefinition}): ${d.window.size} passed parts in the window (capacity ${d.window.capacity}) against ${ref}`,
    `  passed-part scores: ${q}${d.reference.source === 'calibration.json' ? ' (calibration normals in brackets)' : ''}`,
    `  ${ks}`,
    `  false alarms: target ${pct(f.target)}, calibration ${pct(f.calibration)}, estimated for the window ${pct(f.estimated)}; flagged ${f.flagged.flagged} of the last ${f.flagged.parts} parts (${pct(f.flagged.rate)}, real defects included)`,
  ].join('\n');
}
