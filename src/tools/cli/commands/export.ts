/**
 * `invad export`: a bundle at one S as one ONNX graph (src/deploy/export), as a plain model or a
 * Triton model repository.
 */
import { Command, InvalidArgumentError as CommanderArgError, Option } from 'commander';
import { SCORE_DEFINITIONS, SCORES, type ScoreDefinition } from '../../../runtime/scores';
import type { TensorSpec } from '../../../runtime/remote/tensor-spec';
import { UsageError } from '../exit';
import { parsePositiveInt } from './score';

interface ExportCommandOptions {
  model: string;
  out: string;
  steps?: number;
  format: 'onnx' | 'triton';
  score?: ScoreDefinition;
  threshold?: number;
  cpu?: boolean;
  tensorrtFp16?: boolean;
  maxBatchSize?: number;
  preferredBatchSizes?: number[];
  maxQueueDelayUs?: number;
  instances?: number;
  verifyImages: number;
  json?: boolean;
}

function parseNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new CommanderArgError('expected a finite number');
  return n;
}

function parseCount(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new CommanderArgError('expected an integer >= 0');
  return n;
}

function parseSizes(value: string): number[] {
  return value.split(',').map((s) => parsePositiveInt(s.trim()));
}

const shape = (t: TensorSpec) => `[${t.shape.map((d) => (d < 0 ? 'N' : String(d))).join(',')}]`;
const size = (n: number) => (n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(1)} kB`);

async function run(o: ExportCommandOptions): Promise<void> {
  const tritonOnly: Array<[string, unknown]> = [
    ['--cpu', o.cpu],
    ['--tensorrt-fp16', o.tensorrtFp16],
    ['--max-batch-size', o.maxBatchSize],
    ['--preferred-batch-sizes', o.preferredBatchSizes],
    ['--max-queue-delay-us', o.maxQueueDelayUs],
    ['--instances', o.instances],
  ];
  const misplaced = tritonOnly.filter(([, v]) => v !== undefined).map(([flag]) => flag);
  if (o.format !== 'triton' && misplaced.length > 0)
    throw new UsageError(`${misplaced.join(', ')} ${misplaced.length === 1 ? 'applies' : 'apply'} to --format triton only`);
  if (o.cpu && o.tensorrtFp16) throw new UsageError('--tensorrt-fp16 needs GPU instances; drop --cpu');
  // Loaded here, not at the top: the other commands need neither onnx-proto nor the export.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { exportPipeline } = require('../../../deploy/export') as typeof import('../../../deploy/export');
  const r = await exportPipeline(o.model, {
    out: o.out,
    format: o.format,
    ...(o.steps === undefined ? {} : { steps: o.steps }),
    ...(o.score === undefined ? {} : { scoreDefinition: o.score }),
    ...(o.threshold === undefined ? {} : { threshold: o.threshold }),
    verifyImages: o.verifyImages,
    triton: {
      instanceKind: o.cpu ? 'cpu' : 'gpu',
      tensorrtFp16: o.tensorrtFp16 === true,
      ...(o.maxBatchSize === undefined ? {} : { maxBatchSize: o.maxBatchSize }),
      ...(o.preferredBatchSizes === undefined ? {} : { preferredBatchSizes: o.preferredBatchSizes }),
      ...(o.maxQueueDelayUs === undefined ? {} : { maxQueueDelayMicroseconds: o.maxQueueDelayUs }),
      ...(o.instances === undefined ? {} : { instanceCount: o.instances }),
    },
  });
  if (o.json) {
    const { bytes, ...rest } = r;
    process.stdout.write(JSON.stringify({ ...rest, modelBytes: bytes.length }, null, 2) + '\n');
    return;
  }
  const lines = [
    `wrote ${r.files.join(', ')}`,
    `  model: ${size(r.bytes.length)} (the bundle's backbone and UNet: ${size(r.bundleModelBytes)}; the UNet's weights are stored once for its ${r.steps} calls)`,
    `  S = ${r.steps} (timesteps ${r.parameters.timesteps}), score ${r.scoreDefinition}, threshold ${r.threshold ?? 'none (uncalibrated: only a NaN score is flagged)'}, ONNX opset ${r.opset}`,
    `  input: ${r.tensors.inputs.map((t) => `${t.name} ${t.datatype} ${shape(t)} (RGB, decoded and resized by the client)`).join(', ')}`,
    `  outputs: ${r.tensors.outputs.map((t) => `${t.name} ${t.datatype} ${shape(t)}`).join(', ')}`,
  ];
  if (r.parity) {
    const m = r.parity.maxRelative;
    const worst = Math.max(m.score, m.spatialRange, m.nll, m.latentGaussian ?? 0, m.map);
    lines.push(`  checked against Detector on ${r.parity.images} test images: largest relative difference ${worst.toExponential(1)}, every decision the same`);
  }
  process.stdout.write(lines.join('\n') + '\n');
}

export function exportCommand(): Command {
  const definitions = SCORE_DEFINITIONS.map((d) => `${d}: ${SCORES[d].summary}`).join('; ');
  return new Command('export')
    .description(
      'Export a bundle at one S as one ONNX graph: uint8 image [N,H,W,3] in; score, is_anomalous, the feature-grid map and the score parts out. ' +
        'With --format triton, a Triton model repository (invad/1/model.onnx, invad/config.pbtxt)',
    )
    .requiredOption('-m, --model <dir>', 'model bundle folder')
    .requiredOption('-o, --out <dir>', 'output folder: model.onnx, or the Triton repository with --format triton')
    .option('-s, --steps <n>', "inversion steps S (default: the bundle's)", parsePositiveInt)
    .addOption(new Option('--format <format>', 'what to write').choices(['onnx', 'triton']).default('onnx'))
    .addOption(new Option('--score <definition>', `score definition (default: the bundle's); ${definitions}`).choices([...SCORE_DEFINITIONS]))
    .option('--threshold <value>', "image threshold in the graph (default: the bundle's at S)", parseNumber)
    .option('--cpu', 'Triton: run the model instances on the CPU (KIND_CPU) instead of the GPU')
    .option('--tensorrt-fp16', "Triton: add the TensorRT execution accelerator at FP16 (the scores then differ from Detector's)")
    .option('--max-batch-size <n>', 'Triton: largest batch (default 8)', parsePositiveInt)
    .option(
      '--preferred-batch-sizes <list>',
      'Triton: batch sizes the dynamic batcher aims for, e.g. 4,8 (default: half the maximum and the maximum)',
      parseSizes,
    )
    .option('--max-queue-delay-us <n>', 'Triton: how long a request waits for a batch, in microseconds (default 2000)', parseCount)
    .option('--instances <n>', 'Triton: model instances per device (default 1)', parsePositiveInt)
    .option(
      '--verify-images <n>',
      'score this many seeded test images with Detector and with the graph before writing, and refuse a graph that differs (0: skip)',
      parseCount,
      4,
    )
    .option('--json', 'print the result as JSON')
    .action(async (o: ExportCommandOptions) => {
      await run(o);
    });
}
