/**
 * The published package works from its prebuild, on a machine without a compiler.
 *
 *  1. Copies the working tree to a staging folder (node_modules symlinked), runs
 *     `npm run prebuild` and `npm pack` there, and checks the tarball's contents.
 *     Working in a copy keeps the repo's build/ and dist/ untouched: prebuildify
 *     runs `cmake-js rebuild` (which wipes build/) and then moves
 *     build/Release/invad.node into prebuilds/, and prepack rewrites dist/, while
 *     other test files load build/Release/invad.node and dist/.
 *  2. Installs the tarball into an empty project with a PATH holding nothing but
 *     `node` (no cmake, compiler, make or python), from npm's cache.
 *  3. Runs a CommonJS script, an ES module and the `invad` bin in that project:
 *     each builds a tiny bundle through the public API, scores a raw image and
 *     reports which addon it loaded (must be the prebuild).
 */
import { spawn } from 'node:child_process';
import {
  accessSync,
  constants,
  cpSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, delimiter, dirname, join, relative, resolve } from 'node:path';
import { convBackbone, linearUnet } from '../src/fit/onnx/synthetic';
import { packageRoot } from '../src/util/package-info';
import { TINY } from './helpers/bundles';

const TIMEOUT_MS = 10 * 60_000;
jest.setTimeout(TIMEOUT_MS);

const root = packageRoot();
const platformDir = `${process.platform}-${process.arch}`;
const KEEP = process.env.INVAD_PACK_TEST_KEEP === '1';

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function run(file: string, args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<RunResult> {
  const start = Date.now();
  return new Promise((resolvePromise, reject) => {
    const child = spawn(file, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 5 * 60_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code, signal, stdout, stderr, ms: Date.now() - start });
    });
  });
}

function describeRun(what: string, r: RunResult): string {
  return `${what} exited with ${r.code ?? r.signal} after ${r.ms} ms\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;
}

/** Like `which`: the first executable file called `name` in the folders of `pathVar`. */
function lookup(name: string, pathVar: string): string | undefined {
  for (const dir of pathVar.split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** npm's JS entry point, found from the `npm` on the original PATH, so npm runs as `node npm-cli.js`. */
function findNpmCli(): string {
  const candidates: string[] = [];
  const npm = lookup('npm', process.env.PATH ?? '');
  if (npm) {
    const real = realpathSync(npm);
    if (basename(real) === 'npm-cli.js') candidates.push(real);
    candidates.push(
      join(dirname(real), 'npm-cli.js'),
      join(dirname(real), '..', 'bin', 'npm-cli.js'),
      join(dirname(real), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js'),
    );
  }
  // when jest itself runs under npm/npx
  const execPath = process.env.npm_execpath;
  if (execPath && basename(execPath) === 'npm-cli.js') candidates.push(execPath);
  const found = candidates.find((c) => existsSync(c));
  if (!found) throw new Error(`cannot find npm-cli.js (looked at ${candidates.join(', ') || 'nothing: no npm on PATH'})`);
  return found;
}

function log(message: string): void {
  console.log(`[pack.test] ${message}`);
}

let npmCli: string;
const temps: string[] = [];
function tempFolder(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  temps.push(dir);
  return dir;
}

let stage: string;
let packDir: string;
let tarball: string;
let tarballFiles: string[];
let appDir: string;
let binDir: string;
let restrictedEnv: NodeJS.ProcessEnv;
let install: RunResult | undefined;
const repoAddon = join(root, 'build', 'Release', 'invad.node');
const repoAddonExisted = existsSync(repoAddon);

/** Top-level entries of the repo not copied to the staging folder (outputs, dependencies, VCS). */
const SKIP_TOP = new Set(['node_modules', 'build', 'dist', 'prebuilds', '.git', 'tmp', '.cache']);
/** Nested folders never needed to build or pack (and possibly large). */
const SKIP_ANYWHERE = new Set(['node_modules', '__pycache__', '.venv', 'venv', '.pytest_cache']);

beforeAll(async () => {
  npmCli = findNpmCli();
  // ---- 1. prebuild + pack in a copy of the working tree --------------------
  stage = tempFolder('invad-pack-stage-');
  cpSync(root, stage, {
    recursive: true,
    filter: (src) => {
      const rel = relative(root, src);
      if (rel === '') return true;
      const parts = rel.split(/[\\/]/);
      if (SKIP_TOP.has(parts[0]) || parts[0].endsWith('.tgz')) return false;
      return !parts.some((p) => SKIP_ANYWHERE.has(p));
    },
  });
  symlinkSync(join(root, 'node_modules'), join(stage, 'node_modules'), 'dir');

  const env = { ...process.env };
  delete env.INVAD_ADDON_PATH;
  const prebuild = await run(process.execPath, [npmCli, 'run', 'prebuild'], { cwd: stage, env, timeoutMs: 6 * 60_000 });
  log(`npm run prebuild: ${prebuild.ms} ms`);
  if (prebuild.code !== 0) throw new Error(describeRun('npm run prebuild', prebuild));

  packDir = tempFolder('invad-pack-out-');
  const pack = await run(process.execPath, [npmCli, 'pack', '--pack-destination', packDir], { cwd: stage, env, timeoutMs: 3 * 60_000 });
  log(`npm pack: ${pack.ms} ms`);
  if (pack.code !== 0) throw new Error(describeRun('npm pack', pack));
  const tgz = readdirSync(packDir).filter((f) => f.endsWith('.tgz'));
  if (tgz.length !== 1) throw new Error(`expected one tarball in ${packDir}, found ${JSON.stringify(tgz)}\n${describeRun('npm pack', pack)}`);
  tarball = join(packDir, tgz[0]);
  const list = await run('tar', ['-tzf', tarball], { cwd: packDir, env: process.env });
  if (list.code !== 0) throw new Error(describeRun('tar -tzf', list));
  tarballFiles = list.stdout.split('\n').filter(Boolean);
  log(`${basename(tarball)}: ${statSync(tarball).size} bytes, ${tarballFiles.length} files`);

  // ---- 2. an empty project and a PATH with only node -----------------------
  appDir = tempFolder('invad-pack-app-');
  writeFileSync(join(appDir, 'package.json'), JSON.stringify({ name: 'invad-pack-test-app', version: '1.0.0', private: true }, null, 2));
  binDir = tempFolder('invad-pack-bin-');
  symlinkSync(process.execPath, join(binDir, 'node'));

  const cacheRun = await run(process.execPath, [npmCli, 'config', 'get', 'cache'], { cwd: appDir, env: process.env });
  const cache = cacheRun.code === 0 && cacheRun.stdout.trim() ? cacheRun.stdout.trim() : join(process.env.HOME ?? tmpdir(), '.npm');
  restrictedEnv = {
    PATH: binDir,
    HOME: process.env.HOME ?? tmpdir(),
    npm_config_cache: cache,
    npm_config_update_notifier: 'false',
    ONNXRUNTIME_NODE_INSTALL: 'skip',
    npm_config_onnxruntime_node_install: 'skip',
  };
  for (const key of ['TMPDIR', 'LANG', 'LC_ALL']) if (process.env[key]) restrictedEnv[key] = process.env[key];

  // ---- 3. model files for the scripts, from the repo's ONNX builders ----------
  const side = TINY.inputSize / TINY.stride;
  writeFileSync(
    join(appDir, 'backbone.onnx'),
    convBackbone({ height: TINY.inputSize, width: TINY.inputSize, channels: TINY.channels, stride: TINY.stride, seed: TINY.seed }),
  );
  writeFileSync(join(appDir, 'unet.onnx'), linearUnet({ channels: TINY.channels, height: side, width: side, k: TINY.k, m: TINY.m }));
}, TIMEOUT_MS);

afterAll(() => {
  if (KEEP) {
    log(`kept ${temps.join(' ')}`);
  } else {
    for (const dir of temps) rmSync(dir, { recursive: true, force: true });
  }
});

test('the tarball holds the compiled JS, typings and the prebuild, and no tests or dependencies', () => {
  const files = new Set(tarballFiles);
  for (const f of [
    'dist/src/index.js',
    'dist/src/index.d.ts',
    'dist/src/runtime/engine/worker.js',
    'dist/src/tools/cli/main.js',
    'dist/src/binding/index.js',
    'scripts/install.js',
    'package.json',
  ]) {
    expect(files).toContain(`package/${f}`);
  }
  const prebuilds = tarballFiles.filter((f) => f.startsWith(`package/prebuilds/${platformDir}/`) && f.endsWith('.node'));
  expect(prebuilds.length).toBeGreaterThan(0);
  expect(files).toContain('package/README.md');
  // The trainer's Python sources ship (invad fit runs them); its tests do not.
  expect(files).toContain('package/train/__main__.py');
  for (const dir of ['test/', 'node_modules/', 'build/', 'src/', 'train/tests/']) {
    expect(tarballFiles.filter((f) => f.startsWith(`package/${dir}`))).toEqual([]);
  }
});

test('the restricted PATH has node and no build tools', async () => {
  const pathVar = restrictedEnv.PATH as string;
  expect(lookup('node', pathVar)).toBe(join(binDir, 'node'));
  for (const tool of ['cmake', 'g++', 'gcc', 'c++', 'cc', 'clang', 'make', 'ninja', 'python', 'python3', 'nvcc', 'sh']) {
    expect([tool, lookup(tool, pathVar)]).toEqual([tool, undefined]);
  }
  // and as a shell sees it
  const sh = await run('/bin/sh', ['-c', 'for t in cmake g++ cc make; do if command -v "$t"; then exit 1; fi; done; command -v node'], {
    cwd: appDir,
    env: restrictedEnv,
  });
  expect(sh.code).toBe(0);
  expect(sh.stdout.trim()).toBe(join(binDir, 'node'));
});

test('npm install of the tarball uses the prebuild and compiles nothing', async () => {
  // No `sh` on PATH either, so npm is told where the lifecycle shell lives.
  install = await run(
    process.execPath,
    [npmCli, 'install', tarball, '--prefer-offline', '--no-audit', '--no-fund', '--foreground-scripts', '--script-shell=/bin/sh'],
    { cwd: appDir, env: restrictedEnv, timeoutMs: 6 * 60_000 },
  );
  log(`npm install (restricted PATH): ${install.ms} ms`);
  if (install.code !== 0) throw new Error(describeRun('npm install', install));
  const output = install.stdout + install.stderr;
  expect(output).toMatch(new RegExp(`invad: using prebuilt addon prebuilds/${platformDir}/\\S+\\.node`));
  expect(output).not.toContain('building the native addon from source');
  expect(output).not.toContain('cmake-js');
  const pkg = join(appDir, 'node_modules', 'invad');
  expect(existsSync(join(pkg, 'dist', 'src', 'index.js'))).toBe(true);
  expect(existsSync(join(pkg, 'build'))).toBe(false);
});

function requireInstalled(): void {
  if (!install || install.code !== 0) throw new Error('the install test failed; nothing to run');
}

const SCRIPT_BODY = `
  const here = __HERE__;
  const bundle = path.join(here, 'bundle-' + __KIND__);
  fs.rmSync(bundle, { recursive: true, force: true });
  await writeBundle(bundle, {
    input: { width: ${TINY.inputSize}, height: ${TINY.inputSize}, resizeKernel: 'linear' },
    features: { channels: ${TINY.channels}, height: ${TINY.inputSize / TINY.stride}, width: ${TINY.inputSize / TINY.stride} },
    defaultSteps: ${TINY.steps},
    backbone: { path: path.join(here, 'backbone.onnx'), name: 'synthetic-conv', taps: ['conv'] },
    unet: { path: path.join(here, 'unet.onnx') },
    training: { synthetic: true },
  });
  const detector = await Detector.load(bundle);
  try {
    const width = 40, height = 30, channels = 3;
    const data = new Uint8Array(width * height * channels);
    for (let i = 0; i < data.length; i++) data[i] = (i * 37 + 11) % 256;
    const result = await detector.score({ data, width, height, channels });
    const info = detector.info();
    process.stdout.write(JSON.stringify({
      score: result.score,
      width: result.width,
      height: result.height,
      mapLength: result.map.length,
      mapFinite: Array.from(result.map).every(Number.isFinite),
      addon: info.addon,
      source: addonSource(),
      resolved: require.resolve('invad'),
    }) + '\\n');
  } finally {
    await detector.dispose();
  }
`;

const CJS_SCRIPT = `'use strict';
const fs = require('fs');
const path = require('path');
const { Detector } = require('invad');
const { writeBundle } = require('invad/fit');
// The loader is internal (not in the exports map): reach it by file path.
const { addonSource } = require(path.join(path.dirname(require.resolve('invad/package.json')), 'dist/src/binding/index.js'));
(async () => {${SCRIPT_BODY.replace('__HERE__', '__dirname').replace('__KIND__', "'cjs'")}})().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
`;

const ESM_SCRIPT = `import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Detector } from 'invad';
import { writeBundle } from 'invad/fit';
const require = createRequire(import.meta.url);
const { addonSource } = require(path.join(path.dirname(require.resolve('invad/package.json')), 'dist/src/binding/index.js'));
${SCRIPT_BODY.replace('__HERE__', 'path.dirname(fileURLToPath(import.meta.url))').replace('__KIND__', "'esm'")}`;

interface ScriptReport {
  score: number;
  width: number;
  height: number;
  mapLength: number;
  mapFinite: boolean;
  addon: { version: string; cuda: boolean };
  source: { kind: string; path: string };
  resolved: string;
}

const reports: Record<string, ScriptReport> = {};

async function runScript(name: string, source: string): Promise<ScriptReport> {
  requireInstalled();
  const file = join(appDir, name);
  writeFileSync(file, source);
  const r = await run(process.execPath, [file], { cwd: appDir, env: restrictedEnv, timeoutMs: 2 * 60_000 });
  if (r.code !== 0) throw new Error(describeRun(`node ${name}`, r));
  const line = r.stdout.trim().split('\n').pop() as string;
  return JSON.parse(line) as ScriptReport;
}

function checkReport(report: ScriptReport): void {
  const pkg = realpathSync(join(appDir, 'node_modules', 'invad'));
  expect(realpathSync(report.resolved)).toBe(join(pkg, 'dist', 'src', 'index.js'));
  expect(Number.isFinite(report.score)).toBe(true);
  expect([report.width, report.height, report.mapLength]).toEqual([40, 30, 40 * 30]);
  expect(report.mapFinite).toBe(true);
  expect(report.addon.version).toBe((JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version);
  expect(typeof report.addon.cuda).toBe('boolean');
  expect(report.source.kind).toBe('prebuild');
  expect(relative(pkg, realpathSync(report.source.path))).toMatch(new RegExp(`^prebuilds/${platformDir}/[^/]+\\.node$`));
}

test('a CommonJS consumer scores an image with the prebuilt addon', async () => {
  reports.cjs = await runScript('score.cjs', CJS_SCRIPT);
  checkReport(reports.cjs);
});

test('an ES module consumer (import { Detector } from "invad") does the same', async () => {
  reports.esm = await runScript('score.mjs', ESM_SCRIPT);
  checkReport(reports.esm);
  if (reports.cjs) expect(reports.esm.score).toBe(reports.cjs.score);
});

test('the installed `invad doctor` bin reports the prebuild', async () => {
  requireInstalled();
  const bin = join(appDir, 'node_modules', '.bin', 'invad');
  const r = await run(bin, ['doctor'], { cwd: appDir, env: restrictedEnv, timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(describeRun('invad doctor', r));
  const report = JSON.parse(r.stdout) as { addon: { source?: { kind: string }; error?: string }; onnxruntime: { error?: string } };
  expect(report.addon.error).toBeUndefined();
  expect(report.addon.source?.kind).toBe('prebuild');
  expect(report.onnxruntime.error).toBeUndefined();
});

test("the repo's own build/Release/invad.node is left in place", () => {
  if (repoAddonExisted) expect(existsSync(repoAddon)).toBe(true);
  expect(resolve(stage)).not.toBe(resolve(root));
});
