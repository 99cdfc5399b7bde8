/**
 * Checks an ONNX session's declared inputs and outputs against the manifest, so
 * a mismatched model fails at load with a ModelMismatchError naming the file and
 * field instead of failing, or silently misbehaving, at the first image.
 */
import type { InferenceSession } from 'onnxruntime-node';
import type { Manifest } from '../bundle/manifest';
import { ModelMismatchError } from '../../util/errors';

type Dim = number | string;

/** What the checks read of a session: onnxruntime-node's, or the native pipeline's metadata in the same form. */
export type SessionMetadata = Pick<InferenceSession, 'inputMetadata' | 'outputMetadata'>;

interface Expectation {
  name: string;
  type: string;
  /** null means any size (the batch dimension) */
  dims: Array<number | null>;
  /** manifest field that names the value */
  field: string;
  /** manifest field its shape comes from */
  shapeField: string;
}

function findMeta(metas: readonly InferenceSession.ValueMetadata[], name: string) {
  return metas.find((m) => m.name === name);
}

/** Returns the fixed batch size the model declares, or null when it is dynamic. */
function checkValue(file: string, kind: 'input' | 'output', metas: readonly InferenceSession.ValueMetadata[], want: Expectation): number | null {
  const meta = findMeta(metas, want.name);
  if (!meta) {
    const have = metas.map((m) => m.name).join(', ');
    throw new ModelMismatchError(file, want.field, `${file} has no ${kind} named "${want.name}" (${want.field}); its ${kind}s are: ${have}`);
  }
  if (!meta.isTensor) throw new ModelMismatchError(file, want.field, `${file} ${kind} "${want.name}" is not a tensor`);
  if (meta.type !== want.type) {
    throw new ModelMismatchError(file, want.field, `${file} ${kind} "${want.name}" has type ${meta.type}, expected ${want.type}`);
  }
  const shape = meta.shape as readonly Dim[];
  const fmt = (d: ReadonlyArray<Dim | null>) => `[${d.map((v) => (v === null ? 'N' : String(v))).join(', ')}]`;
  if (shape.length !== want.dims.length) {
    throw new ModelMismatchError(file, want.shapeField, `${file} ${kind} "${want.name}" has shape ${fmt(shape)}, expected ${fmt(want.dims)}`);
  }
  want.dims.forEach((d, i) => {
    const got = shape[i];
    // Symbolic or unknown (-1) dims cannot be checked here; the warm-up run checks real shapes.
    if (d !== null && typeof got === 'number' && got >= 0 && got !== d) {
      throw new ModelMismatchError(file, want.shapeField, `${file} ${kind} "${want.name}" has shape ${fmt(shape)}, expected ${fmt(want.dims)}`);
    }
  });
  const batch = shape[0];
  return typeof batch === 'number' && batch > 0 ? batch : null;
}

/**
 * Every input of a model must be one that invad feeds: a run that leaves out a required input
 * fails, so a model with an extra one would fail every score(). Extra outputs are harmless.
 */
function checkOnlyFedInputs(file: string, field: string, metas: readonly InferenceSession.ValueMetadata[], fed: readonly string[]): void {
  const extra = metas.filter((meta) => !fed.includes(meta.name)).map((meta) => `"${meta.name}"`);
  if (extra.length === 0) return;
  const fedList = fed.map((name) => `"${name}"`).join(' and ');
  throw new ModelMismatchError(
    file,
    field,
    `${file} has ${extra.length === 1 ? 'an input' : 'inputs'} ${extra.join(', ')} that invad does not feed (it feeds only ${fedList}), so every run would fail`,
  );
}

export function checkBackbone(session: SessionMetadata, m: Manifest): number | null {
  const file = m.models.backbone.file;
  const { channels: C, height: h, width: w } = m.features;
  const a = checkValue(file, 'input', session.inputMetadata, {
    name: m.models.backbone.inputName,
    type: 'float32',
    dims: [null, 3, m.input.height, m.input.width],
    field: '/models/backbone/inputName',
    shapeField: '/input',
  });
  const b = checkValue(file, 'output', session.outputMetadata, {
    name: m.models.backbone.outputName,
    type: 'float32',
    dims: [null, C, h, w],
    field: '/models/backbone/outputName',
    shapeField: '/features',
  });
  checkOnlyFedInputs(file, '/models/backbone', session.inputMetadata, [m.models.backbone.inputName]);
  return a ?? b;
}

export function checkUnet(session: SessionMetadata, m: Manifest): number | null {
  const file = m.models.unet.file;
  const { channels: C, height: h, width: w } = m.features;
  const x = checkValue(file, 'input', session.inputMetadata, {
    name: m.models.unet.xName,
    type: 'float32',
    dims: [null, C, h, w],
    field: '/models/unet/xName',
    shapeField: '/features',
  });
  checkValue(file, 'input', session.inputMetadata, {
    name: m.models.unet.tName,
    type: 'int64',
    dims: [null],
    field: '/models/unet/tName',
    shapeField: '/models/unet/tName',
  });
  const eps = checkValue(file, 'output', session.outputMetadata, {
    name: m.models.unet.outputName,
    type: 'float32',
    dims: [null, C, h, w],
    field: '/models/unet/outputName',
    shapeField: '/features',
  });
  checkOnlyFedInputs(file, '/models/unet', session.inputMetadata, [m.models.unet.xName, m.models.unet.tName]);
  return x ?? eps;
}

/** Checks a real output's dims, which catches shapes the metadata left symbolic. */
export function checkRunDims(file: string, field: string, name: string, got: readonly number[], want: readonly number[]): void {
  if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
    throw new ModelMismatchError(file, field, `${file} output "${name}" has shape [${got.join(', ')}] at run time, expected [${want.join(', ')}]`);
  }
}
