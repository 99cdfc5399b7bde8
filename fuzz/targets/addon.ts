/**
 * Target `addon`: every function the native addon exports, called with argument lists built
 * from a valid call and then mutated: edge numbers, values of the wrong type, wrong lengths,
 * shared, resizable, length-tracking, shrunk and detached buffers, getters that resize or
 * detach a buffer while the addon reads a later argument, and, for the async variants,
 * buffers resized or detached while the work runs.
 *
 * Documented errors: TypeError and RangeError from the argument checks; for ortProbe and the
 * DeviceResidentPipeline constructor also a plain Error (the library or a session cannot load).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadAddon, type DeviceResidentPipeline, type InvadAddon, type InvadAddonDiagnostics, type NativePipelineOptions } from '../../src/binding';
import { ortLibraryPath } from '../../src/runtime/engine/ort-library';
import { writeTinyBundle, TINY } from '../fixtures';
import type { CaseContext, FuzzTarget } from '../protocol';
import type { Rng } from '../rng';
import {
  attack,
  BUFFER_ATTACKS,
  type BufferAttack,
  detach,
  edgeNumber,
  FuzzInjectedError,
  junk,
  onResizable,
  onShared,
  resize,
  setField,
  show,
  trapProperty,
  cloneObject,
  freshFloats,
} from '../values';

type Addon = InvadAddon & Partial<InvadAddonDiagnostics>;
type AnyFn = (...args: unknown[]) => unknown;

interface State {
  addon: Addon;
  cudaAvailable: boolean;
  pipelineOptions: NativePipelineOptions;
  pipeline?: DeviceResidentPipeline;
  paths: { garbage: string; folder: string; missing: string; backbone: string; unet: string; ort: string };
}

const argumentErrors = (err: unknown) => (err instanceof TypeError || err instanceof RangeError ? err.name : null);
/** ortProbe and the pipeline constructor also throw a plain Error when ONNX Runtime or a session cannot load. */
const loadErrors = (err: unknown) => argumentErrors(err) ?? (err instanceof Error && err.constructor === Error ? 'Error (cannot load)' : null);

/** One argument list under construction: the arguments, and the buffers and objects among them. */
interface Call {
  fn: string;
  args: unknown[];
  /** indices of Float32Array arguments */
  buffers: number[];
  /** index of the shape object, if any */
  shape: number | null;
  /** the buffer to attack after an async call returns, and how */
  after?: { index: number; kind: BufferAttack };
  notes: string[];
}

function bufferOf(v: unknown): ArrayBufferLike | null {
  return ArrayBuffer.isView(v) ? v.buffer : null;
}

/** Replaces buffer argument i by another kind of buffer or by a value of the wrong type. */
function mutateBuffer(rng: Rng, call: Call, i: number): void {
  // An earlier mutation may have replaced, detached or shrunk the buffer already.
  const src = freshFloats(call.args[i]);
  const kind = rng.pick([
    'resizable',
    'tracking',
    'shared',
    'offset',
    'shorter',
    'longer',
    'empty',
    'detached',
    'shrunk',
    'f64',
    'u8',
    'array',
    'arraybuffer',
    'junk',
  ] as const);
  call.notes.push(`arg${i}:${kind}`);
  switch (kind) {
    case 'resizable':
      call.args[i] = onResizable(src, Float32Array, false);
      break;
    case 'tracking':
      call.args[i] = onResizable(src, Float32Array, true);
      break;
    case 'shared':
      call.args[i] = onShared(src, Float32Array);
      break;
    case 'offset': {
      const big = new Float32Array(src.length + 3);
      big.set(src, 3);
      call.args[i] = big.subarray(3);
      break;
    }
    case 'shorter':
      call.args[i] = src.subarray(0, Math.max(0, src.length - rng.int(1, 3)));
      break;
    case 'longer':
      call.args[i] = new Float32Array(src.length + rng.int(1, 5));
      break;
    case 'empty':
      call.args[i] = new Float32Array(0);
      break;
    case 'detached': {
      const copy = new Float32Array(src);
      detach(copy.buffer);
      call.args[i] = copy;
      break;
    }
    case 'shrunk': {
      const v = onResizable(src, Float32Array, rng.chance(0.5));
      resize(v.buffer, rng.chance(0.5) ? 0 : Math.floor(v.byteLength / 2));
      call.args[i] = v;
      break;
    }
    case 'f64':
      call.args[i] = new Float64Array(src.length);
      break;
    case 'u8':
      call.args[i] = new Uint8Array(src.length * 4);
      break;
    case 'array':
      call.args[i] = Array.from(src);
      break;
    case 'arraybuffer':
      call.args[i] = src.buffer;
      break;
    case 'junk':
      call.args[i] = junk(rng);
      break;
  }
}

/**
 * Makes shape field `key` a getter that resizes or detaches a buffer argument when the addon
 * reads it (finding 1: reading JS values after taking the buffer's pointer).
 */
function getterAttack(rng: Rng, call: Call): void {
  if (call.shape === null || call.buffers.length === 0) return;
  const i = rng.pick(call.buffers);
  if (!ArrayBuffer.isView(call.args[i])) return;
  const v = onResizable(freshFloats(call.args[i]), Float32Array, rng.chance(0.5));
  call.args[i] = v;
  const kind = rng.pick(BUFFER_ATTACKS);
  const key = rng.pick(['n', 'c', 'h', 'w']);
  const shape = cloneObject(call.args[call.shape]);
  trapProperty(shape, key, () => attack(v.buffer, kind));
  call.args[call.shape] = shape;
  call.notes.push(`getter shape.${key} -> ${kind} arg${i}`);
}

function mutateShape(rng: Rng, call: Call): void {
  if (call.shape === null) return;
  if (rng.chance(0.2)) {
    call.args[call.shape] = junk(rng);
    call.notes.push('shape:junk');
    return;
  }
  const shape = cloneObject(call.args[call.shape]);
  const key = rng.pick(['n', 'c', 'h', 'w']);
  const how = rng.pick(['edge', 'junk', 'delete', 'throw'] as const);
  if (how === 'edge') setField(shape, key, edgeNumber(rng));
  else if (how === 'junk') setField(shape, key, junk(rng));
  else if (how === 'delete') delete shape[key];
  else
    Object.defineProperty(shape, key, {
      enumerable: true,
      configurable: true,
      get: () => {
        throw new FuzzInjectedError(`shape.${key}`);
      },
    });
  call.args[call.shape] = shape;
  call.notes.push(`shape.${key}:${how}`);
}

function mutateNumber(rng: Rng, call: Call): void {
  const numeric = call.args.map((a, i) => (typeof a === 'number' ? i : -1)).filter((i) => i >= 0);
  if (numeric.length === 0) return;
  const i = rng.pick(numeric);
  call.args[i] = rng.chance(0.8) ? edgeNumber(rng) : junk(rng);
  call.notes.push(`arg${i}:${show(call.args[i])}`);
}

function kernelCall(rng: Rng, fn: string): Call {
  const n = rng.int(1, 3);
  const c = rng.int(1, 8);
  const h = rng.int(1, 12);
  const w = rng.int(1, 12);
  const len = n * c * h * w;
  const scale = rng.pick([1, 1, 1, 1e-30, 1e30]);
  const x = rng.floats(len, scale);
  const eps = rng.chance(0.05) ? x : rng.floats(len, scale);
  const a = rng.float() * 2 - 1;
  const b = rng.float() * 2 - 1;
  const shape = { n, c, h, w };
  const base = fn.replace(/Async$/, '');
  if (base === 'ddimStep') return { fn, args: [x, eps, a, b], buffers: [0, 1], shape: null, notes: [] };
  if (base === 'channelNorm') return { fn, args: [x, shape], buffers: [0], shape: 1, notes: [] };
  if (base === 'resizeBilinear') {
    const src = rng.floats(n * h * w);
    return { fn, args: [src, n, h, w, rng.int(1, 40), rng.int(1, 40)], buffers: [0], shape: null, notes: [] };
  }
  if (base === 'gaussianBlur') {
    // Sigma up to the addon's cap (1024): the work is planes*h*w x (8 sigma + 1), small here.
    const sigma = () => (rng.chance(0.8) ? 0.01 + rng.float() * 4 : rng.pick([1024, 64, 1e-3, 5e-324]));
    return { fn, args: [rng.floats(n * h * w, scale), n, h, w, sigma(), sigma()], buffers: [0], shape: null, notes: [] };
  }
  return { fn, args: [x, eps, a, b, shape], buffers: [0, 1], shape: 4, notes: [] };
}

const KERNELS = ['ddimStep', 'channelNorm', 'ddimLastStepReduce', 'resizeBilinear', 'ddimLastStepReduceUnfused', 'gaussianBlur'];
const ASYNC_KERNELS = ['ddimStepAsync', 'channelNormAsync', 'ddimLastStepReduceAsync', 'resizeBilinearAsync'];

/** Every value finite; false for a detached or out-of-bounds view (which the call must refuse). */
function allFinite(v: Float32Array): boolean {
  try {
    return v.every((x) => Number.isFinite(x));
  } catch {
    return false;
  }
}

async function fuzzKernel(s: State, ctx: CaseContext, fn: string): Promise<void> {
  const { rng } = ctx;
  const call = kernelCall(rng, fn);
  const mutations = rng.weighted([
    [2, 0],
    [4, 1],
    [2, 2],
    [1, 3],
  ] as const);
  for (let k = 0; k < mutations; k++) {
    const m = rng.weighted([
      [3, 'buffer'],
      [3, 'number'],
      [2, 'shape'],
      [3, 'getter'],
      [1, 'count'],
      [1, 'huge'],
    ] as const);
    if (m === 'buffer' && call.buffers.length) mutateBuffer(rng, call, rng.pick(call.buffers));
    else if (m === 'number') mutateNumber(rng, call);
    else if (m === 'shape') mutateShape(rng, call);
    else if (m === 'getter') getterAttack(rng, call);
    else if (m === 'count') {
      if (rng.chance(0.5)) call.args.length = rng.int(0, call.args.length - 1);
      else call.args.push(junk(rng));
      call.notes.push(`argc:${call.args.length}`);
    } else if (m === 'huge') {
      // Sizes inside the documented caps that cannot be allocated (finding 4).
      if (call.fn.startsWith('resizeBilinear')) {
        call.args[rng.pick([4, 5])] = rng.pick([2 ** 31 - 1, 2 ** 20, 2 ** 24, 65536 * 4]);
      } else if (call.fn === 'gaussianBlur') {
        call.args[rng.pick([1, 2, 3])] = rng.pick([2 ** 31 - 1, 2 ** 20, 2 ** 30]);
      } else if (call.shape !== null) {
        const shape = cloneObject(call.args[call.shape]);
        setField(shape, rng.pick(['n', 'c', 'h', 'w']), rng.pick([2 ** 31 - 1, 2 ** 20, 2 ** 30]));
        call.args[call.shape] = shape;
      }
      call.notes.push('huge');
    }
  }
  if (fn.endsWith('Async') && call.buffers.length && rng.chance(0.35)) {
    // Finding 2: the caller resizes or detaches a buffer while the async kernel runs.
    const index = rng.pick(call.buffers);
    if (ArrayBuffer.isView(call.args[index]) && !(call.args[index] instanceof Float32Array && bufferOf(call.args[index]) instanceof SharedArrayBuffer)) {
      if (rng.chance(0.6)) call.args[index] = onResizable(freshFloats(call.args[index]), Float32Array, rng.chance(0.5));
      call.after = { index, kind: rng.pick(BUFFER_ATTACKS) };
      call.notes.push(`after-call ${call.after.kind} arg${index}`);
    }
  }
  ctx.note(`${fn}(${call.notes.join(', ') || 'valid'})`);
  if (fn.startsWith('resizeBilinear')) {
    // A resize output of up to 2^31 elements (8 GiB) is within the addon's cap: allocating and
    // filling 10^9 of them takes 10-20 s on 2 loaded cores. That is slow, not hung.
    const [planes, , , outH, outW] = call.args.slice(1, 6);
    const elements = [planes, outH, outW].every((v) => typeof v === 'number' && v >= 1) ? (planes as number) * (outH as number) * (outW as number) : 0;
    if (elements >= 2 ** 26) ctx.allow(180_000, `resize to ${elements} elements`);
  }
  const f = (s.addon as unknown as Record<string, AnyFn>)[fn];
  // The resize and the blur average their input with non-negative weights: finite in, finite out.
  const src = call.args[0];
  const finiteIn = (fn === 'gaussianBlur' || fn === 'resizeBilinear') && src instanceof Float32Array && allFinite(src);
  const r = await ctx.call(
    fn,
    () => {
      const out = f.apply(s.addon, call.args);
      if (call.after) {
        const buf = bufferOf(call.args[call.after.index]);
        if (buf) attack(buf, call.after.kind);
      }
      return out;
    },
    { typed: argumentErrors },
  );
  if (r.ok && finiteIn && r.value instanceof Float32Array) {
    const bad = r.value.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) ctx.wrong(fn, `output[${bad}] is ${r.value[bad]} for a finite input`);
  }
}

function validPipelineOptions(dir: string, ort: string): NativePipelineOptions {
  return {
    ortLibraryPath: ort,
    backbonePath: join(dir, 'bundle', 'backbone.onnx'),
    unetPath: join(dir, 'bundle', 'unet.onnx'),
    backbone: { inputName: 'image', outputName: 'features' },
    unet: { xName: 'x', tName: 't', outputName: 'eps' },
    input: { height: TINY.input, width: TINY.input },
    features: { channels: TINY.channels, height: TINY.side, width: TINY.side },
    providers: ['cpu'],
    cpuThreads: 1,
  };
}

function steps(rng: Rng): Array<{ t: number; a: number; b: number }> {
  return Array.from({ length: rng.int(1, 4) }, () => ({ t: rng.int(0, 999), a: rng.float() + 0.5, b: rng.float() - 0.5 }));
}

/** runAsync / featuresAsync on an open pipeline (finding 1: steps[i] read after the batch). */
async function fuzzPipelineRun(s: State, ctx: CaseContext): Promise<void> {
  const { rng } = ctx;
  s.pipeline ??= new s.addon.DeviceResidentPipeline(s.pipelineOptions);
  const n = rng.int(1, 3);
  let batch: unknown = rng.floats(n * 3 * TINY.input * TINY.input);
  let count: unknown = n;
  let stepList: unknown = steps(rng);
  let options: unknown = rng.chance(0.5) ? { latents: rng.chance(0.5) } : undefined;
  const notes: string[] = [];
  let after: BufferAttack | undefined;
  const mutations = rng.int(0, 2);
  for (let k = 0; k < mutations; k++) {
    const m = rng.pick(['batch', 'n', 'steps', 'step-getter', 'options', 'after'] as const);
    notes.push(m);
    if (m === 'batch') {
      const call: Call = { fn: '', args: [batch], buffers: [0], shape: null, notes };
      mutateBuffer(rng, call, 0);
      batch = call.args[0];
    } else if (m === 'n') count = rng.chance(0.8) ? edgeNumber(rng) : junk(rng);
    else if (m === 'steps') stepList = rng.chance(0.5) ? junk(rng) : [...(Array.isArray(stepList) ? (stepList as unknown[]) : []), junk(rng)];
    else if (m === 'step-getter' && ArrayBuffer.isView(batch) && Array.isArray(stepList) && stepList.length) {
      const v = onResizable(freshFloats(batch), Float32Array, rng.chance(0.5));
      batch = v;
      const kind = rng.pick(BUFFER_ATTACKS);
      const step = cloneObject(stepList[rng.int(0, stepList.length - 1)]);
      trapProperty(step, rng.pick(['t', 'a', 'b']), () => attack(v.buffer, kind));
      stepList[0] = step;
      notes.push(kind);
    } else if (m === 'options') options = junk(rng);
    else if (m === 'after') after = rng.pick(BUFFER_ATTACKS);
  }
  const features = rng.chance(0.25);
  ctx.note(`pipeline.${features ? 'featuresAsync' : 'runAsync'}(${notes.join(', ') || 'valid'})`);
  const p = s.pipeline;
  await ctx.call(
    features ? 'featuresAsync' : 'runAsync',
    () => {
      const out = features ? (p.featuresAsync as AnyFn).call(p, batch, count) : (p.runAsync as AnyFn).call(p, batch, count, stepList, options);
      const buf = bufferOf(batch);
      if (after && buf) attack(buf, after);
      return out;
    },
    { typed: argumentErrors },
  );
}

/** A new pipeline from mutated options, used once and released. */
async function fuzzPipelineNew(s: State, ctx: CaseContext): Promise<void> {
  const { rng } = ctx;
  const o = JSON.parse(JSON.stringify(s.pipelineOptions)) as Record<string, unknown>;
  const notes: string[] = [];
  for (let k = rng.int(0, 2); k > 0; k--) {
    const key = rng.pick([
      'ortLibraryPath',
      'backbonePath',
      'unetPath',
      'backbone',
      'unet',
      'input',
      'features',
      'providers',
      'cpuThreads',
      'cpuSpinning',
      'maxBatch',
      'cudaGraph',
      'tensorrt',
      'whole',
    ] as const);
    notes.push(key);
    if (key.endsWith('Path')) o[key] = rng.pick([s.paths.garbage, s.paths.folder, s.paths.missing, '', s.paths.unet, s.paths.backbone, junk(rng)]);
    else if (key === 'providers') o.providers = rng.pick([[], ['cuda'], ['tensorrt', 'cpu'], ['bogus'], junk(rng)]);
    else if (key === 'cpuThreads') {
      // Thousands of threads are finding 14's business (bundle target); here only the checks.
      const v = edgeNumber(rng);
      o.cpuThreads = v > 16 && v < 2 ** 31 ? 2 ** 31 : v;
    } else if (key === 'input' || key === 'features') {
      const obj = { ...(o[key] as Record<string, unknown>) };
      const field = rng.pick(Object.keys(obj));
      obj[field] = rng.chance(0.5) ? rng.int(1, 64) : edgeNumber(rng);
      o[key] = obj;
    } else if (key === 'whole') {
      ctx.note('DeviceResidentPipeline(junk)');
      await ctx.call('DeviceResidentPipeline', () => new (s.addon.DeviceResidentPipeline as unknown as new (o: unknown) => DeviceResidentPipeline)(junk(rng)), {
        typed: loadErrors,
      });
      return;
    } else o[key] = rng.chance(0.5) ? junk(rng) : edgeNumber(rng);
  }
  ctx.note(`new DeviceResidentPipeline(${notes.join(', ') || 'valid'})`);
  const made = await ctx.call('DeviceResidentPipeline', () => new s.addon.DeviceResidentPipeline(o as unknown as NativePipelineOptions), { typed: loadErrors });
  const p = made.value;
  if (!p) return;
  try {
    await ctx.call('providers', () => p.providers(), { typed: argumentErrors });
    await ctx.call('metadata', () => p.metadata(), { typed: argumentErrors });
    const n = 1;
    // Options the models do not fit open fine and fail in ONNX Runtime's run: a plain Error the
    // runtime turns into InferenceError (its model checks reject such bundles at load).
    const ortRun = (err: unknown) => argumentErrors(err) ?? (err instanceof Error && err.message.startsWith('OrtApi::') ? 'Error (ONNX Runtime run)' : null);
    await ctx.call('runAsync', () => p.runAsync(rng.floats(n * 3 * TINY.input * TINY.input), n, steps(rng)), { typed: ortRun });
  } finally {
    p.release();
  }
}

async function fuzzMisc(s: State, ctx: CaseContext): Promise<void> {
  const { rng } = ctx;
  const which = rng.pick(['buildInfo', 'cudaStatus', 'ortProbe', 'cudaKernelCheck', 'deviceSelfTest'] as const);
  if (which === 'ortProbe') {
    const path = rng.pick([s.paths.ort, s.paths.ort, s.paths.garbage, s.paths.folder, s.paths.missing, '', junk(rng)]);
    const options = rng.pick([undefined, { cudaDeviceId: edgeNumber(rng) }, junk(rng)]);
    const device = Object.getOwnPropertyDescriptor(cloneObject(options), 'cudaDeviceId');
    ctx.note(`ortProbe(${show(path)}, ${device ? `cudaDeviceId ${show(device.value)}` : show(options)})`);
    await ctx.call('ortProbe', () => (s.addon.ortProbe as AnyFn)(path, options), { typed: loadErrors });
    return;
  }
  if (which === 'cudaKernelCheck') {
    if (!s.addon.cudaKernelCheck) return;
    const shape: Record<string, unknown> = { n: rng.int(1, 2), c: rng.int(1, 8), h: rng.int(1, 16), w: rng.int(1, 16) };
    if (rng.chance(0.4)) shape[rng.pick(['n', 'c', 'h', 'w'])] = rng.chance(0.5) ? rng.pick([6000, 2 ** 16, 2 ** 31 - 1]) : junk(rng);
    // Many repetitions on a real GPU are slow, not wrong: only without CUDA are they free.
    const reps = rng.chance(0.5) ? undefined : s.cudaAvailable ? rng.int(1, 3) : edgeNumber(rng);
    ctx.note(
      `cudaKernelCheck(${Object.entries(shape)
        .map(([k, v]) => `${k}:${show(v)}`)
        .join(' ')}, ${show(reps)})`,
    );
    await ctx.call('cudaKernelCheck', () => (s.addon.cudaKernelCheck as AnyFn)(shape, reps), { typed: argumentErrors });
    return;
  }
  if (which === 'deviceSelfTest' && !s.addon.deviceSelfTest) return;
  // deviceSelfTest runs its stand-in models on the host (a few ms), and on a GPU too where there
  // is one: there only its argument check.
  const args = rng.chance(0.5) && !(which === 'deviceSelfTest' && s.cudaAvailable) ? [] : [junk(rng), junk(rng)];
  ctx.note(`${which}(${args.length} junk args)`);
  const r = await ctx.call(which, () => (s.addon[which] as AnyFn)(...args), { typed: argumentErrors });
  const host = which === 'deviceSelfTest' && r.ok ? (r.value as { host?: { ok?: boolean; error?: string } }).host : undefined;
  if (host && host.ok !== true) ctx.wrong(which, `the host engine disagrees with the CPU kernels: ${host.error ?? JSON.stringify(host)}`);
}

export const addonTarget: FuzzTarget<State> = {
  name: 'addon',
  description: "the native addon's exported functions: mutated arguments, getters, resized and detached buffers",
  timeoutMs: 10_000,
  async setup(dir) {
    mkdirSync(dir, { recursive: true });
    const addon = loadAddon() as Addon;
    await writeTinyBundle(join(dir, 'bundle'));
    const garbage = join(dir, 'garbage.so');
    writeFileSync(garbage, Buffer.from('not a shared library\n'.repeat(10)));
    mkdirSync(join(dir, 'folder'), { recursive: true });
    const ort = ortLibraryPath();
    return {
      addon,
      cudaAvailable: addon.cudaStatus().available,
      pipelineOptions: validPipelineOptions(dir, ort),
      paths: {
        garbage,
        folder: join(dir, 'folder'),
        missing: join(dir, 'missing.so'),
        backbone: join(dir, 'bundle', 'backbone.onnx'),
        unet: join(dir, 'bundle', 'unet.onnx'),
        ort,
      },
    };
  },
  async run(s, ctx) {
    const { rng } = ctx;
    const available = [...KERNELS, ...ASYNC_KERNELS].filter((k) => typeof (s.addon as unknown as Record<string, unknown>)[k] === 'function');
    const kind = rng.weighted([
      [90, 'kernel'],
      [5, 'run'],
      [1, 'new'],
      [4, 'misc'],
    ] as const);
    if (kind === 'kernel') await fuzzKernel(s, ctx, rng.pick(available));
    else if (kind === 'run') await fuzzPipelineRun(s, ctx);
    else if (kind === 'new') await fuzzPipelineNew(s, ctx);
    else await fuzzMisc(s, ctx);
  },
  teardown(s) {
    s.pipeline?.release();
    return Promise.resolve();
  },
};
