import { execFile } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { packageRoot } from '../src/util/package-info';
import { tempDir, writeTinyBundle } from './helpers/bundles';
import { pngOf, randomRaw } from './helpers/images';

const run = promisify(execFile);
const cli = join(packageRoot(), 'dist', 'src', 'tools', 'cli', 'main.js');
const invad = (args: string[]) => run(process.execPath, [cli, ...args]).catch((e) => e as { stdout: string; stderr: string; code: number });

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
  const lines = res.stdout.trim().split('\n').map((l) => JSON.parse(l));
  expect(lines.map((l) => l.file)).toEqual([join(images, 'a.png'), join(images, 'broken.png'), join(images, 'sub', 'b.png')]);
  expect(lines[0]).toMatchObject({ isAnomalous: false, steps: 2, width: 40, height: 30 });
  expect(typeof lines[0].score).toBe('number');
  expect(lines[0].timings.unetMs).toHaveLength(2);
  expect(lines[1].error.code).toBe('ERR_INVAD_INVALID_INPUT');
  expect((res as { code?: number }).code).toBe(1); // one image failed
  expect(readdirSync(out).sort()).toEqual(['a_overlay.png', 'b_overlay.png']);
  const meta = await sharp(join(out, 'a_overlay.png')).metadata();
  expect([meta.width, meta.height, meta.format]).toEqual([40, 30, 'png']);
});

test('a bad bundle is one clear error and exit code 2', async () => {
  const res = await invad(['score', tmp.dir, '--model', join(tmp.dir, 'nope')]);
  expect(res.code).toBe(2);
  expect(res.stderr).toContain('ERR_INVAD_MODEL_BUNDLE');
});
