import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { packageRoot } from '../src/util/package-info';
import { EXIT_INTERNAL, EXIT_USAGE, exitFor, UsageError } from '../src/tools/cli/exit';
import { overlayDestinations } from '../src/tools/cli/commands/score';
import { InvalidInputError } from '../src/util/errors';
import { tempDir, writeTinyBundle } from './helpers/bundles';
import { pngOf, randomRaw } from './helpers/images';

const run = promisify(execFile);
const cli = join(packageRoot(), 'dist', 'src', 'tools', 'cli', 'main.js');
type Result = { stdout: string; stderr: string; code: number };
const invad = (args: string[]): Promise<Result> =>
  run(process.execPath, [cli, ...args]).then(
    (r) => ({ ...r, code: 0 }),
    (e) => e as Result,
  );

let tmp: ReturnType<typeof tempDir>;
beforeAll(() => {
  tmp = tempDir();
});
afterAll(() => tmp.cleanup());

test('--help documents every command', async () => {
  const { stdout } = await invad(['--help']);
  for (const cmd of ['score', 'fit', 'backbone', 'doctor']) expect(stdout).toContain(cmd);
  const score = await invad(['score', '--help']);
  for (const opt of ['--model', '--out', '--steps', '--batch-size', '--providers']) expect(score.stdout).toContain(opt);
});

test('score prints one JSON line per image and writes overlays', async () => {
  const bundle = await writeTinyBundle(tmp.dir);
  const images = join(tmp.dir, 'images');
  mkdirSync(join(images, 'sub'), { recursive: true });
  writeFileSync(join(images, 'a.png'), await pngOf(randomRaw(40, 30, 3, 1)));
  writeFileSync(join(images, 'sub', 'b.png'), await pngOf(randomRaw(20, 20, 1, 2)));
  writeFileSync(join(images, 'broken.png'), Buffer.from('not a png'));
  const out = join(tmp.dir, 'overlays');
  const res = await invad(['score', images, '--model', bundle, '--out', out, '--steps', '2']);
  const lines = res.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  expect(lines.map((l) => l.file)).toEqual([join(images, 'a.png'), join(images, 'broken.png'), join(images, 'sub', 'b.png')]);
  expect(lines[0]).toMatchObject({ isAnomalous: false, steps: 2, width: 40, height: 30 });
  expect(typeof lines[0].score).toBe('number');
  expect(lines[0].timings.unetMs).toHaveLength(2);
  expect(lines[1].error.code).toBe('ERR_INVAD_INVALID_INPUT');
  expect(res.code).toBe(1); // one image failed
  // Overlays mirror the images' folders below their common folder.
  expect(readdirSync(out).sort()).toEqual(['a_overlay.png', 'sub']);
  expect(readdirSync(join(out, 'sub'))).toEqual(['b_overlay.png']);
  expect(lines[2].overlay).toBe(join(out, 'sub', 'b_overlay.png'));
  const meta = await sharp(join(out, 'a_overlay.png')).metadata();
  expect([meta.width, meta.height, meta.format]).toEqual([40, 30, 'png']);
});

test('a bad bundle is one clear error and exit code 2', async () => {
  const res = await invad(['score', tmp.dir, '--model', join(tmp.dir, 'nope')]);
  expect(res.code).toBe(2);
  expect(res.stderr).toContain('ERR_INVAD_MODEL_BUNDLE');
});

test('images with the same name in two folders get two overlays', async () => {
  mkdirSync(join(tmp.dir, 'same-name'));
  const bundle = await writeTinyBundle(join(tmp.dir, 'same-name'));
  const a = join(tmp.dir, 'same-name', 'a');
  const b = join(tmp.dir, 'same-name', 'b');
  mkdirSync(a, { recursive: true });
  mkdirSync(b, { recursive: true });
  writeFileSync(join(a, 'x.png'), await pngOf(randomRaw(16, 16, 3, 3)));
  writeFileSync(join(b, 'x.png'), await pngOf(randomRaw(24, 20, 3, 4)));
  const out = join(tmp.dir, 'same-name', 'o');
  const res = await invad(['score', a, b, '--model', bundle, '--out', out]);
  expect(res.code).toBe(0);
  const lines = res.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { overlay: string });
  expect(lines.map((l) => l.overlay)).toEqual([join(out, 'a', 'x_overlay.png'), join(out, 'b', 'x_overlay.png')]);
  // each overlay is its own image's size: neither overwrote the other
  const sizes = await Promise.all(lines.map(async (l) => (await sharp(l.overlay).metadata()).width));
  expect(sizes).toEqual([16, 24]);
});

test('two images that would share an overlay are refused before anything runs (exit 2)', async () => {
  const dir = join(tmp.dir, 'clash');
  mkdirSync(dir, { recursive: true });
  const png = await pngOf(randomRaw(8, 8, 3, 5));
  writeFileSync(join(dir, 'x.png'), png);
  writeFileSync(join(dir, 'x.jpg'), await sharp(png).jpeg().toBuffer());
  const out = join(dir, 'o');
  // The model does not exist: the clash is found first.
  const res = await invad(['score', dir, '--model', join(dir, 'no-model'), '--out', out]);
  expect(res.code).toBe(2);
  expect(res.stderr).toMatch(/x\.(png|jpg) and .*x\.(png|jpg) would both write the overlay/);
  expect(res.stdout).toBe('');
  expect(existsSync(out)).toBe(false);
});

test('overlayDestinations: common folder, files given twice, single files', () => {
  expect(overlayDestinations(['/d/a/x.png', '/d/b/c/x.png'], 'o')).toEqual([join('o', 'a', 'x_overlay.png'), join('o', 'b', 'c', 'x_overlay.png')]);
  expect(overlayDestinations(['/d/a/x.png', '/d/a/x.png'], 'o')).toEqual([join('o', 'x_overlay.png'), join('o', 'x_overlay.png')]);
  expect(overlayDestinations(['/d/a/y.tif'], 'o')).toEqual([join('o', 'y_overlay.png')]);
  expect(() => overlayDestinations(['/d/x.png', '/d/x.webp'], 'o')).toThrow(UsageError);
});

describe('exit codes: 0 success, 1 some input failed, 2 usage or setup error', () => {
  let bundle: string;
  let image: string;
  beforeAll(async () => {
    mkdirSync(join(tmp.dir, 'exit'));
    bundle = await writeTinyBundle(join(tmp.dir, 'exit'));
    image = join(tmp.dir, 'exit', 'ok.png');
    writeFileSync(image, await pngOf(randomRaw(12, 12, 3, 6)));
  });

  test('success, help and version exit 0', async () => {
    const [ok, help, version] = await Promise.all([invad(['score', image, '--model', bundle]), invad(['score', '--help']), invad(['--version'])]);
    expect([ok.code, help.code, version.code]).toEqual([0, 0, 0]);
    expect(JSON.parse(ok.stdout).file).toBe(image);
    expect(version.stdout.trim()).toBe(JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')).version);
  });

  test('--help states the convention, for the program and for each command', async () => {
    const [top, score, evalHelp] = await Promise.all([invad(['--help']), invad(['score', '--help']), invad(['eval', '--help'])]);
    for (const r of [top, score, evalHelp]) {
      expect(r.stdout).toContain('Exit codes:');
      expect(r.stdout).toMatch(/1 +the command finished, but some inputs failed/);
      expect(r.stdout).toMatch(/2 +usage or setup error/);
    }
  });

  test('a missing image is an input failure: exit 1', async () => {
    const res = await invad(['score', image, join(tmp.dir, 'exit', 'missing.png'), '--model', bundle]);
    expect(res.code).toBe(1);
    expect(res.stdout.trim().split('\n')).toHaveLength(2);
  });

  test.each([
    ['--steps 0 (rejected by the option parser)', ['--steps', '0'], /positive integer/],
    ['--steps 5000 (rejected by the bundle)', ['--steps', '5000'], /ERR_INVAD_INVALID_ARGUMENT/],
    ['--batch-size abc', ['--batch-size', 'abc'], /positive integer/],
    ['an unknown option', ['--frobnicate'], /unknown option/],
  ])('%s exits 2', async (_name, extra, message) => {
    const res = await invad(['score', image, '--model', bundle, ...extra]);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(message);
    expect(res.stdout).toBe('');
  });

  test('usage errors without a command, command or model exit 2', async () => {
    const results = await Promise.all([
      invad([]),
      invad(['frobnicate']),
      invad(['score', image]), // --model missing
      invad(['score', '--model', bundle]), // no inputs
      invad(['score', join(tmp.dir, 'exit', 'empty-folder-does-not-exist'), '--model', join(tmp.dir, 'nope')]),
      invad(['eval', tmp.dir, '--model', bundle, '--mode', 'sideways']),
    ]);
    expect(results.map((r) => r.code)).toEqual([2, 2, 2, 2, 2, 2]);
    expect(results[2].stderr).toContain("required option '-m, --model <dir>' not specified");
  });

  test('exitFor: typed and system errors are setup errors; anything else is an internal error', () => {
    expect(exitFor(new InvalidInputError('x', 'bad'), false)).toEqual({ code: EXIT_USAGE, message: 'invad: bad [ERR_INVAD_INVALID_INPUT]\n' });
    const enoent = Object.assign(new Error('ENOENT: no such file'), { code: 'ENOENT', syscall: 'open' });
    expect(exitFor(enoent, false).code).toBe(EXIT_USAGE);
    const bug = exitFor(new TypeError("Cannot read properties of undefined (reading 'x')"), false);
    expect(bug.code).toBe(EXIT_INTERNAL);
    expect(bug.message).toMatch(/^invad: internal error \(please report it\): TypeError/);
  });
});
