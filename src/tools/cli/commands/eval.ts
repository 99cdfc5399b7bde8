/** `invad eval DATASET --model model/`: metrics, latency and report.html on an MVTec-layout dataset. */
import { Command, Option } from 'commander';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CalibrationRule } from '../../../eval/decision';
import { evaluate } from '../../../eval/evaluate';
import { decisionMarkdown } from '../../../eval/report/decision-text';
import { calibratePool, poolsOutOfFold } from '../../../fit/calibrate';
import { expandImagePaths } from '../../../util/image-files';
import { EXIT_INPUT_FAILED } from '../exit';
import { parsePositiveInt, parseProviders } from './score';

/** The operating points' threshold rule: the bundle calibration's own (fit's calibratePool). */
export const CALIBRATION_RULE: CalibrationRule = { calibrate: calibratePool, poolsOutOfFold };

function parseSteps(value: string): number[] {
  return value.split(',').map((s) => parsePositiveInt(s.trim()));
}

interface EvalCommandOptions {
  model: string;
  steps?: number[];
  mode: 'inversion' | 'reconstruction';
  tStart: number;
  reconSteps: number;
  out?: string;
  batchSize: number;
  providers: ReturnType<typeof parseProviders>;
  imageOnly?: boolean;
  json?: boolean;
  calibrationNormals?: string;
  baseline?: string;
}

export function evalCommand(): Command {
  return new Command('eval')
    .description(
      'Evaluate a bundle on a dataset in the MVTec AD layout (test/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png): image AUROC/AP/F1-max, pixel AUROC/AP/AUPRO, per defect type, per score definition and S, latency; the calibrated thresholds on the test set (false-alarm rate with its 95% interval, recall; operating points at 0.5/1/2/5%); writes report.json and report.html',
    )
    .argument('<dataset>', 'dataset root')
    .requiredOption('-m, --model <dir>', 'model bundle folder')
    .option('-s, --steps <list>', "step counts S, e.g. 2,3,4,5 (default: the bundle's)", parseSteps)
    .addOption(
      new Option('--mode <mode>', 'inversion (the method) or reconstruction (ablation baseline)').choices(['inversion', 'reconstruction']).default('inversion'),
    )
    .option('--t-start <f>', 'reconstruction: noise level as a fraction of T', Number, 0.2)
    .option('--recon-steps <n>', 'reconstruction: DDIM steps back to t = 0', parsePositiveInt, 5)
    .option('-o, --out <dir>', 'write report.json and report.html here')
    .option('-b, --batch-size <n>', 'images per model run', parsePositiveInt, 8)
    .option('-p, --providers <list>', 'execution providers to try in order', parseProviders, ['cpu'])
    .option('--image-only', 'skip the pixel metrics')
    .option(
      '--calibration-normals <dir>',
      "normal images (never trained on) to calibrate the operating points' thresholds from, instead of the bundle's stored calibration sample (calibration.json)",
    )
    .option('--baseline <dir>', 'a baseline bundle (invad baseline padim|patchcore) to evaluate on the same test set, in the same report')
    .option('--json', 'print the whole report as JSON on stdout')
    .action(async (dataset: string, o: EvalCommandOptions) => {
      const report = await evaluate({
        dataset,
        model: o.model,
        steps: o.steps,
        mode: o.mode,
        tStart: o.tStart,
        reconSteps: o.reconSteps,
        out: o.out,
        batchSize: o.batchSize,
        executionProviders: o.providers,
        imageOnly: o.imageOnly,
        calibrationRule: CALIBRATION_RULE,
        calibrationNormals: o.calibrationNormals ? await expandImagePaths([o.calibrationNormals]) : undefined,
        baseline: o.baseline,
        onProgress: (m) => process.stderr.write(m + '\n'),
      });
      if (o.json) process.stdout.write(JSON.stringify(report) + '\n');
      else {
        for (const r of report.rows.filter((x) => x.subset === 'all'))
          process.stdout.write(JSON.stringify({ scoreDefinition: r.scoreDefinition, steps: r.steps, ...r.metrics }) + '\n');
        // meanMsPerImage is a mean (wall time / images); latencyMs holds real per-image percentiles.
        for (const l of report.latency) process.stdout.write(JSON.stringify({ latency: l }) + '\n');
      }
      if (report.decisions) {
        // Markdown, ready for a README; also kept beside the report.
        const md = decisionMarkdown(report.decisions);
        process.stderr.write(`\n${md}\n`);
        if (o.out) await writeFile(join(o.out, 'decisions.md'), md, 'utf8');
      }
      if (o.out) process.stderr.write(`report: ${o.out}/report.html\n`);
      const skipped = report.skipped?.length ?? 0;
      if (skipped > 0) {
        process.stderr.write(
          `invad eval: ${skipped} test image(s) could not be scored and are left out of the metrics:\n${report.skipped!.map((x) => `  ${x.file}: ${x.message}`).join('\n')}\n`,
        );
        process.exitCode = EXIT_INPUT_FAILED;
      }
    });
}
