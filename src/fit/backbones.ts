/**
 * Backbone presets for `invad backbone`: which ONNX classifier, which tensors
 * to tap, at what input size, and the image normalization it expects.
 * `expectedFeatureShape` is what `buildFeatureBackbone` yields with these taps
 * (asserted by test/backbone.test.ts).
 */
import { IMAGENET_MEAN, IMAGENET_STD } from './write-bundle';
import type { FeatureShape, Size2D } from './onnx/backbone';

export interface BackbonePreset {
  description: string;
  /** Where the classifier comes from: an ONNX file on disk. */
  source: 'file';
  /** Default classifier path when `--model` is not given. */
  defaultPath?: string;
  /** How to obtain the classifier when it is not there. */
  howToGet: string;
  /** Tensor names, fine to coarse. */
  taps: string[];
  /** The stride of each tap (inputSize / tap size), for documentation and checks. */
  tapStrides: number[];
  inputSize: Size2D;
  /** Per-channel RGB mean and std for pixels scaled to [0, 1] (the image preprocessing the classifier was trained with). */
  mean: [number, number, number];
  std: [number, number, number];
  expectedFeatureShape: FeatureShape;
}

export const BACKBONE_PRESETS: Readonly<Record<string, BackbonePreset>> = {
  'mobilenetv2-int8': {
    description:
      'MobileNetV2 (ONNX model zoo mobilenetv2-12-int8, uint8 QLinear ops), 224 px; block outputs at strides 4, 8, 16 ' +
      '(24, 32, 96 channels) -> 152 x 14 x 14. Small and fast on CPU.',
    source: 'file',
    defaultPath: '/work/shared/models/mobilenetv2-12-int8.onnx',
    howToGet: 'mobilenetv2-12-int8.onnx from the ONNX model zoo (validated/vision/classification/mobilenet/model)',
    // 339: last inverted-residual block at 56x56 (QLinearAdd, 24 ch); 365: last at 28x28 (32 ch);
    // 426: last at 14x14 before the stride-2 block to 7x7 (96 ch).
    taps: ['339', '365', '426'],
    tapStrides: [4, 8, 16],
    inputSize: { height: 224, width: 224 },
    mean: [...IMAGENET_MEAN],
    std: [...IMAGENET_STD],
    expectedFeatureShape: { channels: 152, height: 14, width: 14 },
  },
  'efficientnet-b4': {
    description:
      'EfficientNet-B4, the paper default (METHOD.md), 256 px; stage outputs at strides 2, 4, 8, 16 ' +
      '(24, 32, 56, 160 channels) -> 272 x 16 x 16.',
    source: 'file',
    defaultPath: 'models/efficientnet-b4.onnx',
    howToGet:
      'python3 train/export_efficientnet.py --weights imagenet --out models/efficientnet-b4.onnx ' +
      '(--weights random for an offline, untrained model)',
    // Graph outputs named by train/export_efficientnet.py.
    taps: ['tap_s2', 'tap_s4', 'tap_s8', 'tap_s16'],
    tapStrides: [2, 4, 8, 16],
    inputSize: { height: 256, width: 256 },
    mean: [...IMAGENET_MEAN],
    std: [...IMAGENET_STD],
    expectedFeatureShape: { channels: 272, height: 16, width: 16 },
  },
};

export function backbonePresetNames(): string[] {
  return Object.keys(BACKBONE_PRESETS);
}
