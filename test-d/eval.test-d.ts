/** Type tests of `invad/eval`: evaluation, the report and test sets. */
import { expectTypeOf } from 'expect-type';
import { type EvalReport, type EvaluateOptions, type TestItem, evaluate, loadTestSet, writeReport } from 'invad/eval';

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
