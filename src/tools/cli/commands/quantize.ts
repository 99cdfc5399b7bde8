/**
 * `invad quantize --model model/ --out model-int8/ [--features train.npy | --normal DIR]`: a copy
 * of the bundle whose UNet is statically quantized to int8 in QDQ format (src/fit/quantize.ts),
 * calibrated again on held-out normals.
 */
import { Command, Option } from 'commander';
import { quantizeBundle } from '../../../fit/quantize';
import { expandImagePaths } from '../../../util/image-files';
import { UsageError } from '../exit';
import { parsePositiveInt, parseProviders } from './score';

interface QuantizeCommandOptions {
  model: string;
  out: string;
  features?: string;
  normal?: string;
  calibrate?: string;
  refitLatent?: string;
  samples: number;
  steps?: number[];
  ranges: 'minmax' | 'percentile';
  percentile: number;
  activations: 'uint8' | 'int8';
  reduceRange?: boolean;
  quantizeOutput?: boolean;
  overwrite?: boolean;
  providers: ReturnType<typeof parseProviders>;
}

const say = (line: string) => process.stderr.write(line + '\n');

export function quantizeCommand(): Command {
  return new Command('quantize')
    .description(
      "Write an int8 copy of a bundle: the UNet statically quantized in QDQ format (per-channel int8 weights, per-tensor activations from calibration ranges) for ONNX Runtime's integer kernels (VNNI CPUs), then calibrated again on normals",
    )
    .requiredOption('-m, --model <dir>', 'fp32 model bundle folder (not changed)')
    .requiredOption('-o, --out <dir>', 'the int8 bundle folder to write')
    .option('--features <npy>', "activation ranges from these clean features [n, C, h, w] (the fit work folder's train.npy)")
    .option('--normal <dir>', 'activation ranges from normal images (when --features is not given); also the default for --calibrate')
    .option(
      '--calibrate <dir>',
      'held-out normal images to calibrate the int8 bundle on (default: --normal); without any, the fp32 calibration is kept with a warning',
    )
    .option('--refit-latent <dir>', 'training normals: refit the latent-Gaussian statistics with the int8 UNet (and pool their out-of-fold scores)')
    .option('--samples <n>', 'feature maps used for the activation ranges (a seeded random subset)', parsePositiveInt, 64)
    .option('-s, --steps <list>', 'step counts S whose inversion inputs the ranges cover (default 2,3,4,5)', (v: string) =>
      v.split(',').map((s) => parsePositiveInt(s.trim())),
    )
    .addOption(new Option('--ranges <method>', 'activation ranges: min/max, or a two-sided percentile').choices(['minmax', 'percentile']).default('minmax'))
    .option('--percentile <p>', 'with --ranges percentile', Number, 99.99)
    .addOption(new Option('--activations <type>', 'activation type: uint8 (asymmetric) or int8 (symmetric)').choices(['uint8', 'int8']).default('uint8'))
    .option('--reduce-range', '7-bit weights, for CPUs without VNNI')
    .option('--quantize-output', "quantize the UNet's output convolution too (eps then carries uint8 quantization error; default: it stays fp32)")
    .option('--overwrite', 'replace --out if it exists')
    .option('-p, --providers <list>', 'execution providers to try in order (recalibration)', parseProviders, ['cpu'])
    .action(async (o: QuantizeCommandOptions) => {
      if (!o.features && !o.normal) throw new UsageError('give the calibration data for the activation ranges: --features <train.npy> or --normal <dir>');
      const normals = o.normal ? await expandImagePaths([o.normal]) : undefined;
      const calibrationNormals = o.calibrate ? await expandImagePaths([o.calibrate]) : normals;
      const refitLatent = o.refitLatent ? await expandImagePaths([o.refitLatent]) : undefined;
      const r = await quantizeBundle(o.model, o.out, {
        features: o.features,
        normals,
        calibrationNormals,
        refitLatent,
        maxSamples: o.samples,
        steps: o.steps,
        method: o.ranges,
        percentile: o.percentile,
        activationType: o.activations,
        reduceRange: o.reduceRange === true,
        quantizeOutput: o.quantizeOutput === true,
        overwrite: o.overwrite === true,
        executionProviders: o.providers,
        onProgress: say,
      });
      for (const w of r.warnings) say(`warning: ${w}`);
      const { integer, floatCompute, counts } = r.nodeTypes.int8;
      say(
        `ORT's optimized int8 UNet: ${integer} integer nodes, ${floatCompute} float Conv/MatMul/Gemm nodes (fp32 UNet: ${r.nodeTypes.fp32.floatCompute} float, ${r.nodeTypes.fp32.integer} integer)`,
      );
      process.stdout.write(
        JSON.stringify({
          out: r.out,
          precision: r.manifest.precision,
          quantizedNodes: r.summary.quantizedNodes,
          skippedNodes: r.summary.skippedNodes,
          calibrationSamples: r.calibrationSamples,
          recalibrated: r.recalibrated,
          ortNodeTypes: { int8: counts, fp32: r.nodeTypes.fp32.counts },
          warnings: r.warnings,
        }) + '\n',
      );
    });
}
