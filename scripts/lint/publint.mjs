#!/usr/bin/env node
/**
 * publint on the package as it would be published: `npm pack` into a temporary folder,
 * then publint on that tarball (so the check sees the `files` list, the exports map and
 * dist/ exactly as a user would install them). Packs what dist/ holds now, without
 * running prepack: run after `npm run build:ts` (as `npm test` does, through compile).
 * Suggestions are printed; warnings and errors fail (publint --strict).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { publint } from 'publint';
import { formatMessage } from 'publint/utils';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
if (!existsSync(join(root, 'dist', 'src', 'index.d.ts'))) {
  console.error('publint: dist/ is not built; run `npm run build:ts` first');
  process.exit(2);
}

const dir = mkdtempSync(join(tmpdir(), 'invad-publint-'));
let failed = false;
try {
  const npm = process.env.npm_execpath;
  // Inside `npm run`, npm_execpath is npm's own CLI script; elsewhere use the npm on PATH.
  const [file, pre] = npm && npm.endsWith('.js') ? [process.execPath, [npm]] : [process.platform === 'win32' ? 'npm.cmd' : 'npm', []];
  const out = execFileSync(file, [...pre, 'pack', '--ignore-scripts', '--json', '--pack-destination', dir], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const [{ filename }] = JSON.parse(out);
  const tarball = readFileSync(join(dir, filename));
  const { messages, pkg } = await publint({
    pack: { tarball: tarball.buffer.slice(tarball.byteOffset, tarball.byteOffset + tarball.byteLength) },
    strict: true,
  });
  for (const m of messages) {
    console.log(`${m.type}: ${formatMessage(m, pkg, { color: false })}`);
    if (m.type !== 'suggestion') failed = true;
  }
  console.log(messages.length === 0 ? `publint: ${filename} is fine` : `publint: ${messages.length} message(s) on ${filename}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
