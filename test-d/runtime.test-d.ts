/**
 * Type tests of `invad` (the runtime entry): what a user's code may and may not write.
 * Checked by `npm run test:types` against the built declarations; never run.
 */
import { expectTypeOf } from 'expect-type';
import {
  Detector,
  DisposedError,
  InvadError,
  InvalidArgumentError,
  type DetectorInfo,
  type DetectorOptions,
  type ExecutionProvider,
  type ImageInput,
  type InvadErrorCode,
  type Manifest,
  type RawImage,
  type ScoreComponents,
  type ScoreDefinition,
  type ScoreResult,
  type ThreadSpinning,
  alphasCumprod,
  inversionSteps,
  loadBundle,
  validateManifest,
} from 'invad';

declare const det: Detector;
declare const png: Uint8Array;

// Loading: a static factory, not a constructor.
expectTypeOf(Detector.load).parameters.toEqualTypeOf<[dir: string, options?: DetectorOptions]>();
expectTypeOf(Detector.load('model')).resolves.toEqualTypeOf<Detector>();
// @ts-expect-error the constructor is private: Detector.load() opens the bundle and the engine
new Detector();

// Options are checked, not just any object.
const options: DetectorOptions = { executionProviders: ['cuda', 'cpu'], steps: 3, maxBatchSize: 8, threadSpinning: 'unet' };
void options;
// @ts-expect-error not an execution provider
const badProvider: DetectorOptions = { executionProviders: ['gpu'] };
void badProvider;
// @ts-expect-error not a ThreadSpinning mode
const badSpinning: DetectorOptions = { threadSpinning: true };
void badSpinning;
expectTypeOf<ThreadSpinning>().toEqualTypeOf<'none' | 'unet' | 'all'>();
expectTypeOf<'cpu'>().toMatchTypeOf<ExecutionProvider>();

// Inputs: a path, encoded bytes or raw pixels.
expectTypeOf<string>().toMatchTypeOf<ImageInput>();
expectTypeOf<Buffer>().toMatchTypeOf<ImageInput>();
expectTypeOf<RawImage>().toMatchTypeOf<ImageInput>();
// @ts-expect-error RawImage channels are 1 to 4
const badRaw: RawImage = { data: new Uint8Array(4), width: 1, height: 1, channels: 5 };
void badRaw;
// @ts-expect-error a number is no image
void det.score(42);

// Scoring.
expectTypeOf(det.score(png)).resolves.toEqualTypeOf<ScoreResult>();
expectTypeOf(det.score('a.png', { steps: 2 })).resolves.toEqualTypeOf<ScoreResult>();
expectTypeOf<ScoreResult['score']>().toEqualTypeOf<number>();
expectTypeOf<ScoreResult['isAnomalous']>().toEqualTypeOf<boolean>();
expectTypeOf<ScoreResult['threshold']>().toEqualTypeOf<number | null>();
expectTypeOf<ScoreResult['map']>().toEqualTypeOf<Float32Array>();
expectTypeOf<ScoreResult['components']>().toEqualTypeOf<ScoreComponents>();

// scoreBatch: 'throw' (the default) resolves to results only, 'collect' to results or errors.
expectTypeOf(det.scoreBatch(['a.png', png])).resolves.toEqualTypeOf<ScoreResult[]>();
expectTypeOf(det.scoreBatch(['a.png'], { errors: 'throw' })).resolves.toEqualTypeOf<ScoreResult[]>();
expectTypeOf(det.scoreBatch(['a.png'], { errors: 'collect' })).resolves.toEqualTypeOf<Array<ScoreResult | InvadError>>();
// @ts-expect-error not an error mode
void det.scoreBatch(['a.png'], { errors: 'ignore' });

// Info and lifetime.
expectTypeOf(det.info()).toEqualTypeOf<DetectorInfo>();
expectTypeOf(det.threshold).toEqualTypeOf<number | null>();
expectTypeOf(det.scoreDefinition).toEqualTypeOf<ScoreDefinition>();
expectTypeOf(det.dispose()).resolves.toBeVoid();
// @ts-expect-error the manifest is private
void det.manifest;
// @ts-expect-error the batcher is private
void det.batcher;

// Score definitions are a closed set.
expectTypeOf<'latent-gaussian'>().toMatchTypeOf<ScoreDefinition>();
expectTypeOf<'combined'>().toMatchTypeOf<ScoreDefinition>();
// @ts-expect-error not a score definition
const badDefinition: ScoreDefinition = 'gaussian';
void badDefinition;

// Typed errors.
expectTypeOf<InvalidArgumentError>().toMatchTypeOf<InvadError>();
expectTypeOf<DisposedError>().toMatchTypeOf<InvadError>();
expectTypeOf<InvadError>().toMatchTypeOf<Error>();
expectTypeOf<InvadError['code']>().toEqualTypeOf<InvadErrorCode>();
expectTypeOf<InvalidArgumentError['argument']>().toEqualTypeOf<string>();
expectTypeOf<'ERR_INVAD_INVALID_ARGUMENT'>().toMatchTypeOf<InvadErrorCode>();
// @ts-expect-error codes are a closed set
const badCode: InvadErrorCode = 'ERR_SOMETHING';
void badCode;

// Bundles and the schedule.
expectTypeOf(loadBundle('model')).resolves.toHaveProperty('manifest').toEqualTypeOf<Manifest>();
expectTypeOf(validateManifest).guards.toEqualTypeOf<Manifest>();
expectTypeOf(alphasCumprod()).toEqualTypeOf<Float64Array>();
expectTypeOf(inversionSteps(3)).toBeArray();
