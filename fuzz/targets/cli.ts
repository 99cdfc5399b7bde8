/**
 * Target `cli`: the `invad` command line with random argument lists: each command with a
 * random choice of its options, from good values, bad values and special paths (a FIFO in a
 * folder `invad score` scans, missing files, devices), plus argument lists of random tokens.
 * Each case runs dist/src/tools/cli/main.js in its own process.
 *
 * The exit-code convention decides: 0 ok; 1 or 2 typed (an input failed, or usage); 3 (an
 * internal error) untyped; a signal or any other code a crash; no exit in time a hang.
 */
import { spawn } from 'node:child_process';
import { cpSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../src/util/package-info';
import { makeFifo, seedImages, writeTinyBundle } from '../fixtures';
import type { CaseContext, FuzzTarget } from '../protocol';
import type { Rng } from '../rng';

/** How long one CLI run may take before it counts as a hang. */
const CLI_TIMEOUT_MS = 30_000;

interface State {
  cli: string;
  bundle: string;
  images: string;
  fifoImages: string | null;
  dataset: string;
  garbage: string;
  backbone: string;
}

type Gen = (rng: Rng, s: State, ctx: CaseContext) => string;

const NUMBERS = ['0', '1', '2', '3', '-1', '1.5', 'abc', '', '1e3', '5000', 'NaN', '0x10', '99999999999999999999', ' 2 '];
const number: Gen = (rng) => rng.pick(NUMBERS);
const small: Gen = (rng) => (rng.chance(0.7) ? String(rng.int(1, 3)) : rng.pick(NUMBERS));
const list: Gen = (rng) => rng.pick(['2', '2,3', '3', '2,,3', ',', '1,5000', 'a,b', '0', '']);
const providers: Gen = (rng) => rng.pick(['cpu', 'cpu', 'cuda,cpu', 'tensorrt', 'bogus', '', 'cpu,cpu']);
const out: Gen = (rng, _s, ctx) => rng.pick([join(ctx.dir, 'out'), join(ctx.dir, 'out'), '/dev/null/x', '', join(ctx.dir, 'out', 'deep', 'er')]);
const anyPath: Gen = (rng, s, ctx) =>
  rng.pick([s.bundle, s.images, s.fifoImages ?? s.images, s.dataset, join(ctx.dir, 'missing'), s.garbage, '/dev/null', '', s.backbone]);
const model: Gen = (rng, s, ctx) => (rng.chance(0.85) ? s.bundle : anyPath(rng, s, ctx));
const images: Gen = (rng, s, ctx) => (rng.chance(0.6) ? rng.pick([s.images, s.fifoImages ?? s.images, join(s.images, 'a.png')]) : anyPath(rng, s, ctx));

interface CommandSpec {
  /** positional arguments */
  args: Gen[];
  /** options: flag and value generator (null: a boolean flag) */
  options: Array<[string, Gen | null]>;
  /** always appended, so a valid run stays short */
  fixed?: (rng: Rng, s: State, ctx: CaseContext) => string[];
}

const COMMANDS: Record<string, CommandSpec> = {
  score: {
    args: [images, images],
    options: [
      ['-m', model],
      ['-o', out],
      ['-s', number],
      ['-b', small],
      ['-p', providers],
    ],
  },
  eval: {
    args: [(rng, s, ctx) => (rng.chance(0.8) ? s.dataset : anyPath(rng, s, ctx))],
    options: [
      ['-m', model],
      ['-s', list],
      ['--mode', (rng) => rng.pick(['inversion', 'reconstruction', 'bogus'])],
      ['--t-start', (rng) => rng.pick(['0.2', '-1', 'NaN', '2', '0'])],
      ['--recon-steps', small],
      ['-o', out],
      ['-b', small],
      ['-p', providers],
      ['--image-only', null],
      ['--json', null],
    ],
  },
  calibrate: {
    // calibrate rewrites the bundle's manifest: it gets a copy
    args: [images],
    options: [
      ['-m', (rng, s, ctx) => copyBundle(s, ctx)],
      ['--false-alarm-rate', (rng) => rng.pick(['0.01', '0', '1', '-1', 'abc'])],
      ['-s', list],
      ['--validation', anyPath],
      ['--refit-latent', images],
      ['-p', providers],
    ],
  },
  backbone: {
    args: [],
    options: [
      ['-m', (rng, s, ctx) => (rng.chance(0.7) ? s.backbone : anyPath(rng, s, ctx))],
      ['--list', null],
      ['--taps', (rng) => rng.pick(['conv', 'nope', '', 'a,b', 'image'])],
      ['-o', (rng, s, ctx) => join(out(rng, s, ctx), 'b.onnx')],
      ['--input-size', (rng) => rng.pick(['32', '0', '32x32', 'abc', '100000', '8x'])],
      ['--grid', (rng) => rng.pick(['4', '0', '2x2', '1000'])],
      ['--input-name', (rng) => rng.pick(['image', 'nope'])],
      ['--json', null],
      ['--preset', (rng) => rng.pick(['mobilenetv2-int8', 'bogus'])],
    ],
  },
  doctor: { args: [], options: [] },
  bench: {
    args: [],
    options: [
      ['-m', model],
      ['-b', (rng) => rng.pick(['1', '0', 'a', '1,2'])],
      ['-s', (rng) => rng.pick(['2', '0', 'x'])],
      ['-w', (rng) => rng.pick(['0', '1', '-1'])],
      ['--inputs', (rng) => rng.pick(['raw', 'encoded', 'bogus'])],
      ['-q', null],
      ['--json', (rng, s, ctx) => join(ctx.dir, 'bench.json')],
      ['--soak', (rng) => rng.pick(['2', '0', 'x'])],
      ['--scenario', (rng) => rng.pick(['line', 'bogus'])],
    ],
    // Keep a valid run short: few runs, images, and a short line scenario.
    fixed: (rng) => ['-r', rng.pick(['1', '2']), '--image-count', '2', '--rss-every', '1', '--duration', rng.pick(['200ms', '0', 'x']), '--saturation', '0'],
  },
  fit: {
    args: [],
    options: [
      ['-n', images],
      ['-b', (rng) => rng.pick(['mobilenetv2-int8', 'efficientnet-b4', 'bogus'])],
      ['-o', (rng, s, ctx) => join(ctx.dir, 'fit-out')],
      ['--backbone-model', anyPath],
      ['--epochs', small],
      ['--val-fraction', (rng) => rng.pick(['0.1', '0', '1', '-1'])],
      ['--strict', null],
    ],
    // Never train for real: no Python to train with.
    fixed: () => ['--python', '/nonexistent/python', '--preset', 'tiny', '--max-minutes', '0.05'],
  },
};

const TOKENS = [
  'score',
  'eval',
  'fit',
  'doctor',
  'bench',
  'backbone',
  'calibrate',
  'help',
  '--help',
  '-h',
  '-V',
  '--version',
  '--',
  '-',
  '--model',
  '-m',
  '--steps',
  '-s',
  '--out',
  '--bogus',
  '-x',
  '--json',
  'ünïcödé',
  '%s%n',
  '$(id)',
  '../..',
  '-mm',
  '--steps=2',
  '--model=',
  '=',
];

function copyBundle(s: State, ctx: CaseContext): string {
  const dest = join(ctx.dir, 'bundle-copy');
  cpSync(s.bundle, dest, { recursive: true });
  return dest;
}

function argv(rng: Rng, s: State, ctx: CaseContext): string[] {
  if (rng.chance(0.08)) return Array.from({ length: rng.int(0, 6) }, () => (rng.chance(0.8) ? rng.pick(TOKENS) : anyPath(rng, s, ctx)));
  const name = rng.weighted([
    [30, 'score'],
    [12, 'eval'],
    [8, 'calibrate'],
    [12, 'backbone'],
    [4, 'doctor'],
    [8, 'bench'],
    [4, 'fit'],
  ] as const);
  const spec = COMMANDS[name];
  const out: string[] = [name];
  for (const gen of spec.args) if (rng.chance(0.85)) out.push(gen(rng, s, ctx));
  for (const [flag, gen] of spec.options) {
    if (!rng.chance(flag === '-m' || flag === '-n' ? 0.9 : 0.35)) continue;
    out.push(flag);
    if (gen) out.push(gen(rng, s, ctx));
  }
  out.push(...(spec.fixed?.(rng, s, ctx) ?? []));
  if (rng.chance(0.05)) out.splice(rng.int(1, out.length), 0, rng.pick(TOKENS));
  return out;
}

function tail(text: string, n = 600): string {
  return text.length > n ? `...${text.slice(-n)}` : text;
}

function runCli(
  s: State,
  args: string[],
  timeoutMs: number,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; timedOut: boolean }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [s.cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FORCE_COLOR: '0' } });
    let stderr = '';
    let timedOut = false;
    child.stdout.resume();
    child.stderr.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString('utf8')).slice(-8192);
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stderr, timedOut });
    });
  });
}

export const cliTarget: FuzzTarget<State> = {
  name: 'cli',
  description: 'the invad command line with random argument lists',
  timeoutMs: CLI_TIMEOUT_MS + 10_000,
  async setup(dir) {
    const cli = join(packageRoot(), 'dist', 'src', 'tools', 'cli', 'main.js');
    mkdirSync(dir, { recursive: true });
    const bundle = await writeTinyBundle(join(dir, 'bundle'), { latent: true });
    const seeds = await seedImages();
    const png = (w: number) => seeds.find((x) => x.format === 'png' && x.width === w)!.bytes;
    const images = join(dir, 'images');
    mkdirSync(join(images, 'sub'), { recursive: true });
    writeFileSync(join(images, 'a.png'), png(32));
    writeFileSync(join(images, 'sub', 'b.jpg'), seeds.find((x) => x.format === 'jpeg' && x.width === 48)!.bytes);
    writeFileSync(join(images, 'broken.png'), Buffer.from('not a png'));
    // Finding 5: a FIFO among the images a folder scan finds.
    const fifoImages = join(dir, 'fifo-images');
    mkdirSync(fifoImages, { recursive: true });
    writeFileSync(join(fifoImages, 'a.png'), png(32));
    const hasFifo = makeFifo(join(fifoImages, 'pipe.png'));
    const dataset = join(dir, 'dataset');
    for (const [sub, files] of [
      ['test/good', ['0.png', '1.png']],
      ['test/blob', ['0.png']],
      ['ground_truth/blob', ['0_mask.png']],
    ] as const) {
      mkdirSync(join(dataset, sub), { recursive: true });
      for (const f of files) writeFileSync(join(dataset, sub, f), png(32));
    }
    const garbage = join(dir, 'garbage.onnx');
    writeFileSync(garbage, Buffer.from('garbage'.repeat(100)));
    return { cli, bundle, images, fifoImages: hasFifo ? fifoImages : null, dataset, garbage, backbone: join(bundle, 'backbone.onnx') };
  },
  async run(s, ctx) {
    const args = argv(ctx.rng, s, ctx);
    ctx.note(`invad ${args.map((a) => (a === '' ? "''" : a.includes(' ') ? JSON.stringify(a) : a)).join(' ')}`);
    ctx.count('cli runs');
    const r = await runCli(s, args, CLI_TIMEOUT_MS);
    const detail = { name: 'CliExit', message: `exit ${r.code ?? r.signal}: ${tail(r.stderr)}` };
    if (r.timedOut) ctx.report('hang', 'cli: no exit', detail);
    else if (r.signal !== null) ctx.report('crash', `cli: ${r.signal}`, detail);
    else if (r.code === 0) ctx.report('ok', 'exit 0');
    else if (r.code === 1 || r.code === 2) ctx.report('typed', `exit ${r.code}`);
    else if (r.code === 3) ctx.report('untyped', 'cli: exit 3 (internal error)', detail);
    else ctx.report('crash', `cli: exit ${r.code}`, detail);
  },
};
