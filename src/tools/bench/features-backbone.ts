/**
 * A stand-in backbone for the comparison: whatever the image, it outputs the
 * first n of a fixed set of feature maps (held as an initializer), so an engine
 * that only takes images, like the native pipeline, inverts exactly the
 * features PyTorch gets. Its work is a Slice and an Add over the features
 * (about the copy of a backbone output that a real pipeline makes anyway) plus
 * a ReduceSum over a tiny image, which keeps the output data-dependent so ORT
 * cannot fold it away.
 *
 *   image [N,3,H,W] -> ReduceSum -> * 0 -> + features[:N] -> features [N,C,h,w]
 */
import { DataType, attr, encodeModel, floatScalar, floatTensor, int64Vector, makeGraph, makeModel, makeNode, valueInfo } from '../../fit/onnx/proto';

export const STAND_IN_INPUT = 'image';
export const STAND_IN_OUTPUT = 'features';

export function constantFeaturesBackbone(
  features: Float32Array,
  shape: { batch: number; channels: number; height: number; width: number },
  input: { height: number; width: number },
): Uint8Array {
  const { batch, channels, height, width } = shape;
  if (features.length !== batch * channels * height * width)
    throw new RangeError(`features hold ${features.length} values, expected ${batch}x${channels}x${height}x${width}`);
  const graph = makeGraph({
    name: 'constant_features_backbone',
    inputs: [valueInfo(STAND_IN_INPUT, DataType.FLOAT, ['N', 3, input.height, input.width])],
    outputs: [valueInfo(STAND_IN_OUTPUT, DataType.FLOAT, ['N', channels, height, width])],
    initializers: [
      floatTensor('bank', [batch, channels, height, width], features),
      floatScalar('zero', 0),
      int64Vector('start0', [0]),
      int64Vector('end1', [1]),
      int64Vector('axis0', [0]),
    ],
    nodes: [
      makeNode('Shape', [STAND_IN_INPUT], ['image_shape']),
      makeNode('Slice', ['image_shape', 'start0', 'end1', 'axis0'], ['n']),
      makeNode('Slice', ['bank', 'start0', 'n', 'axis0'], ['picked']),
      makeNode('ReduceSum', [STAND_IN_INPUT], ['image_sum'], { attributes: [attr.int('keepdims', 1)] }),
      makeNode('Mul', ['image_sum', 'zero'], ['image_zero']),
      makeNode('Add', ['picked', 'image_zero'], [STAND_IN_OUTPUT]),
    ],
  });
  return encodeModel(makeModel(graph, { docString: 'invad benchmark stand-in backbone: fixed features' }));
}
