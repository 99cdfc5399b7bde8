/**
 * `invad calibrate <normals> --model model/`: re-run calibration on a new folder of normal images,
 * or add them to the stored calibration sample (--append), and compare the training normals'
 * out-of-fold scores with the held-out ones (--compare-sources).
 */
import { Command } from 'commander';
import { calibrateBundle, compareBundleSources, fitBundleLatents } from '../../../fit/calibrate-bundle';
import { loadLabelledImages } from '../../../eval/dataset';
import { labelledItems, measureLabelledDecisions } from '../../../eval/decision';
import { decisionMarkdown } from '../../../eval/report/decision-text';
import { CALIBRATION_RULE } from './eval';
import { expandImagePaths } from '../../../util/image-files';
import { UsageError } from '../exit';
import { MAX_SMOOTHING_SIGMA } from '../../../runtime/map-smoothing';
import { parsePositiveInt, parseProviders } from './score';

interface CalibrateCommandOptions {
  model: string;
  falseAlarmRate: number;
  steps?: number[];
  refitLatent?: string;
  /** a fold count, false for --no-out-of-fold, undefined for the default */
  outOfFold?: number | false;
  append?: boolean;
  compareSources?: boolean;
  validation?: string;
  mapSmoothing?: number;
  providers: ReturnType<typeof parseProviders>;
}

const say = (line: string) => process.stderr.write(line + '\n');

/** Flags that contradict each other, refused before anything in the bundle changes. */
function checkFlags(normals: string[], o: CalibrateCommandOptions): void {
  if (normals.length === 0 && !o.compareSources) throw new UsageError('give the normal images or folders to calibrate on (or --compare-sources alone)');
  if (typeof o.outOfFold === 'number' && !o.refitLatent) {
    throw new UsageError('--out-of-fold needs the training normals the latent statistics are fitted on: pass them with --refit-latent <dir>');
  }
  if (typeof o.outOfFold === 'number' && o.outOfFold < 2) throw new UsageError(`--out-of-fold needs at least 2 folds, got ${o.outOfFold}`);
  if (o.mapSmoothing !== undefined && !(o.mapSmoothing >= 0 && o.mapSmoothing <= MAX_SMOOTHING_SIGMA)) {
    throw new UsageError(`--map-smoothing takes a sigma from 0 (none) to ${MAX_SMOOTHING_SIGMA} pixels at the model input, got ${o.mapSmoothing}`);
  }
  if (o.append && o.refitLatent) {
    throw new UsageError(
      '--append pools with the stored scores, which came from the current latent statistics; --refit-latent would replace them. Run one, then the other without --append',
    );
  }
}

export function calibrateCommand(): Command {
  return new Command('calibrate')
    .description(
      'Re-calibrate a bundle on normal images only (e.g. after a camera change, or on good parts collected on the line): score normalization and image/pixel thresholds at a target false-alarm rate, for each S',
    )
    .argument('[normals...]', 'normal images or folders (held out from training)')
    .requiredOption('-m, --model <dir>', 'model bundle folder (its manifest.json and calibration.json are rewritten)')
    .option('--false-alarm-rate <f>', 'target false-alarm rate on normals; the split-conformal threshold needs at least ceil(1/f) - 1 normals', Number, 0.01)
    .option('-s, --steps <list>', 'step counts S to calibrate (default 2,3,4,5)', (v: string) => v.split(',').map((s) => parsePositiveInt(s.trim())))
    .option('--append', "add these normals' scores to the calibration sample stored in the bundle (calibration.json) instead of replacing it")
    .option(
      '--validation <dir>',
      'labelled validation images (good/ and one folder per defect, as MVTec AD test/): set image thresholds at their F1 maximum instead of the false-alarm rate',
    )
    .option('--refit-latent <dir>', 'also refit the latent-Gaussian statistics on this folder of training normals')
    .option(
      '--out-of-fold <k>',
      'with --refit-latent: score each training normal under a latent Gaussian fitted on the other k - 1 folds and pool these scores for the latent-Gaussian part (default: 5)',
      parsePositiveInt,
    )
    .option('--no-out-of-fold', 'with --refit-latent: no out-of-fold scores')
    .option(
      '--map-smoothing <sigma>',
      "set the bundle's map smoothing: a Gaussian of sigma pixels at the model input on every upsampled map (0 removes it; default: keep the bundle's); the pixel thresholds are recalibrated on the smoothed maps",
      Number,
    )
    .option(
      '--compare-sources',
      "print how the training normals' out-of-fold scores compare with the held-out normals' in the stored sample (medians, KS statistic)",
    )
    .option('-p, --providers <list>', 'execution providers to try in order', parseProviders, ['cpu'])
    .action(async (normals: string[], o: CalibrateCommandOptions) => {
      checkFlags(normals, o);
      if (normals.length === 0) {
        process.stdout.write(JSON.stringify({ sources: await compareBundleSources(o.model) }) + '\n');
        return;
      }
      const training = o.refitLatent ? await expandImagePaths([o.refitLatent]) : undefined;
      const files = await expandImagePaths(normals);
      const validation = o.validation ? await loadLabelledImages(o.validation) : undefined;
      if (training) await fitBundleLatents(o.model, training, { steps: o.steps, executionProviders: o.providers, onProgress: say });
      const cal = await calibrateBundle(o.model, files, {
        steps: o.steps,
        falseAlarmRate: o.falseAlarmRate,
        validation,
        training,
        outOfFold: o.outOfFold,
        append: o.append === true,
        ...(o.mapSmoothing !== undefined ? { mapSmoothing: o.mapSmoothing } : {}),
        executionProviders: o.providers,
        onProgress: say,
      });
      for (const w of cal.warnings ?? []) say(`warning: ${w}`);
      if (validation) {
        // The trade-off on the labelled images: the thresholds just set, and what the normals give at each target rate.
        const decisions = await measureLabelledDecisions(o.model, labelledItems(validation), {
          steps: cal.bySteps?.map((s) => s.steps),
          rule: CALIBRATION_RULE,
          executionProviders: o.providers,
          onProgress: say,
        });
        say(
          `\nThe trade-off on the validation images (the F1-max thresholds were set on them; the operating points' on normals only):\n\n${decisionMarkdown(decisions, 'the validation images')}`,
        );
      }
      const { samples, outOfFold, imageThreshold, imageThresholdMethod, pixelThreshold, falseAlarmRate, warnings } = cal;
      const sources = o.compareSources ? { sources: await compareBundleSources(o.model) } : {};
      process.stdout.write(
        JSON.stringify({
          samples,
          outOfFold: outOfFold ?? null,
          imageThreshold,
          imageThresholdMethod,
          pixelThreshold,
          falseAlarmRate,
          warnings,
          ...(cal.validation ? { validation: cal.validation } : {}),
          ...sources,
        }) + '\n',
      );
    });
}
