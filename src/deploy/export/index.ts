/** The one-graph ONNX export of a bundle (`invad export`). */
export {
  buildExport,
  EXPORT_FORMAT_VERSION,
  exportPipeline,
  type BuildExportOptions,
  type BuiltExport,
  type ExportFormat,
  type ExportOptions,
  type ExportResult,
} from './export';
export {
  compareWithDetector,
  PARITY_TOLERANCE,
  parityImages,
  relativeDifference,
  runExported,
  SCORE_FLOOR,
  type ExportedScores,
  type ParityOptions,
  type ParityReport,
} from './parity';
export { resolveTritonOptions, TRITON_TYPE, tritonConfig, type TritonOptions } from './triton';
export { unsupportedDefinition } from './graph';
