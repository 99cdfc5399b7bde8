// Loader of the native addon. Only src/ uses it; the addon object stays internal.
//
// Candidates, in order (the first that loads wins, and the result is cached):
//   1. INVAD_ADDON_PATH, when set (an explicit .node file);
//   2. what node-gyp-build resolves for the package root (build/Release, then
//      prebuilds/<platform>-<arch>/ matched by runtime/libc tags);
//   3. every prebuild in prebuilds/<platform>-<arch>/ (in case (2) picked a local
//      build that does not load);
//   4. build/Release/invad.node.
import * as fs from 'fs';
import * as path from 'path';

import { BindingLoadError } from '../util/errors';
import { packageRoot } from '../util/package-info';
import { DIAGNOSTIC_FUNCTIONS, type InvadAddon, type InvadAddonDiagnostics } from './addon-types';

export * from './addon-types';

export type AddonSourceKind = 'prebuild' | 'local-build' | 'override';

export interface AddonSource {
  kind: AddonSourceKind;
  /** absolute path of the loaded .node file */
  path: string;
}

/** What the runtime calls; the diagnostic variants (DIAGNOSTIC_FUNCTIONS) stay optional. */
export const REQUIRED_FUNCTIONS: ReadonlyArray<keyof InvadAddon> = [
  'buildInfo',
  'cudaStatus',
  'ddimStep',
  'channelNorm',
  'ddimLastStepReduce',
  'resizeBilinear',
  'gaussianBlur',
  'DeviceResidentPipeline',
  'ortProbe',
];

const FIX = 'run `npm run build:native` (needs cmake and a C++17 compiler) or reinstall to get the prebuild';

let loaded: { addon: InvadAddon; source: AddonSource } | undefined;

function kindOf(file: string, root: string): AddonSourceKind {
  const rel = path.relative(root, file).split(path.sep);
  return rel[0] === 'prebuilds' ? 'prebuild' : 'local-build';
}

function describeError(err: unknown): string {
  if (err instanceof Error) return err.message.split('\n')[0] ?? String(err);
  return String(err);
}

interface Candidate {
  path: string;
  kind: AddonSourceKind;
}

function candidates(root: string, attempts: Array<{ path: string; error: string }>): Candidate[] {
  const list: Candidate[] = [];
  const override = process.env.INVAD_ADDON_PATH;
  if (override !== undefined && override !== '') {
    list.push({ path: path.resolve(override), kind: 'override' });
  }

  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const gypBuild = require('node-gyp-build') as { path(dir: string): string };
    const resolved = gypBuild.path(root);
    list.push({ path: resolved, kind: kindOf(resolved, root) });
  } catch (err) {
    attempts.push({ path: `node-gyp-build resolution in ${root}`, error: describeError(err) });
  }

  const prebuildDir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  let files: string[] = [];
  try {
    files = fs.readdirSync(prebuildDir).filter((f) => f.endsWith('.node'));
  } catch {
    // no prebuilds for this platform
  }
  for (const f of files.sort()) list.push({ path: path.join(prebuildDir, f), kind: 'prebuild' });

  list.push({ path: path.join(root, 'build', 'Release', 'invad.node'), kind: 'local-build' });

  const seen = new Set<string>();
  return list.filter((c) => (seen.has(c.path) ? false : (seen.add(c.path), true)));
}

function tryLoad(file: string): InvadAddon {
  if (!fs.existsSync(file)) throw new Error('file not found');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod = require(file) as Partial<Record<keyof InvadAddon, unknown>>;
  const missing = REQUIRED_FUNCTIONS.filter((name) => typeof mod[name] !== 'function');
  if (missing.length > 0) {
    throw new Error(`not an invad addon of this version (missing ${missing.join(', ')})`);
  }
  return mod as InvadAddon;
}

function load(): { addon: InvadAddon; source: AddonSource } {
  if (loaded) return loaded;
  const attempts: Array<{ path: string; error: string }> = [];
  let root: string;
  try {
    root = packageRoot();
  } catch (err) {
    throw new BindingLoadError(`Cannot load the invad native addon: ${describeError(err)}; ${FIX}.`, [{ path: __dirname, error: describeError(err) }]);
  }
  for (const c of candidates(root, attempts)) {
    try {
      const addon = tryLoad(c.path);
      loaded = { addon, source: { kind: c.kind, path: c.path } };
      return loaded;
    } catch (err) {
      attempts.push({ path: c.path, error: describeError(err) });
    }
  }
  const lines = attempts.map((a) => `  - ${a.path}: ${a.error}`).join('\n');
  throw new BindingLoadError(
    `Cannot load the invad native addon for ${process.platform}-${process.arch} (node ${process.version}). Tried:\n${lines}\nFix: ${FIX}.`,
    attempts,
  );
}

/** The native addon, loaded once per process (per worker thread). Throws BindingLoadError. */
export function loadAddon(): InvadAddon {
  return load().addon;
}

/**
 * The addon with its diagnostic variants (async kernels, the unfused reduction, the
 * CUDA kernel check), for benchmarks, tests and the GPU check.
 * @throws BindingLoadError when the loaded addon lacks any of them
 */
export function loadAddonWithDiagnostics(): InvadAddon & InvadAddonDiagnostics {
  const { addon, source } = load();
  const missing = DIAGNOSTIC_FUNCTIONS.filter((name) => typeof (addon as Partial<InvadAddonDiagnostics>)[name] !== 'function');
  if (missing.length > 0) {
    throw new BindingLoadError(`The invad addon at ${source.path} lacks the diagnostic functions ${missing.join(', ')}; ${FIX}.`, [
      { path: source.path, error: `missing ${missing.join(', ')}` },
    ]);
  }
  return addon as InvadAddon & InvadAddonDiagnostics;
}

/** Where the addon was loaded from (for `invad doctor`). Loads it if needed. */
export function addonSource(): AddonSource {
  return { ...load().source };
}
