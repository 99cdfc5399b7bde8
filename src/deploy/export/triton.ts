/**
 * The Triton model configuration (config.pbtxt) of the exported graph, for Triton's ONNX Runtime
 * backend. Shapes follow Triton's rule for max_batch_size > 0: dims leave out the batch
 * dimension, and a tensor that is only the batch ([N]) is declared `dims: [ 1 ]` with
 * `reshape: { shape: [ ] }` (Triton's model_configuration.md, "Reshape"), so Triton returns it
 * to clients as [N, 1].
 */
import type { TensorSpec } from '../../runtime/remote/tensor-spec';
import { MODEL_NAME } from '../../runtime/remote/tensor-spec';
import { intInRange, invalidArgument, oneOf } from '../../util/validate';

/** Triton's names of the tensor-spec data types. */
export const TRITON_TYPE: Readonly<Record<TensorSpec['datatype'], string>> = { UINT8: 'TYPE_UINT8', FP32: 'TYPE_FP32', BOOL: 'TYPE_BOOL' };

export interface TritonOptions {
  /** The largest batch Triton forms. Default 8 (Detector's maxBatchSize). */
  maxBatchSize?: number;
  /** Batch sizes the dynamic batcher aims for. Default: half of maxBatchSize (rounded up) and maxBatchSize. */
  preferredBatchSizes?: number[];
  /** How long a request waits for others to batch with, in microseconds. Default 2000 (Detector's maxWaitMs of 2). */
  maxQueueDelayMicroseconds?: number;
  /** Where the model instances run. Default 'gpu'. */
  instanceKind?: 'gpu' | 'cpu';
  /** Model instances per device. Default 1. */
  instanceCount?: number;
  /** Add the TensorRT execution accelerator at FP16 (GPU instances only). Default false. */
  tensorrtFp16?: boolean;
}

/** The options with their defaults, checked. */
export function resolveTritonOptions(o: TritonOptions = {}): Required<TritonOptions> {
  const maxBatchSize = o.maxBatchSize === undefined ? 8 : intInRange('triton.maxBatchSize', o.maxBatchSize, 1, 1024);
  const preferred = o.preferredBatchSizes ?? [...new Set([Math.ceil(maxBatchSize / 2), maxBatchSize])];
  if (!Array.isArray(preferred) || preferred.length === 0) throw invalidArgument('triton.preferredBatchSizes', 'a non-empty array of batch sizes', preferred);
  preferred.forEach((s, i) => intInRange(`triton.preferredBatchSizes[${i}]`, s, 1, maxBatchSize));
  const instanceKind = o.instanceKind === undefined ? 'gpu' : oneOf('triton.instanceKind', o.instanceKind, ['gpu', 'cpu'] as const);
  const tensorrtFp16 = o.tensorrtFp16 === true;
  if (tensorrtFp16 && instanceKind === 'cpu') throw invalidArgument('triton.tensorrtFp16', 'false with CPU instances (TensorRT runs on the GPU)', true);
  return {
    maxBatchSize,
    preferredBatchSizes: [...preferred].sort((a, b) => a - b),
    maxQueueDelayMicroseconds:
      o.maxQueueDelayMicroseconds === undefined ? 2000 : intInRange('triton.maxQueueDelayMicroseconds', o.maxQueueDelayMicroseconds, 0, 60_000_000),
    instanceKind,
    instanceCount: o.instanceCount === undefined ? 1 : intInRange('triton.instanceCount', o.instanceCount, 1, 64),
    tensorrtFp16,
  };
}

/** A protobuf text-format string literal. */
function quote(s: string): string {
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;
}

function tensorBlock(t: TensorSpec): string {
  if (t.shape[0] !== -1) throw new Error(`internal: tensor ${t.name} has no batch dimension`);
  const dims = t.shape.slice(1);
  const lines = ['  {', `    name: ${quote(t.name)}`, `    data_type: ${TRITON_TYPE[t.datatype]}`];
  if (dims.length === 0) lines.push('    dims: [ 1 ]', '    reshape: { shape: [ ] }');
  else lines.push(`    dims: [ ${dims.join(', ')} ]`);
  lines.push('  }');
  return lines.join('\n');
}

/**
 * config.pbtxt for the exported model.
 * @param tensors - the graph's inputs and outputs (modelTensors())
 * @param parameters - string parameters Triton shows in the model's configuration
 *   (`GET /v2/models/invad/config`): the export's metadata, for clients
 */
export function tritonConfig(
  tensors: { inputs: TensorSpec[]; outputs: TensorSpec[] },
  options: TritonOptions = {},
  parameters: Readonly<Record<string, string>> = {},
): string {
  const o = resolveTritonOptions(options);
  const out = [
    '# Written by `invad export --format triton`: the whole invad pipeline as one ONNX graph.',
    `name: ${quote(MODEL_NAME)}`,
    'platform: "onnxruntime_onnx"',
    `max_batch_size: ${o.maxBatchSize}`,
    `input [\n${tensors.inputs.map(tensorBlock).join(',\n')}\n]`,
    `output [\n${tensors.outputs.map(tensorBlock).join(',\n')}\n]`,
    `dynamic_batching {\n  preferred_batch_size: [ ${o.preferredBatchSizes.join(', ')} ]\n  max_queue_delay_microseconds: ${o.maxQueueDelayMicroseconds}\n}`,
    `instance_group [\n  {\n    count: ${o.instanceCount}\n    kind: ${o.instanceKind === 'gpu' ? 'KIND_GPU' : 'KIND_CPU'}\n  }\n]`,
  ];
  if (o.tensorrtFp16) {
    out.push(
      [
        'optimization {',
        '  execution_accelerators {',
        '    gpu_execution_accelerator: [',
        '      {',
        '        name: "tensorrt"',
        '        parameters { key: "precision_mode" value: "FP16" }',
        '      }',
        '    ]',
        '  }',
        '}',
      ].join('\n'),
    );
  }
  for (const [key, value] of Object.entries(parameters)) {
    out.push(`parameters {\n  key: ${quote(key)}\n  value: { string_value: ${quote(value)} }\n}`);
  }
  return out.join('\n') + '\n';
}
