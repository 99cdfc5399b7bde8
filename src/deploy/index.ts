/**
 * `invad/deploy`: serving invad outside one Node process. Not loaded by `require('invad')`.
 * A plain list of re-exports.
 */
export { buildExport, exportPipeline, type BuildExportOptions, type BuiltExport, type ExportFormat, type ExportOptions, type ExportResult } from './export';
export { compareWithDetector, PARITY_TOLERANCE, runExported, type ExportedScores, type ParityReport } from './export';
export { tritonConfig, type TritonOptions } from './export';
export {
  startServer,
  MODEL_VERSION,
  scoreFields,
  type ErrorBody,
  type InvadServer,
  type ScoreAnswer,
  type ScoreFields,
  type ServeErrorCode,
  type ServeOptions,
} from './serve';
export { ExportError } from '../util/errors';
export { IMAGE_INPUT, MODEL_NAME, modelTensors, OUTPUT, type TensorDatatype, type TensorSpec } from '../runtime/remote/tensor-spec';
