/** `invad fit`: a model bundle from a folder of normal images. */
import { Command, Option } from 'commander';
import { BACKBONE_PRESETS, MODELS_DIR_ENV } from '../../../fit/backbones';
import { DEFAULT_SCORE_DEFINITION, SCORE_DEFINITIONS, SCORES, type ScoreDefinition } from '../../../runtime/scores';
import { FEATURE_NORMALIZATIONS, type FeatureNormalization, fit, type FitEvent } from '../../../fit/fit';
import { UNET_PRESETS, type UnetPreset } from '../../../fit/trainer/runner';
import { EXIT_INPUT_FAILED } from '../exit';
import { makeProgress, type Progress } from '../progress';
import { parsePositiveInt, parseProviders } from './score';
import { deprecatedAlias } from './backbone';

/** The --score help, from the table of score definitions. */
function scoreHelp(): string {
  const { withLatent, withoutLatent } = DEFAULT_SCORE_DEFINITION;
  const each = SCORE_DEFINITIONS.map((d) => `${d}: ${SCORES[d].summary}`).join('; ');
  return `score definition written to the bundle (default: ${withLatent}, or ${withoutLatent} when --steps is outside 2..5); ${each}`;
}

interface FitCommandOptions {
  normal: string;
  backbone?: string;
  backbonePreset?: string;
  backboneModel?: string;
  taps?: string;
  grid?: number;
  out: string;
  unetPreset: UnetPreset;
  /** deprecated alias of unetPreset */
  preset?: UnetPreset;
  epochs?: number;
  batchSize?: number;
  lr?: number;
  seed: number;
  valFraction: number;
  steps: number;
  featureNormalization?: FeatureNormalization;
  featureScale?: number;
  score?: ScoreDefinition;
  /** a fold count, false for --no-out-of-fold, undefined for the default */
  outOfFold?: number | false;
  mapSmoothing?: number;
  resume?: boolean;
  strict?: boolean;
  overwrite?: boolean;
  workDir?: string;
  python?: string;
  device: 'auto' | 'cpu' | 'cuda';
  maxMinutes?: number;
  providers: ReturnType<typeof parseProviders>;
  verbose?: boolean;
}

const say = (line: string) => process.stderr.write(line + '\n');

/** Renders fit's progress events: bars on a terminal, plain lines otherwise. */
function reporter(verbose: boolean): (e: FitEvent) => void {
  let bar: Progress | undefined;
  let barKey = '';
  const endBar = () => {
    bar?.stop();
    bar = undefined;
    barKey = '';
  };
  return (e) => {
    switch (e.stage) {
      case 'split':
        say(`split: ${e.train} images to train on, ${e.val} held out for validation and calibration`);
        break;
      case 'backbone':
        say(
          `backbone: features ${e.featureShape.channels} x ${e.featureShape.height} x ${e.featureShape.width} from taps ${e.taps.map((t) => `${t.name} (${t.channels} ch, stride ${t.stride})`).join(', ')}`,
        );
        break;
      case 'extract':
        if (barKey !== e.split) {
          endBar();
          bar = makeProgress(e.total, `features (${e.split})`);
          barKey = e.split;
        }
        bar?.update(e.done);
        if (e.done === e.total) endBar();
        break;
      case 'skipped':
        say(`skipped ${e.files.length} unreadable image(s):\n${e.files.map((f) => `  ${f.file}: ${f.error}`).join('\n')}`);
        break;
      case 'train-start':
        say(`training: ${(e.params / 1e6).toFixed(2)} M parameters on ${e.device}, ${e.epochs} epochs`);
        break;
      case 'epoch':
        say(
          `epoch ${e.epoch}/${e.epochs}  loss ${e.loss.toFixed(5)}  val ${e.valLoss.toFixed(5)}  lr ${e.lr.toExponential(2)}  ${e.imagesPerS.toFixed(1)} img/s`,
        );
        break;
      case 'export':
        say(`export: onnxruntime-node vs PyTorch max abs diff ${e.parityMaxAbsDiff.toExponential(2)}`);
        break;
      case 'calibrate': {
        const oof = e.calibration.outOfFold;
        say(
          `calibrated on ${e.samples} held-out normals${oof ? ` (and ${oof.samples} training normals out of fold, ${oof.folds} folds, for the latent-Gaussian part)` : ''}: image threshold ${e.calibration.imageThreshold?.toFixed(4)}`,
        );
        for (const w of e.calibration.warnings ?? []) say(`warning: ${w}`);
        break;
      }
      case 'log':
        if (verbose) say(`  ${e.message}`);
        break;
    }
  };
}

export function fitCommand(): Command {
  return new Command('fit')
    .description('Build a model bundle from a folder of normal images: backbone, features, UNet training (PyTorch), export, calibration')
    .requiredOption('-n, --normal <dir>', 'folder of normal (defect-free) images, searched recursively')
    .addOption(new Option('-b, --backbone-preset <name>', 'backbone preset (also --backbone)').choices(Object.keys(BACKBONE_PRESETS)))
    .addOption(new Option('--backbone <name>').choices(Object.keys(BACKBONE_PRESETS)).hideHelp())
    .option('--backbone-model <file>', `the classifier ONNX to tap (default: the preset's model file in $${MODELS_DIR_ENV}, then ./models)`)
    .option('--taps <names>', "comma-separated tensor names to tap, fine to coarse (default: the preset's)")
    .option(
      '--grid <n>',
      "feature grid: every tap resized to n x n, e.g. 28 (stride 8 at 224 px) for finer maps; recorded in the bundle (default: the coarsest tap's, 14 for mobilenetv2-int8)",
      parsePositiveInt,
    )
    .requiredOption('-o, --out <dir>', 'bundle folder to write')
    .addOption(new Option('--unet-preset <name>', 'UNet size').choices([...UNET_PRESETS]).default('small'))
    .addOption(new Option('--preset <name>', 'deprecated: use --unet-preset').choices([...UNET_PRESETS]).hideHelp())
    .option('--epochs <n>', "training epochs (default: the preset's)", parsePositiveInt)
    .option('--batch-size <n>', "training batch size (default: the preset's)", parsePositiveInt)
    .option('--lr <rate>', "peak learning rate (default: the preset's)", Number)
    .option('--seed <n>', 'seed for the split and training', Number, 0)
    .option('--val-fraction <f>', 'share of images held out for validation and calibration', Number, 0.1)
    .option('--steps <n>', 'default inversion steps S written to the bundle', parsePositiveInt, 3)
    .addOption(
      new Option('--feature-normalization <kind>', "train on the backbone's raw features (default), or standardize each channel").choices([
        ...FEATURE_NORMALIZATIONS,
      ]),
    )
    .option('--feature-scale <s>', 'standardize each feature channel to this standard deviation', Number)
    .addOption(new Option('--score <definition>', scoreHelp()).choices([...SCORE_DEFINITIONS]))
    .option(
      '--out-of-fold <k>',
      "score each training normal under a latent Gaussian fitted on the other k - 1 folds, and pool these scores with the held-out normals' for the latent-Gaussian threshold (default 5)",
      parsePositiveInt,
    )
    .option('--no-out-of-fold', 'calibrate on the held-out normals only')
    .option(
      '--map-smoothing <sigma>',
      'blur every upsampled anomaly map with a Gaussian of sigma pixels at the model input (PaDiM and PatchCore use 4 at 224), recorded in the bundle; pixel thresholds are calibrated on the smoothed maps (default 0: none)',
      Number,
    )
    .option('--resume', "continue training from the work folder's checkpoint")
    .option('--strict', 'fail on an unreadable image instead of skipping it')
    .option('--overwrite', 'replace an existing bundle')
    .option('--work-dir <dir>', 'work folder (default: <out>.work); it keeps features and the checkpoint')
    .option('--python <path>', 'Python with PyTorch (default: $INVAD_PYTHON, python3, /usr/bin/python3)')
    .addOption(new Option('--device <device>', 'training device').choices(['auto', 'cpu', 'cuda']).default('auto'))
    .option('--max-minutes <m>', 'stop training after this many minutes (at the end of an epoch)', Number)
    .option('-p, --providers <list>', 'ONNX Runtime providers for extraction and calibration', parseProviders, ['cpu'])
    .option('-v, --verbose', "show the trainer's log")
    .action(async (o: FitCommandOptions, cmd: Command) => {
      const backbone = o.backbonePreset ?? o.backbone;
      if (backbone === undefined) cmd.error("error: required option '-b, --backbone-preset <name>' not specified");
      if (o.backbonePreset !== undefined && o.backbone !== undefined && o.backbonePreset !== o.backbone) {
        cmd.error(`error: --backbone-preset ${o.backbonePreset} and --backbone ${o.backbone} disagree; pass one`);
      }
      const explicitUnet = cmd.getOptionValueSource('unetPreset') === 'cli' ? o.unetPreset : undefined;
      const unetPreset = deprecatedAlias('fit', { flag: '--unet-preset', value: explicitUnet }, { flag: '--preset', value: o.preset }) ?? o.unetPreset;
      const controller = new AbortController();
      const onSigint = () => {
        say('interrupted: stopping; no bundle is written, the work folder is kept for --resume');
        controller.abort();
      };
      process.once('SIGINT', onSigint);
      try {
        const r = await fit({
          normal: o.normal,
          out: o.out,
          backbone: backbone,
          backboneModel: o.backboneModel,
          taps: o.taps?.split(',').map((s) => s.trim()),
          grid: o.grid,
          unetPreset,
          epochs: o.epochs,
          batchSize: o.batchSize,
          lr: o.lr,
          seed: o.seed,
          valFraction: o.valFraction,
          steps: o.steps,
          featureNormalization: o.featureNormalization,
          featureScale: o.featureScale,
          score: o.score,
          outOfFold: o.outOfFold,
          mapSmoothing: o.mapSmoothing,
          resume: o.resume,
          strict: o.strict,
          overwrite: o.overwrite,
          workDir: o.workDir,
          python: o.python,
          device: o.device,
          maxMinutes: o.maxMinutes,
          executionProviders: o.providers,
          onProgress: reporter(o.verbose === true),
          signal: controller.signal,
        });
        process.stdout.write(
          JSON.stringify({
            out: r.out,
            wallSeconds: r.wallSeconds,
            epochs: r.training.epochs,
            trainLoss: r.training.train_loss,
            valLoss: r.training.val_loss,
            parityMaxAbsDiff: r.parityMaxAbsDiff,
            skipped: r.skipped.length,
            imageThreshold: r.manifest.calibration.imageThreshold,
            calibrationWarnings: r.manifest.calibration.warnings ?? [],
          }) + '\n',
        );
        // The bundle is written, but skipped images are inputs that failed (exit.ts).
        if (r.skipped.length > 0) process.exitCode = EXIT_INPUT_FAILED;
      } finally {
        process.off('SIGINT', onSigint);
      }
    });
}
