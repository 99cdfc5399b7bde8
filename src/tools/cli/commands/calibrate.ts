/** `invad calibrate <normals> --model model/`: re-run calibration on a new folder of normal images. */
import { Command } from 'commander';
import { calibrateBundle, fitBundleLatents } from '../../../fit/calibrate-bundle';
import { loadLabelledImages } from '../../../eval/dataset';
import { expandImagePaths } from '../../../util/image-files';
import { parsePositiveInt, parseProviders } from './score';

interface CalibrateCommandOptions {
  model: string;
  falseAlarmRate: number;
  steps?: number[];
  refitLatent?: string;
  validation?: string;
  providers: ReturnType<typeof parseProviders>;
}

export function calibrateCommand(): Command {
  return new Command('calibrate')
    .description('Re-calibrate a bundle on normal images only (e.g. after a camera change): score normalization and image/pixel thresholds at a target false-alarm rate, for each S')
    .argument('<normals...>', 'normal images or folders (held out from training)')
    .requiredOption('-m, --model <dir>', 'model bundle folder (its manifest.json is rewritten)')
    .option('--false-alarm-rate <f>', 'target false-alarm rate on normals', Number, 0.01)
    .option('-s, --steps <list>', 'step counts S to calibrate (default 2,3,4,5)', (v: string) => v.split(',').map((s) => parsePositiveInt(s.trim())))
    .option('--validation <dir>', 'labelled validation images (good/ and one folder per defect, as MVTec AD test/): set image thresholds at their F1 maximum instead of the false-alarm rate')
    .option('--refit-latent <dir>', 'also refit the latent-Gaussian statistics on this folder of training normals')
    .option('-p, --providers <list>', 'execution providers to try in order', parseProviders, ['cpu'])
    .action(async (normals: string[], o: CalibrateCommandOptions) => {
      const log = (m: string) => process.stderr.write(m + '\n');
      if (o.refitLatent) await fitBundleLatents(o.model, await expandImagePaths([o.refitLatent]), { steps: o.steps, executionProviders: o.providers, onProgress: log });
      const files = await expandImagePaths(normals);
      const validation = o.validation ? await loadLabelledImages(o.validation) : undefined;
      const cal = await calibrateBundle(o.model, files, { steps: o.steps, falseAlarmRate: o.falseAlarmRate, validation, executionProviders: o.providers, onProgress: log });
      const { samples, imageThreshold, imageThresholdMethod, pixelThreshold, falseAlarmRate } = cal;
      process.stdout.write(JSON.stringify({ samples, imageThreshold, imageThresholdMethod, pixelThreshold, falseAlarmRate, ...(cal.validation ? { validation: cal.validation } : {}) }) + '\n');
    });
}
