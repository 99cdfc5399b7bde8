#!/usr/bin/env node
/**
 * Ruff for train/, through Ruff's WebAssembly build (@astral-sh/ruff-wasm-nodejs): this
 * project's machines reach the npm registry but no Python package index, so the ruff
 * binary cannot be installed; the WebAssembly build is the same linter and formatter.
 *
 *   node scripts/lint/ruff.mjs check            lint every .py file under train/
 *   node scripts/lint/ruff.mjs format --check   list the files `format` would change
 *   node scripts/lint/ruff.mjs format           rewrite them (ruff format)
 *
 * Settings come from train/ruff.toml (the file a native `ruff` reads too). Exits 1 when a
 * check finds something, 2 on a usage or configuration error.
 */
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PositionEncoding, Workspace } from '@astral-sh/ruff-wasm-nodejs';
import { parse } from 'smol-toml';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const trainDir = join(root, 'train');

function usage(message) {
  console.error(`ruff: ${message}\nusage: node scripts/lint/ruff.mjs check | format [--check]`);
  process.exit(2);
}

function pythonFiles(dir) {
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => !e.name.startsWith('.') && e.name !== '__pycache__')
    .flatMap((e) => (e.isDirectory() ? pythonFiles(join(dir, e.name)) : e.name.endsWith('.py') ? [join(dir, e.name)] : []))
    .sort();
}

const [command, ...flags] = process.argv.slice(2);
if (command !== 'check' && command !== 'format') usage(`unknown command '${command ?? ''}'`);
const unknown = flags.filter((f) => !(command === 'format' && f === '--check'));
if (unknown.length > 0) usage(`unknown option ${unknown.join(' ')}`);

let settings;
try {
  settings = parse(readFileSync(join(trainDir, 'ruff.toml'), 'utf8'));
} catch (err) {
  console.error(`ruff: cannot read train/ruff.toml: ${err.message}`);
  process.exit(2);
}
const workspace = new Workspace(settings, PositionEncoding.Utf16);
const files = pythonFiles(trainDir);
const rel = (file) => relative(root, file);
let problems = 0;

if (command === 'check') {
  for (const file of files) {
    const found = workspace.check(readFileSync(file, 'utf8'));
    found.sort((a, b) => a.start_location.row - b.start_location.row || a.start_location.column - b.start_location.column);
    for (const d of found) {
      problems++;
      console.log(`${rel(file)}:${d.start_location.row}:${d.start_location.column}: ${d.code ?? 'syntax-error'} ${d.message}`);
    }
  }
  console.log(problems === 0 ? `ruff ${Workspace.version()}: ${files.length} files, no problems` : `ruff: ${problems} problem(s) in train/`);
} else {
  const write = !flags.includes('--check');
  for (const file of files) {
    const source = readFileSync(file, 'utf8');
    const formatted = workspace.format(source);
    if (formatted === source) continue;
    problems++;
    if (write) writeFileSync(file, formatted);
    console.log(`${write ? 'formatted' : 'would reformat'} ${rel(file)}`);
  }
  if (!write) console.log(problems === 0 ? `ruff format: ${files.length} files already formatted` : `ruff format: ${problems} file(s) would be reformatted`);
  problems = write ? 0 : problems;
}
process.exit(problems === 0 ? 0 : 1);
