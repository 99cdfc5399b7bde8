/**
 * An ES module consumer: the CommonJS entry points' named exports are typed from `import`.
 */
import { expectTypeOf } from 'expect-type';
import { Detector, InvadError } from 'invad';
import { fit } from 'invad/fit';
import { evaluate } from 'invad/eval';
import { auroc } from 'invad/metrics';

expectTypeOf(Detector.load).returns.resolves.toEqualTypeOf<Detector>();
expectTypeOf<InvadError>().toMatchTypeOf<Error>();
expectTypeOf(fit).toBeFunction();
expectTypeOf(evaluate).toBeFunction();
expectTypeOf(auroc).returns.toEqualTypeOf<number>();
