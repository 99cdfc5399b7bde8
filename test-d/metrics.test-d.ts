/** Type tests of `invad/metrics`: pure functions over typed arrays. */
import { expectTypeOf } from 'expect-type';
import {
  type Components,
  type F1Max,
  type PrecisionRecallCurve,
  type ProCurve,
  type RocCurve,
  PixelMetricsAccumulator,
  ProAccumulator,
  auroc,
  averagePrecision,
  connectedComponents,
  f1Max,
  pixelAurocExact,
  precisionRecallCurve,
  rocCurve,
} from 'invad/metrics';

const scores = new Float32Array([0.1, 0.9]);
// Labels may be numbers or booleans, in any array-like.
expectTypeOf(auroc(scores, [0, 1])).toEqualTypeOf<number>();
expectTypeOf(auroc([0.1, 0.9], [false, true])).toEqualTypeOf<number>();
expectTypeOf(averagePrecision(scores, new Uint8Array([0, 1]))).toEqualTypeOf<number>();
expectTypeOf(rocCurve(scores, [0, 1])).toEqualTypeOf<RocCurve>();
expectTypeOf<RocCurve['fpr']>().toEqualTypeOf<Float64Array>();
expectTypeOf(precisionRecallCurve(scores, [0, 1])).toEqualTypeOf<PrecisionRecallCurve>();
expectTypeOf(f1Max(scores, [0, 1])).toEqualTypeOf<F1Max>();
expectTypeOf<F1Max>().toEqualTypeOf<{ f1: number; threshold: number }>();
// @ts-expect-error labels are numbers or booleans
auroc(scores, ['good', 'bad']);
// @ts-expect-error scores are numbers
auroc(['0.1', '0.9'], [0, 1]);

expectTypeOf(connectedComponents(new Uint8Array(4), 2, 2)).toEqualTypeOf<Components>();
// @ts-expect-error masks are Uint8Array
connectedComponents([0, 1, 1, 0], 2, 2);

const pro = new ProAccumulator({ bins: 1000 });
pro.add(scores, new Uint8Array(2), 2, 1);
expectTypeOf(pro.aupro(0.3)).toEqualTypeOf<number>();
expectTypeOf(pro.curve()).toEqualTypeOf<ProCurve>();
// @ts-expect-error mode is read-only
pro.mode = 'exact';

// The pixel accumulator needs its score range up front.
const pixel = new PixelMetricsAccumulator({ range: [0, 1] });
pixel.add(scores, [0, 1]);
expectTypeOf(pixel.auroc()).toEqualTypeOf<number>();
// @ts-expect-error the range is required
new PixelMetricsAccumulator({});
expectTypeOf(pixelAurocExact([scores], [new Uint8Array(2)])).toEqualTypeOf<number>();
