/** The runtime's view of a bundle's calibration: which entry applies at a given S. Fitting it is in fit/calibrate. */
import type { CalibrationSpec, Manifest, ScoreDefinition, StepCalibration } from './bundle/manifest';

/** The calibration that applies at S: its own entry if there is one, else the top-level fields. */
export function calibrationAt(cal: CalibrationSpec, steps: number): StepCalibration | undefined {
  return cal.bySteps?.find((s) => s.steps === steps);
}

/**
 * The image threshold of `definition` at S: the calibration entry for S, else the top-level
 * `imageThreshold` when S and the definition are the bundle's defaults, else null (no threshold
 * there: nothing is flagged). Detector and the one-graph export both read it from here.
 */
export function imageThresholdAt(m: Pick<Manifest, 'calibration' | 'schedule' | 'score'>, steps: number, definition: ScoreDefinition): number | null {
  const entry = calibrationAt(m.calibration, steps);
  if (entry) return entry.imageThresholds[definition] ?? null;
  const isDefault = steps === m.schedule.defaultSteps && definition === m.score.definition;
  return isDefault ? m.calibration.imageThreshold : null;
}
