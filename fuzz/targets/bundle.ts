/**
 * Target `bundle`: Detector.load on variants of a valid bundle (latent statistics and a
 * per-S calibration included): mutated manifest fields, both schema-breaking and
 * schema-valid but meaningless (a tiny scale, a huge center, steps past the statistics);
 * truncated, empty, garbage, swapped or wrong-shaped model files, with or without a matching
 * sha256; .npy files of the wrong shape, dtype, length or contents; FIFOs, folders and
 * devices in place of files; and mutated load options. A bundle that loads must score, with
 * finite results, and dispose.
 *
 * Documented errors: InvadError only.
 */
import { cpSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Detector } from '../../src/runtime/detector';
import { MANIFEST_FILE } from '../../src/runtime/bundle/load';
import { sha256Bytes } from '../../src/runtime/bundle/hash';
import { convBackbone, linearUnet } from '../../src/fit/onnx/synthetic';
import { encodeNpy } from '../../src/util/npy';
import { makeFifo, TINY, writeTinyBundle } from '../fixtures';
import type { FuzzTarget } from '../protocol';
import type { Rng } from '../rng';
import { edgeNumber, junk, show } from '../values';
import { checkResult } from './score';

interface State {
  base: string;
  /** models that open but do not fit the manifest */
  wrongModels: Uint8Array[];
}

type Json = Record<string, unknown>;

/** Every path in a JSON value, as keys from the root. */
function paths(v: unknown, prefix: Array<string | number> = []): Array<Array<string | number>> {
  if (typeof v !== 'object' || v === null) return [prefix];
  const keys: Array<string | number> = Array.isArray(v) ? v.map((_, i) => i) : Object.keys(v);
  return [prefix, ...keys.flatMap((k) => paths((v as Json)[k as string], [...prefix, k]))];
}

function setAt(root: Json, path: ReadonlyArray<string | number>, value: unknown, remove = false): void {
  if (path.length === 0) return;
  let o = root as Record<string | number, unknown>;
  for (const k of path.slice(0, -1)) {
    if (typeof o[k] !== 'object' || o[k] === null) return;
    o = o[k] as Record<string | number, unknown>;
  }
  const last = path[path.length - 1];
  if (remove) delete o[last];
  else o[last] = value;
}

/** Manifest values that pass the schema but mean trouble (findings 7, 8, 9). */
function semantic(rng: Rng, m: Json): string {
  const latent = (m.latentGaussian as Json[] | undefined) ?? [];
  const choices: Array<[string, () => void]> = [
    ['defaultSteps 5000', () => setAt(m, ['schedule', 'defaultSteps'], rng.pick([999, 1000, 5000, 100000]))],
    ['trainSteps', () => setAt(m, ['schedule', 'trainSteps'], rng.pick([2, 3, 100000]))],
    ['betas near 1', () => (setAt(m, ['schedule', 'betaStart'], 0.999), setAt(m, ['schedule', 'betaEnd'], 0.9999999))],
    ['betas tiny', () => (setAt(m, ['schedule', 'betaStart'], 5e-324), setAt(m, ['schedule', 'betaEnd'], 5e-324))],
    ['scale 5e-324', () => setAt(m, ['calibration', rng.pick(['sp', 'nll', 'latentGaussian']), 'scale'], 5e-324)],
    ['center 1.7e308', () => setAt(m, ['calibration', rng.pick(['sp', 'nll', 'latentGaussian']), 'center'], rng.pick([1.7e308, -1.7e308]))],
    ['bySteps scale', () => setAt(m, ['calibration', 'bySteps', rng.int(0, 1), rng.pick(['sp', 'nll', 'latentGaussian']), 'scale'], rng.pick([5e-324, 1e308]))],
    ['thresholds', () => setAt(m, ['calibration', rng.pick(['imageThreshold', 'pixelThreshold'])], rng.pick([1e308, -1e308, 0, null]))],
    ['features', () => setAt(m, ['features', rng.pick(['channels', 'height', 'width'])], rng.int(1, 12))],
    ['input size', () => setAt(m, ['input', rng.pick(['width', 'height'])], rng.pick([1, 8, 31, 33, 256, 16384, 65536]))],
    ['latent steps', () => latent.length && setAt(m, ['latentGaussian', rng.int(0, latent.length - 1), 'steps'], rng.pick([1, 4, 5, 100000]))],
    ['latent removed', () => setAt(m, ['latentGaussian'], undefined, true)],
    ['latent regularization', () => latent.length && setAt(m, ['latentGaussian', 0, 'regularization'], rng.pick([0, -1, 1e308, 5e-324]))],
    ['definition', () => setAt(m, ['score', 'definition'], rng.pick(['sp', 'nll', 'combined', 'latent-gaussian']))],
    ['files swapped', () => (setAt(m, ['models', 'backbone', 'file'], 'unet.onnx'), setAt(m, ['models', 'unet', 'file'], 'backbone.onnx'))],
    ['file is npy', () => setAt(m, ['models', rng.pick(['backbone', 'unet']), 'file'], 'latent_mean_s2.npy')],
    [
      'tensor name',
      () =>
        setAt(
          m,
          ['models', rng.pick(['backbone', 'unet']), rng.pick(['inputName', 'outputName', 'xName', 'tName'])],
          rng.pick(['nope', 'x', 't', 'eps', 'features', 'image']),
        ),
    ],
    ['mean/std', () => setAt(m, ['input', rng.pick(['mean', 'std']), rng.int(0, 2)], rng.pick([1e308, 5e-324, -1e308]))],
    [
      'map smoothing',
      () =>
        setAt(m, ['mapSmoothing'], {
          kind: rng.chance(0.9) ? 'gaussian' : rng.pick(['box', '']),
          sigmaPx: rng.chance(0.6) ? 0.25 + rng.float() * 8 : rng.pick([64, 65, 5e-324, 0, -1, 1e308]),
          atInputSize: rng.chance(0.6) ? rng.pick([TINY.input, 224]) : rng.pick([1, 2, 2 ** 31, 0, 1.5]),
        }),
    ],
  ];
  const [name, apply] = rng.pick(choices);
  apply();
  return name;
}

/** A generic mutation of one manifest field, or the manifest's text itself. */
function field(rng: Rng, m: Json): string {
  const all = paths(m).filter((p) => p.length > 0);
  const p = rng.pick(all);
  const how = rng.pick(['edge', 'junk-json', 'delete', 'extra', 'string'] as const);
  if (how === 'edge') setAt(m, p, edgeNumber(rng));
  else if (how === 'junk-json') setAt(m, p, rng.pick([null, true, '', [], {}, 'x'.repeat(3000), -1, 0]));
  else if (how === 'delete') setAt(m, p, undefined, true);
  else if (how === 'extra') setAt(m, [...p.slice(0, -1), 'fuzzExtra'], 1);
  else setAt(m, p, rng.pick(['../manifest.json', '/etc/passwd', 'unet.onnx', 'nonexistent.onnx', '\u0000', '.', '..']));
  return `${how} /${p.join('/')}`;
}

function setSha(m: Json, file: string, sha: string): void {
  // Earlier mutations may have left any value anywhere: only objects get a hash.
  const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null;
  const models = isObject(m.models) ? m.models : {};
  for (const key of ['backbone', 'unet']) {
    const entry = models[key];
    if (isObject(entry) && entry.file === file) entry.sha256 = sha;
  }
  for (const g of Array.isArray(m.latentGaussian) ? (m.latentGaussian as unknown[]) : []) {
    if (!isObject(g)) continue;
    if (g.meanFile === file) g.meanSha256 = sha;
    if (g.precisionFile === file) g.precisionSha256 = sha;
  }
}

function modelBytes(rng: Rng, s: State, dir: string, file: string): { bytes: Uint8Array; note: string } {
  const orig = readFileSync(join(dir, file));
  const how = rng.pick(['truncate', 'empty', 'garbage', 'flips', 'other', 'wrong-shape', 'zeros'] as const);
  if (how === 'truncate') return { bytes: orig.subarray(0, rng.int(0, orig.length - 1)), note: how };
  if (how === 'empty') return { bytes: new Uint8Array(0), note: how };
  if (how === 'garbage') return { bytes: rng.bytes(rng.int(1, 4096)), note: how };
  if (how === 'zeros') return { bytes: new Uint8Array(orig.length), note: how };
  if (how === 'flips') {
    const b = new Uint8Array(orig);
    for (let k = rng.int(1, 20); k > 0; k--) b[rng.int(0, b.length - 1)] ^= 1 << rng.int(0, 7);
    return { bytes: b, note: how };
  }
  if (how === 'other') return { bytes: readFileSync(join(dir, file === 'unet.onnx' ? 'backbone.onnx' : 'unet.onnx')), note: how };
  return { bytes: rng.pick(s.wrongModels), note: how };
}

/** A .npy file with any header text, for headers encodeNpy refuses to write. */
function rawNpy(header: string, data: Float32Array | Float64Array): Buffer {
  const head = Buffer.alloc(10);
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]).copy(head);
  const text = header.padEnd(Math.ceil((header.length + 11) / 64) * 64 - 11, ' ') + '\n';
  head.writeUInt16LE(text.length, 8);
  return Buffer.concat([head, Buffer.from(text, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

function npyBytes(rng: Rng): { bytes: Uint8Array; note: string } {
  const { channels: c, side } = TINY;
  const positions = side * side;
  const how = rng.pick(['shape', 'count', 'int64', 'nan', 'inf', 'truncated', 'header', 'f8', 'fortran', 'huge'] as const);
  const fill = (n: number, v: number) => new Float32Array(n).fill(v);
  switch (how) {
    case 'shape': {
      const shape = rng.pick([[positions, c + 1], [positions - 1, c], [c, positions], [positions, c, c, 1], [1]]);
      return {
        bytes: encodeNpy(
          fill(
            shape.reduce((a, b) => a * b, 1),
            0.5,
          ),
          shape,
        ),
        note: `shape [${shape.join(', ')}]`,
      };
    }
    case 'count': {
      // the header says one thing, the data another
      const good = encodeNpy(fill(positions * c, 1), [positions, c]);
      return { bytes: rng.chance(0.5) ? good.subarray(0, good.length - 4) : Buffer.concat([good, Buffer.alloc(4)]), note: how };
    }
    case 'int64':
      return { bytes: encodeNpy(new BigInt64Array(positions * c * c).fill(1n), [positions, c, c]), note: how };
    case 'nan':
      return { bytes: encodeNpy(fill(positions * c * c, NaN), [positions, c, c]), note: how };
    case 'inf':
      return { bytes: encodeNpy(fill(positions * c * c, Infinity), [positions, c, c]), note: how };
    case 'truncated':
      return { bytes: encodeNpy(fill(positions * c, 1), [positions, c]).subarray(0, rng.int(0, 70)), note: how };
    case 'header': {
      const b = Buffer.from(encodeNpy(fill(positions * c, 1), [positions, c]));
      for (let k = rng.int(1, 8); k > 0; k--) b[rng.int(0, 63)] = rng.int(0, 255);
      return { bytes: b, note: how };
    }
    case 'f8':
      return { bytes: rawNpy(`{'descr': '<f8', 'fortran_order': False, 'shape': (${positions}, ${c}), }`, new Float64Array(positions * c).fill(1)), note: how };
    case 'fortran':
      return { bytes: rawNpy(`{'descr': '<f4', 'fortran_order': True, 'shape': (${positions}, ${c}), }`, fill(positions * c, 1)), note: how };
    case 'huge':
      return { bytes: rawNpy(`{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, ${c}), }`, fill(4, 1)), note: how };
  }
}

/** Puts something that is not a regular file where a bundle file should be. */
function special(rng: Rng, dir: string, file: string): string {
  const path = join(dir, file);
  rmSync(path, { recursive: true, force: true });
  const how = rng.pick(['fifo', 'folder', 'dev-zero', 'missing', 'self-link'] as const);
  if (how === 'fifo') makeFifo(path);
  else if (how === 'folder') mkdirSync(path);
  else if (how === 'dev-zero') symlinkSync('/dev/zero', path);
  else if (how === 'self-link') symlinkSync(path, path);
  return `${file}:${how}`;
}

function loadOptions(rng: Rng): { value: unknown; note: string } {
  const o: Record<string, unknown> = { engine: rng.pick(['native', 'onnxruntime-node']), intraOpThreads: 1 };
  if (rng.chance(0.7)) return { value: o, note: String(o.engine) };
  const key = rng.pick([
    'steps',
    'maxBatchSize',
    'intraOpThreads',
    'threadSpinning',
    'scoreDefinition',
    'threshold',
    'verifyHashes',
    'executionProviders',
    'maxWaitMs',
    'cudaDeviceId',
    'tensorrt',
    'engine',
    'junk',
  ]);
  if (key === 'junk') return { value: junk(rng), note: 'options:junk' };
  if (key === 'intraOpThreads') o.intraOpThreads = rng.chance(0.1) ? 1024 : edgeNumber(rng);
  else if (key === 'executionProviders') o.executionProviders = rng.pick([[], ['cuda', 'cpu'], ['bogus'], ['dml'], junk(rng)]);
  else if (key === 'verifyHashes') o.verifyHashes = rng.chance(0.5) ? false : junk(rng);
  else if (key === 'steps') o.steps = rng.chance(0.5) ? rng.int(1, 6) : edgeNumber(rng);
  else o[key] = rng.chance(0.6) ? edgeNumber(rng) : junk(rng);
  // show(), not String(): the engine may be junk, such as a proxy whose traps throw.
  return { value: o, note: `${show(o.engine)} ${key}=${show(o[key])}` };
}

export const bundleTarget: FuzzTarget<State> = {
  name: 'bundle',
  description: 'Detector.load on mutated bundles (manifest fields, model files, .npy files, special files) and options',
  timeoutMs: 20_000,
  async setup(dir) {
    mkdirSync(dir, { recursive: true });
    const base = await writeTinyBundle(join(dir, 'base'), { latent: true });
    const { channels, side } = TINY;
    const wrongModels = [
      linearUnet({ channels, height: side, width: side, k: 0.7, m: 1e-4, outputChannels: channels + 1 }),
      linearUnet({ channels, height: side, width: side, k: 0.7, m: 1e-4, tElemType: 'float32' }),
      linearUnet({ channels, height: side, width: side, k: 0.7, m: 1e-4, batchDim: 2 }),
      linearUnet({ channels: channels + 2, height: side, width: side, k: 0.7, m: 1e-4 }),
      convBackbone({ height: TINY.input * 2, width: TINY.input * 2, channels, stride: TINY.stride, seed: 3 }),
      convBackbone({ height: TINY.input, width: TINY.input, channels: channels - 1, stride: TINY.stride, seed: 3 }),
    ];
    return { base, wrongModels };
  },
  async run(s, ctx) {
    const { rng } = ctx;
    const dir = join(ctx.dir, 'bundle');
    cpSync(s.base, dir, { recursive: true });
    const m = JSON.parse(readFileSync(join(dir, MANIFEST_FILE), 'utf8')) as Json;
    const notes: string[] = [];
    if (rng.chance(1 / 3)) {
      // A third start from a bundle with map smoothing: the blur then runs in the engine worker,
      // whose exit once unloaded the addon under its thread pool (SIGSEGV).
      m.mapSmoothing = { kind: 'gaussian', sigmaPx: 0.25 + rng.float() * 4, atInputSize: TINY.input };
      notes.push('smoothed');
    }
    let manifestText: string | null = null;
    let replaced: string | null = null;
    for (
      let k = rng.weighted([
        [1, 0],
        [6, 1],
        [3, 2],
      ] as const);
      k > 0;
      k--
    ) {
      const kind = rng.weighted([
        [5, 'semantic'],
        [3, 'field'],
        [3, 'model'],
        [3, 'npy'],
        [2, 'special'],
        [1, 'text'],
      ] as const);
      if (kind === 'semantic') notes.push(semantic(rng, m));
      else if (kind === 'field') notes.push(field(rng, m));
      else if (kind === 'model' || kind === 'npy') {
        const file =
          kind === 'model'
            ? rng.pick(['backbone.onnx', 'unet.onnx'])
            : rng.pick(['latent_mean_s2.npy', 'latent_precision_s2.npy', 'latent_mean_s3.npy', 'latent_precision_s3.npy']);
        const { bytes, note } = kind === 'model' ? modelBytes(rng, s, dir, file) : npyBytes(rng);
        writeFileSync(join(dir, file), bytes);
        // With the right hash the bytes get past the hash check to the model or .npy reader.
        const matched = rng.chance(0.65);
        if (matched) setSha(m, file, sha256Bytes(bytes));
        notes.push(`${file}:${note}${matched ? ' (sha matches)' : ''}`);
      } else if (kind === 'special') {
        replaced = rng.pick([MANIFEST_FILE, 'backbone.onnx', 'unet.onnx', 'latent_mean_s2.npy', 'latent_precision_s3.npy']);
        notes.push(`special ${replaced}`);
      } else {
        manifestText = rng.pick(['', '{', 'null', '[]', '"x"', '{"format":"invad-bundle"}', '\ufeff{}', '{"a":' + '['.repeat(5000) + ']'.repeat(5000) + '}']);
        notes.push(`manifest text ${manifestText.slice(0, 20)}`);
      }
    }
    writeFileSync(join(dir, MANIFEST_FILE), manifestText ?? JSON.stringify(m, null, 1));
    if (replaced) notes.push(special(rng, dir, replaced));
    const opts = loadOptions(rng);
    ctx.note(`${notes.join('; ') || 'valid'} | ${opts.note}`);
    const loaded = await ctx.call('Detector.load', () => Detector.load(dir, opts.value as undefined), { async: true });
    const det = loaded.value;
    if (!det) return;
    try {
      // Mostly the model's input size; else any size, so the map's resize and blur see odd shapes.
      const [width, height] = rng.chance(0.7) ? [TINY.input, TINY.input] : [rng.int(1, 80), rng.int(1, 80)];
      const raw = { data: rng.bytes(width * height * 3), width, height, channels: 3 as const };
      const r = await ctx.call('score', () => det.score(raw), { async: true });
      if (r.ok) checkResult(ctx, 'score', r.value!);
      const batch = await ctx.call('scoreBatch', () => det.scoreBatch([raw, raw], { errors: 'collect', allMaps: true }), { async: true });
      for (const item of batch.value ?? []) if (!(item instanceof Error)) checkResult(ctx, 'scoreBatch', item);
      if (rng.chance(0.3)) {
        const steps = rng.chance(0.5) ? rng.int(1, 5) : edgeNumber(rng);
        const lat = await ctx.call('latents', () => det.latents([raw], steps), { async: true });
        const f = det.info().featureShape;
        if (lat.ok && !(lat.value instanceof Float32Array && lat.value.length === f.channels * f.height * f.width))
          ctx.wrong('latents', `returned ${lat.value?.length} values`);
      }
    } finally {
      await ctx.call('dispose', () => det.dispose(), { async: true });
    }
  },
};
