/**
 * The tensors of invad's served model. The exported one-graph ONNX model (`invad export`),
 * `invad serve` and `RemoteDetector` all use these names, types and shapes, so a client
 * works against either server (invad's own or Triton serving the export).
 */
import type { Manifest } from '../bundle/manifest';

/** The model name in the KServe v2 routes (`/v2/models/invad/...`) and the Triton repository. */
export const MODEL_NAME = 'invad';

/** The image after decode and resize, as a camera frame is: uint8 [N, H, W, 3], RGB. */
export const IMAGE_INPUT = 'image';

/** Output tensor names. */
export const OUTPUT = {
  /** calibrated image score [N] */
  score: 'score',
  /** score > threshold [N] */
  isAnomalous: 'is_anomalous',
  /** the score definition's feature-grid map [N, h, w] */
  map: 'map',
  /** SP: max - min of the l2 map [N] */
  spatialRange: 'spatial_range',
  /** negative log-likelihood of x_T under N(0, I) [N] */
  nll: 'nll',
  /** max Mahalanobis distance under the latent Gaussian [N], when the bundle has its statistics */
  latentGaussian: 'latent_gaussian',
} as const;

/** KServe v2 tensor data types used here (the protocol's names). */
export type TensorDatatype = 'UINT8' | 'FP32' | 'BOOL';

/** A tensor's name, type and shape; -1 marks the dynamic batch dimension. */
export interface TensorSpec {
  name: string;
  datatype: TensorDatatype;
  shape: number[];
}

/** The served model's inputs and outputs for a bundle (latent_gaussian only when it has the statistics at S). */
export function modelTensors(manifest: Manifest, hasLatentGaussian: boolean): { inputs: TensorSpec[]; outputs: TensorSpec[] } {
  const { height, width } = manifest.input;
  const grid = manifest.features;
  const outputs: TensorSpec[] = [
    { name: OUTPUT.score, datatype: 'FP32', shape: [-1] },
    { name: OUTPUT.isAnomalous, datatype: 'BOOL', shape: [-1] },
    { name: OUTPUT.map, datatype: 'FP32', shape: [-1, grid.height, grid.width] },
    { name: OUTPUT.spatialRange, datatype: 'FP32', shape: [-1] },
    { name: OUTPUT.nll, datatype: 'FP32', shape: [-1] },
  ];
  if (hasLatentGaussian) outputs.push({ name: OUTPUT.latentGaussian, datatype: 'FP32', shape: [-1] });
  return { inputs: [{ name: IMAGE_INPUT, datatype: 'UINT8', shape: [-1, height, width, 3] }], outputs };
}
