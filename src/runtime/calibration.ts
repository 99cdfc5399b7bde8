/** The runtime's view of a bundle's calibration: which entry applies at a given S. Fitting it is in fit/calibrate. */
import type { CalibrationSpec, StepCalibration } from './bundle/manifest';

/** The calibration that applies at S: its own entry if there is one, else the top-level fields. */
export function calibrationAt(cal: CalibrationSpec, steps: number): StepCalibration | undefined {
  return cal.bySteps?.find((s) => s.steps === steps);
}
