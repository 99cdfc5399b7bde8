/**
 * `invad baseline padim|patchcore --normal DIR (--bundle invad-bundle/ | --backbone NAME) --out bundle/`
 * (issue 17): fits PaDiM's per-position Gaussian or PatchCore's coreset memory bank on the same
 * backbone taps and split as invad, into a bundle the same Detector scores.
 */
import { Command, Option } from 'commander';
import { BASELINES, type BaselineKind, fitBaseline } from '../../../fit/baseline';
import { UsageError } from '../exit';
import { parseProviders } from './score';

interface BaselineCommandOptions {
  normal: string;
  out: string;
  bundle?: string;
  backbone?: string;
  backboneModel?: string;
  coreset: number;
  projectionDims: number;
  valFraction: number;
  seed: number;
  falseAlarmRate?: number;
  overwrite?: boolean;
  providers: ReturnType<typeof parseProviders>;
}

function parseKinds(value: string): BaselineKind[] {
  const kinds = value.split(',').map((k) => k.trim());
  for (const k of kinds) if (!(BASELINES as readonly string[]).includes(k)) throw new UsageError(`unknown baseline ${k}: choose from ${BASELINES.join(', ')}`);
  return kinds as BaselineKind[];
}

export function baselineCommand(): Command {
  return new Command('baseline')
    .description(
      'Fit a baseline on the same backbone taps and split as invad (issue 17): padim (a Gaussian per feature-grid position of the clean features) and/or patchcore (3x3-pooled patches, greedy k-center coreset memory bank, nearest-neighbour distance). With --bundle, the output is a copy of that invad bundle with the statistics added (invad eval then reports both methods); with --backbone, a bundle of the backbone alone (its UNet is a placeholder the baselines never call). Score it with --score padim or patchcore.',
    )
    .argument('<kinds>', 'padim, patchcore, or padim,patchcore', parseKinds)
    .requiredOption('--normal <dir>', 'folder of normal images (the same split as invad fit: --val-fraction and --seed)')
    .requiredOption('-o, --out <dir>', 'bundle folder to write')
    .option('--bundle <dir>', 'an invad bundle to take the backbone from (and to copy)')
    .option('--backbone <name>', 'a backbone preset, when there is no invad bundle')
    .option('--backbone-model <file>', "the preset's classifier ONNX (default: found as invad fit finds it)")
    .option('--coreset <f>', 'PatchCore: share of the training patches kept', Number, 0.01)
    .option('--projection-dims <n>', 'PatchCore: random projection dimensions for the coreset search', Number, 128)
    .option('--val-fraction <f>', 'share of the normals held out for calibration', Number, 0.1)
    .option('--seed <n>', 'split and coreset seed', Number, 0)
    .option('--false-alarm-rate <f>', "target false-alarm rate (default: the bundle's, else 0.01)", Number)
    .option('--overwrite', 'replace an existing output folder')
    .addOption(new Option('-p, --providers <list>', 'execution providers to try in order').argParser(parseProviders).default(['cpu']))
    .action(async (kinds: BaselineKind[], o: BaselineCommandOptions) => {
      if (!o.bundle === !o.backbone) throw new UsageError('give exactly one of --bundle and --backbone');
      const result = await fitBaseline({
        kinds,
        normal: o.normal,
        out: o.out,
        bundle: o.bundle,
        backbone: o.backbone,
        backboneModel: o.backboneModel,
        coreset: o.coreset,
        projectionDims: o.projectionDims,
        valFraction: o.valFraction,
        seed: o.seed,
        falseAlarmRate: o.falseAlarmRate,
        overwrite: o.overwrite,
        executionProviders: o.providers,
        onProgress: (m) => process.stderr.write(m + '\n'),
      });
      process.stderr.write(
        `wrote ${result.out} (${result.train} training normals, ${result.val} held out; statistics fitted in ${result.fitSeconds.toFixed(1)} s)\n`,
      );
    });
}
