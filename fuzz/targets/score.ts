/**
 * Target `score`: Detector.score and scoreBatch on both engines with mutated PNG, JPEG, TIFF,
 * WebP and GIF bytes (in buffers of every kind, some resized or detached as soon as the call
 * returns, or written to files), raw-pixel objects with wrong fields, getters and proxies,
 * special paths (FIFOs, folders, NUL bytes, devices, missing files) and values of the wrong
 * type, plus a dispose-while-busy lifecycle.
 *
 * Documented errors: InvadError only. A returned score that is not finite is a wrong result.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Detector, type ScoreResult } from '../../src/runtime/detector';
import { InvadError } from '../../src/util/errors';
import { EXTENSION, seedImages, type SeedImage, specialPaths, writeTinyBundle } from '../fixtures';
import { mutateBytes } from '../mutate';
import type { CaseContext, FuzzTarget } from '../protocol';
import type { Rng } from '../rng';
import { attack, BUFFER_ATTACKS, detach, edgeNumber, FuzzInjectedError, junk, onResizable, onShared, resize } from '../values';

interface State {
  bundle: string;
  detectors: Detector[];
  seeds: SeedImage[];
  special: Array<{ name: string; path: string }>;
  image: string;
}

/** A generated input, what it is, and what to do to it right after the call returns. */
interface Generated {
  input: unknown;
  note: string;
  after?: () => void;
}

function deliverBytes(rng: Rng, ctx: CaseContext, bytes: Uint8Array, format: string): Generated {
  const how = rng.weighted([
    [4, 'buffer'],
    [2, 'u8'],
    [1, 'offset'],
    [1, 'clamped'],
    [2, 'resizable-after'],
    [2, 'detach-after'],
    [1, 'shared'],
    [3, 'file'],
    [1, 'pre-detached'],
    [1, 'arraybuffer'],
  ] as const);
  switch (how) {
    case 'buffer':
      return { input: Buffer.from(bytes), note: how };
    case 'u8':
      return { input: new Uint8Array(bytes), note: how };
    case 'offset': {
      const big = new Uint8Array(bytes.length + 7);
      big.set(bytes, 7);
      return { input: big.subarray(7), note: how };
    }
    case 'clamped':
      return { input: new Uint8ClampedArray(bytes), note: how };
    case 'resizable-after': {
      // Finding 3: encoded bytes on a resizable buffer, shrunk while the decode runs.
      const v = onResizable(bytes, Uint8Array, rng.chance(0.5));
      const kind = rng.pick(BUFFER_ATTACKS);
      return { input: v, note: `${how}:${kind}`, after: () => attack(v.buffer, kind) };
    }
    case 'detach-after': {
      const v = new Uint8Array(bytes);
      return { input: v, note: how, after: () => detach(v.buffer) };
    }
    case 'shared':
      return { input: onShared(bytes, Uint8Array), note: how };
    case 'file': {
      const ext = rng.chance(0.8) ? (EXTENSION[format as keyof typeof EXTENSION] ?? '.bin') : rng.pick(['.png', '.jpg', '.bin', '']);
      const file = join(ctx.dir, `img-${rng.int(0, 1e6)}${ext}`);
      writeFileSync(file, bytes);
      return { input: file, note: `file${ext}` };
    }
    case 'pre-detached': {
      const v = new Uint8Array(bytes);
      detach(v.buffer);
      return { input: v, note: how };
    }
    case 'arraybuffer':
      return { input: new Uint8Array(bytes).buffer, note: how };
  }
}

function encodedInput(rng: Rng, s: State, ctx: CaseContext): Generated {
  const seed = rng.pick(s.seeds);
  const m = mutateBytes(
    rng,
    seed.bytes,
    s.seeds.map((x) => x.bytes),
  );
  const d = deliverBytes(rng, ctx, m.bytes, seed.format);
  // Encoded bytes (mutated or not) in any buffer or file: what the issue counts as decoder inputs.
  ctx.count('decoder inputs');
  return { ...d, note: `${seed.format} ${seed.width}x${seed.height}x${seed.channels} [${m.ops.join(' ') || 'valid'}] as ${d.note}` };
}

function rawInput(rng: Rng): Generated {
  const big = rng.chance(0.03);
  const width = big ? rng.pick([1024, 4096]) : rng.int(1, 40);
  const height = big ? rng.pick([1024, 4096]) : rng.int(1, 40);
  const channels = rng.pick([1, 2, 3, 4]);
  // Plain values first; getters, deletions and proxies go on top at the end.
  const fields: Record<string, unknown> = { data: rng.bytes(width * height * channels), width, height, channels };
  const traps: Array<(raw: Record<string, unknown>) => void> = [];
  let proxy = false;
  const notes: string[] = [big ? `${width}x${height}x${channels}` : 'raw'];
  let after: (() => void) | undefined;
  for (
    let k = rng.weighted([
      [3, 0],
      [4, 1],
      [2, 2],
    ] as const);
    k > 0;
    k--
  ) {
    const m = rng.pick(['length', 'field', 'data-kind', 'resizable-after', 'toctou', 'throw', 'delete', 'proxy'] as const);
    notes.push(m);
    const key = rng.pick(['width', 'height', 'channels']);
    const bytes = fields.data instanceof Uint8Array ? fields.data : new Uint8Array(16);
    if (m === 'length') fields.data = bytes.subarray(0, Math.max(0, bytes.length - rng.int(1, 4)));
    else if (m === 'field') fields[key] = rng.chance(0.7) ? edgeNumber(rng) : junk(rng);
    else if (m === 'data-kind') {
      fields.data = rng.pick([
        new Uint8ClampedArray(bytes),
        new Uint16Array(bytes.length),
        new Float32Array(bytes.length),
        Array.from(bytes.subarray(0, 64)),
        'pixels',
        Buffer.from(bytes),
        onShared(bytes, Uint8Array),
        null,
      ]);
    } else if (m === 'resizable-after') {
      // Finding 3: raw pixels on a resizable buffer, shrunk or detached as soon as score() returns.
      const v = onResizable(bytes, Uint8Array, rng.chance(0.5));
      fields.data = v;
      const kind = rng.pick(BUFFER_ATTACKS);
      notes.push(kind);
      after = () => attack(v.buffer, kind);
    } else if (m === 'toctou') {
      // A getter that answers differently each time it is read.
      traps.push((raw) => {
        const old = Object.getOwnPropertyDescriptor(raw, key);
        let reads = 0;
        const first = (): unknown => (old?.get ? (old.get.call(raw) as unknown) : old?.value);
        Object.defineProperty(raw, key, { enumerable: true, configurable: true, get: () => (reads++ === 0 ? first() : rng.pick([0, 4096, 2 ** 31, -1])) });
      });
      if (rng.chance(0.5)) {
        const v = onResizable(bytes, Uint8Array, true);
        traps.push((raw) => {
          let reads = 0;
          Object.defineProperty(raw, 'data', { enumerable: true, configurable: true, get: () => (reads++ === 0 ? v : (resize(v.buffer, 0), bytes)) });
        });
      }
    } else if (m === 'throw') {
      traps.push((raw) =>
        Object.defineProperty(raw, key, {
          enumerable: true,
          configurable: true,
          get: () => {
            throw new FuzzInjectedError(`raw.${key}`);
          },
        }),
      );
    } else if (m === 'delete') traps.push((raw) => delete raw[key]);
    else proxy = true;
  }
  const raw = { ...fields };
  for (const trap of traps) trap(raw);
  const input = proxy ? new Proxy(raw, { get: (t, p): unknown => (p === 'channels' && rng.chance(0.5) ? 7 : (Reflect.get(t, p) as unknown)) }) : raw;
  return { input, note: notes.join(' '), after };
}

function pathInput(rng: Rng, s: State): Generated {
  const pick = rng.weighted([
    [6, 'special'],
    [1, 'valid'],
    [1, 'relative'],
    [1, 'string-object'],
    [1, 'folder-of-images'],
  ] as const);
  if (pick === 'special') {
    const p = rng.pick(s.special);
    return { input: p.path, note: `path:${p.name}` };
  }
  if (pick === 'valid') return { input: s.image, note: 'path:valid' };
  if (pick === 'relative') return { input: rng.pick(['.', '..', './nope.png', '../../etc/passwd']), note: 'path:relative' };
  if (pick === 'string-object') return { input: new String(s.image), note: 'path:String object' };
  return { input: join(s.bundle, '..'), note: 'path:folder' };
}

function generate(rng: Rng, s: State, ctx: CaseContext): Generated {
  const kind = rng.weighted([
    [45, 'encoded'],
    [25, 'raw'],
    [18, 'path'],
    [12, 'junk'],
  ] as const);
  if (kind === 'encoded') return encodedInput(rng, s, ctx);
  ctx.count(`${kind} inputs`);
  if (kind === 'raw') return rawInput(rng);
  if (kind === 'path') return pathInput(rng, s);
  const j = junk(rng);
  return { input: j, note: `junk:${typeof j}` };
}

function options(rng: Rng, batch: boolean): { value: unknown; note: string } {
  if (rng.chance(0.75)) return { value: undefined, note: '' };
  const o: Record<string, unknown> = {};
  const key = rng.pick(batch ? ['steps', 'allMaps', 'reconstruction', 'batchSize', 'errors', 'junk'] : ['steps', 'allMaps', 'reconstruction', 'junk']);
  if (key === 'junk') return { value: junk(rng), note: 'options:junk' };
  if (key === 'steps') o.steps = rng.chance(0.6) ? rng.int(1, 5) : edgeNumber(rng);
  else if (key === 'allMaps') o.allMaps = rng.chance(0.5) ? true : junk(rng);
  else if (key === 'reconstruction')
    o.reconstruction = rng.chance(0.3)
      ? junk(rng)
      : { tStart: rng.chance(0.5) ? rng.float() : edgeNumber(rng), reconSteps: rng.chance(0.5) ? rng.int(1, 4) : edgeNumber(rng) };
  else if (key === 'batchSize') o.batchSize = rng.chance(0.5) ? rng.int(1, 4) : edgeNumber(rng);
  else o.errors = rng.chance(0.5) ? 'collect' : junk(rng);
  return { value: o, note: `options:${key}` };
}

/** A returned result must be sane: finite score and map, consistent sizes. */
export function checkResult(ctx: CaseContext, what: string, r: ScoreResult): void {
  if (typeof r !== 'object' || r === null) return ctx.wrong(what, `returned ${typeof r}`);
  if (typeof r.score !== 'number' || !Number.isFinite(r.score)) return ctx.wrong(what, `score is ${String(r.score)} (isAnomalous: ${String(r.isAnomalous)})`);
  if (!(r.map instanceof Float32Array) || r.map.length !== r.width * r.height)
    return ctx.wrong(what, `map has ${r.map?.length} values for ${r.width}x${r.height}`);
  for (let i = 0; i < r.map.length; i += Math.max(1, Math.floor(r.map.length / 4096))) {
    if (!Number.isFinite(r.map[i])) return ctx.wrong(what, `map[${i}] is ${r.map[i]}`);
  }
  if (typeof r.isAnomalous !== 'boolean') ctx.wrong(what, `isAnomalous is ${typeof r.isAnomalous}`);
}

async function lifecycle(s: State, ctx: CaseContext): Promise<void> {
  const { rng } = ctx;
  ctx.note('lifecycle: load, score while disposing, score after dispose');
  const loaded = await ctx.call(
    'Detector.load',
    () => Detector.load(s.bundle, { engine: rng.pick(['native', 'onnxruntime-node'] as const), intraOpThreads: 1 }),
    { async: true },
  );
  const det = loaded.value;
  if (!det) return;
  const busy = Array.from({ length: rng.int(1, 6) }, () => ctx.call('score', () => det.score(s.image), { async: true }));
  const disposed = ctx.call('dispose', () => det.dispose(), { async: true });
  await Promise.all(busy);
  await disposed;
  const late = await ctx.call('score after dispose', () => det.score(s.image), { async: true });
  if (late.ok) ctx.wrong('score after dispose', 'resolved instead of rejecting with DisposedError');
}

export const scoreTarget: FuzzTarget<State> = {
  name: 'score',
  description: 'Detector.score/scoreBatch: mutated images of five formats, raw pixels, special paths, junk',
  timeoutMs: 15_000,
  async setup(dir) {
    mkdirSync(dir, { recursive: true });
    const bundle = await writeTinyBundle(join(dir, 'bundle'), { latent: true });
    const seeds = await seedImages();
    const image = join(dir, 'valid.png');
    writeFileSync(image, seeds.find((x) => x.format === 'png' && x.width === 32)!.bytes);
    const detectors = [
      await Detector.load(bundle, { engine: 'native', intraOpThreads: 1 }),
      await Detector.load(bundle, { engine: 'onnxruntime-node', intraOpThreads: 1 }),
    ];
    return { bundle, detectors, seeds, special: specialPaths(join(dir, 'special'), image), image };
  },
  async run(s, ctx) {
    const { rng } = ctx;
    const api = rng.weighted([
      [70, 'score'],
      [20, 'scoreBatch'],
      [8, 'concurrent'],
      [2, 'lifecycle'],
    ] as const);
    if (api === 'lifecycle') return lifecycle(s, ctx);
    const det = rng.pick(s.detectors);
    const engine = det === s.detectors[0] ? 'native' : 'ort';
    const inputs = Array.from({ length: api === 'score' ? 1 : rng.int(1, 5) }, () => generate(rng, s, ctx));
    const opts = options(rng, api === 'scoreBatch');
    ctx.note(`${engine} ${api}(${inputs.map((g) => g.note).join(' | ')}) ${opts.note}`);
    const afterAll = () => inputs.forEach((g) => g.after?.());
    if (api === 'score') {
      const r = await ctx.call(
        'score',
        () => {
          const p = det.score(inputs[0].input as string, opts.value as undefined);
          afterAll();
          return p;
        },
        { async: true },
      );
      if (r.ok) checkResult(ctx, 'score', r.value!);
    } else if (api === 'scoreBatch') {
      const r = await ctx.call(
        'scoreBatch',
        () => {
          const p = det.scoreBatch(inputs.map((g) => g.input) as string[], opts.value as undefined);
          afterAll();
          return p;
        },
        { async: true },
      );
      for (const [i, item] of (r.value ?? []).entries()) {
        if (item instanceof Error && !(item instanceof InvadError)) ctx.wrong('scoreBatch', `slot ${i} holds an untyped ${item.name}: ${item.message}`);
        // An exception of the caller's own becomes the input's InvalidInputError (asInputError); nothing else may be wrapped so.
        else if (item instanceof InvadError && item.message.includes(' could not be read: ') && !(item.cause instanceof FuzzInjectedError))
          ctx.wrong('scoreBatch', `slot ${i} wraps an untyped error: ${item.message}`);
        else if (!(item instanceof Error)) checkResult(ctx, `scoreBatch[${i}]`, item);
      }
    } else {
      const calls = inputs.map((g) =>
        ctx.call(
          'score (concurrent)',
          () => {
            const p = det.score(g.input as string);
            g.after?.();
            return p;
          },
          { async: true },
        ),
      );
      for (const r of await Promise.all(calls)) if (r.ok) checkResult(ctx, 'score (concurrent)', r.value!);
    }
  },
  async teardown(s) {
    await Promise.all(s.detectors.map((d) => d.dispose()));
  },
};
