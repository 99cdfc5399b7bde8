/**
 * The fuzz suite (fuzz/, `npm run fuzz`) in npm test: a check that the harness tells every
 * outcome apart, and a bounded smoke run of the campaign (a few thousand inputs over the
 * addon, Detector.score, bundle loading and the CLI) that must find no crash, hang or
 * untyped error. A failure lists each finding with the command that replays it.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packageRoot } from '../src/util/package-info';

const runner = join(packageRoot(), 'dist', 'fuzz', 'main.js');

interface Finding {
  seed: number;
  outcome: string;
  key?: string;
  input?: string;
  error?: { name: string; message: string };
  replay: string;
  alone?: string;
}

interface FuzzReport {
  pass: boolean;
  wallSeconds: number;
  targets: Record<string, { counts: Record<string, number>; inputs: Record<string, number>; findings: Finding[] }>;
  harnessErrors: string[];
}

let tmp: string;
beforeAll(() => {
  if (!existsSync(runner)) throw new Error(`${runner} missing: npm test compiles it first (npm run compile)`);
  tmp = mkdtempSync(join(tmpdir(), 'invad-fuzz-test-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function fuzz(args: string[], name: string): { status: number | null; report: FuzzReport; stdout: string } {
  const report = join(tmp, `${name}.json`);
  const r = spawnSync(process.execPath, [runner, ...args, '--report', report, '--quiet'], { encoding: 'utf8', timeout: 110_000 });
  if (!existsSync(report)) throw new Error(`the fuzz runner wrote no report (status ${r.status}):\n${r.stdout}\n${r.stderr}`);
  return { status: r.status, report: JSON.parse(readFileSync(report, 'utf8')) as FuzzReport, stdout: r.stdout };
}

test('the harness classifies ok, typed, untyped, crash and hang, pins each to its seed and goes on', () => {
  // selftest: seed % 5 = 0 ok, 1 typed, 2 untyped, 3 abort(), 4 never settles
  const { status, report, stdout } = fuzz(['--target', 'selftest', '--seed', '0', '--iterations', '10'], 'selftest');
  expect(status).toBe(1);
  expect(report.pass).toBe(false);
  const t = report.targets.selftest;
  expect(t.counts).toEqual({ ok: 2, typed: 2, untyped: 2, crash: 2, hang: 2 });
  const by = (outcome: string) => t.findings.filter((f) => f.outcome === outcome).map((f) => f.seed);
  expect([by('untyped'), by('crash'), by('hang')]).toEqual([
    [2, 7],
    [3, 8],
    [4, 9],
  ]);
  const crash = t.findings.find((f) => f.seed === 3)!;
  expect(crash).toMatchObject({
    key: 'signal SIGABRT',
    input: 'selftest crash',
    alone: 'crash',
    replay: 'npm run fuzz -- --target selftest --seed 3 --iterations 1',
  });
  expect(t.findings.find((f) => f.seed === 4)!.alone).toBe('hang');
  expect(stdout).toMatch(/selftest\s+10\s+2\s+2\s+2\s+2\s+2/);
});

test('smoke: a few thousand fuzz inputs in under 60 s, with no crash, hang or untyped error', () => {
  const seed = process.env.INVAD_FUZZ_SEED ?? '1';
  const { report } = fuzz(['--smoke', '--seed', seed], 'smoke');
  const cases = Object.values(report.targets).reduce((n, t) => n + Object.values(t.counts).reduce((a, b) => a + b, 0), 0);
  expect(cases).toBeGreaterThanOrEqual(2500);
  for (const target of ['addon', 'score', 'bundle', 'cli']) expect(report.targets[target].counts.ok).toBeGreaterThan(0);
  // The campaign's figures count what reached the library: addon calls and decoder inputs.
  expect(report.targets.addon.inputs.calls).toBeGreaterThanOrEqual(2400);
  expect(report.targets.score.inputs['decoder inputs']).toBeGreaterThan(250);
  const findings = Object.entries(report.targets).flatMap(([target, t]) =>
    t.findings.map(
      (f) =>
        `${target} ${f.outcome} (${f.key ?? ''}) seed ${f.seed}: ${f.input ?? ''} -> ${f.error ? `${f.error.name}: ${f.error.message}` : ''} [${f.replay}]`,
    ),
  );
  expect(findings).toEqual([]);
  expect(report.harnessErrors).toEqual([]);
  expect(report.wallSeconds).toBeLessThan(60);
});
