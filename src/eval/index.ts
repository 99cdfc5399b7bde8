/** `invad/eval`: evaluation of a bundle on a labelled test set, with the HTML report. */
export { evaluate } from './evaluate';
export type { EvaluateOptions } from './evaluate';
export { writeReport } from './report/write';
export type * from './report/types';
export { bundleTarget, measureDecisions, measureLabelledDecisions, OPERATING_RATES, poolFromCalibrationScores } from './decision';
export type { CalibrationRule, DecisionInput, LabelledDecisionOptions, LabelledParts, NormalPool } from './decision';
export { decisionMarkdown } from './report/decision-text';
export { loadTestSet } from './dataset';
export type { TestItem } from './dataset';
