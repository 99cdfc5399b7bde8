/**
 * Type tests of the exports map: the four entry points resolve, the runtime entry does not
 * carry the tooling, and deep imports into dist/ are refused as they are at run time.
 */
import type * as runtime from 'invad';
import type * as fitEntry from 'invad/fit';
import type * as evalEntry from 'invad/eval';
import type * as metricsEntry from 'invad/metrics';
import type * as pkg from 'invad/package.json';
import { expectTypeOf } from 'expect-type';

expectTypeOf<typeof runtime>().toHaveProperty('Detector');
expectTypeOf<typeof fitEntry>().toHaveProperty('fit');
expectTypeOf<typeof evalEntry>().toHaveProperty('evaluate');
expectTypeOf<typeof metricsEntry>().toHaveProperty('auroc');
expectTypeOf<typeof pkg>().toHaveProperty('name');

// The runtime entry is the runtime only: fitting, evaluation and metrics have their own entries.
// @ts-expect-error fit is in 'invad/fit'
import { fit } from 'invad';
// @ts-expect-error writeBundle is in 'invad/fit'
import { writeBundle } from 'invad';
// @ts-expect-error calibrateStep is in 'invad/fit'
import { calibrateStep } from 'invad';
// @ts-expect-error evaluate is in 'invad/eval'
import { evaluate } from 'invad';
// @ts-expect-error the metrics are in 'invad/metrics'
import { auroc } from 'invad';

// Files under dist/ are not public API: the exports map refuses them.
// @ts-expect-error not in the exports map
import type { Detector as DeepDetector } from 'invad/dist/src/runtime/detector';
// @ts-expect-error not in the exports map
import type { fit as deepFit } from 'invad/dist/src/fit';
// @ts-expect-error no such entry point
import type * as tools from 'invad/tools';

void [fit, writeBundle, calibrateStep, evaluate, auroc];
export type Unused = [DeepDetector, typeof deepFit, typeof tools];
