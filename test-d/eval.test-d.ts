/** Type tests of `invad/eval`: evaluation, the report and test sets. */
import { expectTypeOf } from 'expect-type';
import {
  type CalibrationRule,
  type DecisionReport,
  type EvalReport,
  type EvaluateOptions,
  type TestItem,
  decisionMarkdown,
  evaluate,
  loadTestSet,
  writeReport,
} from 'invad/eval';
import { calibratePool, poolsOutOfFold } from 'invad/fit';

const options: EvaluateOptions = { dataset: 'mvtec/bottle', model: 'model', steps: [2, 3], mode: 'inversion', out: 'report' };
expectTypeOf(evaluate(options)).resolves.toEqualTypeOf<EvalReport>();
// @ts-expect-error the dataset is required
void evaluate({ model: 'model' });
// @ts-expect-error not an evaluation mode
const badMode: EvaluateOptions = { dataset: 'd', model: 'm', mode: 'denoise' };
void badMode;
// @ts-expect-error steps is a list
const badSteps: EvaluateOptions = { dataset: 'd', model: 'm', steps: 3 };
void badSteps;

declare const report: EvalReport;
expectTypeOf(report.rows).toBeArray();
expectTypeOf(report.notes).toEqualTypeOf<string[]>();
expectTypeOf(writeReport('out', report)).resolves.toBeObject();
expectTypeOf(loadTestSet('mvtec/bottle')).resolves.toEqualTypeOf<TestItem[]>();

// The operating points' threshold rule is fit's own: calibratePool and poolsOutOfFold fit CalibrationRule as they are.
const rule: CalibrationRule = { calibrate: calibratePool, poolsOutOfFold };
expectTypeOf(
  evaluate({ dataset: 'd', model: 'm', calibrationRule: rule, calibrationNormals: ['n.png'], operatingRates: [0.01] }),
).resolves.toEqualTypeOf<EvalReport>();
expectTypeOf(report.decisions).toEqualTypeOf<DecisionReport | undefined>();
expectTypeOf(decisionMarkdown).parameter(0).toEqualTypeOf<DecisionReport>();
