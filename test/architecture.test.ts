/**
 * The layout's rules (ARCHITECTURE.md), checked where they can be:
 * - `require('invad')` loads the runtime only: no fit, eval, tools or protobuf code;
 * - the runtime, the binding and the utilities never import fit, eval or tools;
 * - native kernels never include N-API headers, and the CPU and CUDA kernels
 *   share one math header.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { packageRoot } from '../src/util/package-info';

const root = packageRoot();
const src = path.join(root, 'src');

function tsFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return tsFiles(p);
    return p.endsWith('.ts') ? [p] : [];
  });
}

/**
 * The part of src/ a file belongs to: runtime, binding, util, fit, eval, tools or index,
 * and metrics (eval/metrics: pure functions that fit's F1 thresholds use too).
 */
function partOf(file: string): string {
  const rel = path.relative(src, file).split(path.sep);
  if (rel.length === 1) return 'index';
  return rel[0] === 'eval' && rel[1] === 'metrics' ? 'metrics' : rel[0];
}

/** Relative imports (static, dynamic and require) of a TS file, resolved to files. */
function importsOf(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:from|import\(|require\()\s*'(\.{1,2}\/[^']*)'/g)].map((m) => m[1]);
  return specs.map((s) => {
    const base = path.resolve(path.dirname(file), s);
    for (const c of [`${base}.ts`, path.join(base, 'index.ts'), base]) if (fs.existsSync(c)) return c;
    throw new Error(`${path.relative(root, file)}: cannot resolve '${s}'`);
  });
}

/** Which parts each part may import (besides itself). */
const ALLOWED: Record<string, readonly string[]> = {
  util: [],
  metrics: ['util'],
  binding: ['util'],
  runtime: ['binding', 'util'],
  index: ['runtime', 'binding', 'util'],
  fit: ['runtime', 'binding', 'metrics', 'util'],
  eval: ['runtime', 'binding', 'metrics', 'util'],
  deploy: ['runtime', 'binding', 'fit', 'metrics', 'util'],
  tools: ['index', 'deploy', 'fit', 'eval', 'metrics', 'runtime', 'binding', 'util'],
};

describe('layout rules', () => {
  test('every part of src/ imports only the parts below it', () => {
    const violations: string[] = [];
    for (const file of tsFiles(src)) {
      const from = partOf(file);
      const allowed = ALLOWED[from];
      expect(allowed).toBeDefined();
      for (const target of importsOf(file)) {
        const to = partOf(target);
        if (to !== from && !allowed.includes(to)) violations.push(`${path.relative(root, file)} -> ${path.relative(root, target)}`);
      }
    }
    expect(violations).toEqual([]);
  });

  test("require('invad') loads the runtime only (walks require.cache in a fresh process)", () => {
    const entry = path.join(root, 'dist', 'src', 'index.js');
    if (!fs.existsSync(entry)) throw new Error(`${entry} missing: npm test compiles it first (npm run compile)`);
    const script = `require(${JSON.stringify(entry)}); process.stdout.write(JSON.stringify(Object.keys(require.cache)));`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(0);
    const loaded = JSON.parse(r.stdout) as string[];
    const dist = path.join(root, 'dist', 'src') + path.sep;
    const own = loaded.filter((f) => f.startsWith(dist)).map((f) => f.slice(dist.length));
    expect(own).toContain('runtime/detector.js');
    const forbidden = own.filter((f) => /^(fit|eval|tools|deploy)\//.test(f));
    expect(forbidden).toEqual([]);
    expect(loaded.filter((f) => /[\\/]node_modules[\\/](protobufjs|onnx-proto|cli-progress|commander|fastify|prom-client)[\\/]/.test(f))).toEqual([]);
  });

  test('native kernels never include N-API headers; CPU and CUDA kernels share kernel_math.h', () => {
    const native = path.join(root, 'native');
    const kernels = ['kernel_math.h', 'kernels_cpu.h', 'kernels_cpu.cc', 'kernels_cuda.cu', 'kernels_cuda.cuh', 'inversion_cuda.cu', 'inversion_cuda.cuh'];
    for (const f of kernels) {
      const text = fs.readFileSync(path.join(native, f), 'utf8');
      expect({ file: f, napi: /#include\s*[<"](napi|node_api|js_native_api)/.test(text) }).toEqual({ file: f, napi: false });
    }
    for (const f of ['kernels_cpu.cc', 'kernels_cuda.cu']) {
      expect(fs.readFileSync(path.join(native, f), 'utf8')).toMatch(/#include "kernel_math\.h"/);
    }
  });
});
