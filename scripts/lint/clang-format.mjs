#!/usr/bin/env node
/**
 * clang-format on native/ (C++ and CUDA sources), with the style in .clang-format.
 *
 *   node scripts/lint/clang-format.mjs          check: list what would change, exit 1 if anything
 *   node scripts/lint/clang-format.mjs --fix    rewrite the files in place
 *
 * Uses the clang-format on PATH (CLANG_FORMAT overrides). CI installs Debian 12's
 * (clang-format 14, `apt-get install clang-format`); another major version may format
 * a few constructs differently.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SOURCE = /\.(cc|cpp|h|hpp|cu|cuh)$/;
const bin = process.env.CLANG_FORMAT || 'clang-format';

const args = process.argv.slice(2);
const fix = args.includes('--fix');
if (args.some((a) => a !== '--fix')) {
  console.error('usage: node scripts/lint/clang-format.mjs [--fix]');
  process.exit(2);
}

function sources(dir) {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? sources(join(dir, e.name)) : SOURCE.test(e.name) ? [join(dir, e.name)] : []))
    .sort();
}

const version = spawnSync(bin, ['--version'], { encoding: 'utf8' });
if (version.error || version.status !== 0) {
  console.error(`clang-format: '${bin}' not found; install it (Debian: apt-get install clang-format) or set CLANG_FORMAT`);
  process.exit(2);
}
const files = sources(join(root, 'native')).map((f) => relative(root, f));
const r = spawnSync(bin, ['--style=file', ...(fix ? ['-i'] : ['--dry-run', '-Werror']), ...files], { cwd: root, encoding: 'utf8' });
if (r.error) throw r.error;
if (fix) {
  process.stderr.write(r.stderr);
} else if (r.status !== 0) {
  // One "file:line:col: error: code should be clang-formatted" per changed region, plus the context lines.
  const findings = r.stderr.split('\n').filter((l) => l.includes(': error: '));
  const byFile = new Map();
  for (const l of findings) byFile.set(l.split(':')[0], (byFile.get(l.split(':')[0]) ?? 0) + 1);
  for (const [file, n] of byFile) console.log(`${file}: ${n} place(s) to format`);
  if (findings.length === 0) process.stderr.write(r.stderr);
  console.log(`clang-format (${version.stdout.trim()}): ${findings.length} place(s) in ${byFile.size} of ${files.length} files; run \`npm run format\``);
} else {
  console.log(`clang-format: ${files.length} files formatted`);
}
process.exit(r.status === 0 ? 0 : 1);
