#!/usr/bin/env node
/**
 * `npm run lint`: every maintainer check, one after another, each as its own npm script.
 * A failing check does not stop the others; a summary closes the run and the exit code is 1
 * if any failed. Name checks to run only those: `node scripts/lint/run.mjs lint:ts lint:py`.
 */
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CHECKS = [
  ['lint:ts', 'eslint (typescript-eslint)'],
  ['lint:format', 'prettier --check'],
  ['lint:native', 'clang-format on native/'],
  ['lint:py', 'ruff on train/'],
  ['test:types', 'type tests of the .d.ts (test-d/)'],
  ['lint:package', 'publint on the packed package'],
];

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const wanted = process.argv.slice(2);
const unknown = wanted.filter((w) => !CHECKS.some(([name]) => name === w));
if (unknown.length > 0) {
  console.error(`lint: unknown check ${unknown.join(', ')}; checks: ${CHECKS.map(([n]) => n).join(', ')}`);
  process.exit(2);
}
const npm = process.env.npm_execpath;
const [file, pre] = npm && npm.endsWith('.js') ? [process.execPath, [npm]] : [process.platform === 'win32' ? 'npm.cmd' : 'npm', []];

const results = [];
for (const [name, what] of CHECKS.filter(([n]) => wanted.length === 0 || wanted.includes(n))) {
  console.log(`\n> ${name}: ${what}`);
  const t0 = Date.now();
  const r = spawnSync(file, [...pre, 'run', '--silent', name], { cwd: root, stdio: 'inherit' });
  results.push({ name, ok: r.status === 0, s: (Date.now() - t0) / 1000 });
}
console.log('\nlint summary:');
for (const r of results) console.log(`  ${r.ok ? 'ok  ' : 'FAIL'}  ${r.name.padEnd(13)} ${r.s.toFixed(1)} s`);
const failed = results.filter((r) => !r.ok).length;
console.log(
  failed === 0 ? 'lint: all checks passed' : `lint: ${failed} of ${results.length} checks failed (\`npm run format\` fixes formatting; see above for the rest)`,
);
process.exit(failed === 0 ? 0 : 1);
