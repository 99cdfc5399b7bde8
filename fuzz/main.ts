#!/usr/bin/env node
/**
 * `npm run fuzz`: the fuzz campaign. Each target's cases run in child processes (a few
 * thousand per process), so a crash (the child dies) or a hang (no answer within the case's
 * timeout; the child is killed) is caught, pinned to its case seed, and the campaign goes on
 * in a fresh child. Prints a summary table, writes a JSON report, and exits 1 when any case
 * crashed, hung or threw an untyped error.
 *
 *   npm run fuzz -- [--target addon,score,bundle,cli] [--seed N] [--iterations N] [--smoke]
 *   npm run fuzz -- --target addon --seed 123 --iterations 1     (replay one case)
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { ALL_TARGETS, type ChildMessage, type ErrorInfo, FAILURES, type Outcome, OUTCOMES, SEVERITY, TARGET_NAMES, type TargetName } from './protocol';

/**
 * Cases per target of a full campaign, and of the smoke run `npm test` includes. The issue asks
 * for at least 10^5 addon calls and 10^4 decoder inputs: an addon case makes about one call, and
 * a score case feeds the decoders about 0.7 encoded images (the rest are raw pixels, paths and
 * junk), so 16,000 score cases give some 11,000. The report counts both (targets.*.inputs).
 * Bundle cases are cheap (~40 ms) and racy findings there (a worker's exit) are rare: 2,000.
 */
const CAMPAIGN: Record<TargetName, number> = { addon: 100_000, score: 16_000, bundle: 2000, cli: 150, selftest: 10 };
const SMOKE: Record<TargetName, number> = { addon: 2400, score: 500, bundle: 24, cli: 8, selftest: 10 };
/** Cases per child process: a restart costs the target's setup (a second or so). */
const SHARD: Record<TargetName, number> = { addon: 3000, score: 1000, bundle: 100, cli: 40, selftest: 100 };
/** Findings replayed alone, per target, to tell a case's own crash from one it inherited. */
const REPLAYS_PER_TARGET = 5;
const SETUP_TIMEOUT_MS = 120_000;
const HARNESS_EXIT = 71;

export interface CaseRecord {
  seed: number;
  outcome: Outcome;
  /** what kind: the error code, the error class, the signal */
  key?: string;
  input?: string;
  error?: ErrorInfo;
  /** the child's last output, for crashes and hangs */
  output?: string;
  /** what the case fed the library (calls, decoder inputs, ...) */
  counts?: Record<string, number>;
}

export interface Finding extends CaseRecord {
  replay: string;
  /** the outcome when the case ran alone in a fresh process */
  alone?: Outcome;
}

interface Options {
  targets: TargetName[];
  seed: number;
  iterations: Record<TargetName, number>;
  jobs: number;
  timeoutMs: number | null;
  memoryMb: number;
  report: string;
  replay: boolean;
  keep: boolean;
  quiet: boolean;
  smoke: boolean;
}

const HELP = `invad fuzz campaign (npm run fuzz -- [options])

  --target <list>     targets, comma-separated: ${TARGET_NAMES.join(', ')} (default: all)
  --seed <n>          first case seed; case i has seed n+i (default: from the clock)
  --iterations <n>    cases per target (default: ${TARGET_NAMES.map((t) => `${t} ${CAMPAIGN[t]}`).join(', ')})
  --smoke             the bounded run npm test includes (${TARGET_NAMES.map((t) => `${t} ${SMOKE[t]}`).join(', ')})
  --jobs <n>          child processes at once (default: min(2, cores))
  --timeout <ms>      per-case timeout, overriding each target's
  --memory-mb <n>     address-space limit of each child (ulimit -v; default 6144)
  --report <file>     the JSON report (default: <tmp>/invad-fuzz-report.json)
  --no-replay         do not rerun crashes and hangs alone
  --keep              keep the work folder
  --quiet             no progress lines

Outcomes: ok, typed (a documented error), untyped (any other error, or a wrong result such as
a NaN score), crash (the process died), hang (no answer in time). Exit code 1 when any case is
untyped, crashed or hung; replay one with --target T --seed S --iterations 1.`;

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      target: { type: 'string' },
      seed: { type: 'string' },
      iterations: { type: 'string' },
      smoke: { type: 'boolean', default: false },
      jobs: { type: 'string' },
      timeout: { type: 'string' },
      'memory-mb': { type: 'string' },
      report: { type: 'string' },
      'no-replay': { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP + '\n');
    process.exit(0);
  }
  const int = (name: string, v: string | undefined, min: number): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) throw new Error(`--${name} expects an integer >= ${min}, got "${v}"`);
    return n;
  };
  const targets = (values.target?.split(',').map((t) => t.trim()) ?? [...TARGET_NAMES]) as TargetName[];
  for (const t of targets)
    if (!ALL_TARGETS.includes(t)) throw new Error(`unknown target "${t}"; targets are ${TARGET_NAMES.join(', ')} (and selftest, which checks the harness)`);
  const count = int('iterations', values.iterations, 1);
  const base = values.smoke ? SMOKE : CAMPAIGN;
  return {
    targets,
    seed: int('seed', values.seed, 0) ?? Math.floor(Date.now() / 1000) % 1_000_000_000,
    iterations: Object.fromEntries(ALL_TARGETS.map((t) => [t, count ?? base[t]])) as Record<TargetName, number>,
    jobs: int('jobs', values.jobs, 1) ?? Math.max(1, Math.min(2, cpus().length)),
    timeoutMs: int('timeout', values.timeout, 100) ?? null,
    memoryMb: int('memory-mb', values['memory-mb'], 512) ?? 6144,
    report: resolve(values.report ?? join(tmpdir(), 'invad-fuzz-report.json')),
    replay: !values['no-replay'],
    keep: values.keep,
    quiet: values.quiet,
    smoke: values.smoke,
  };
}

interface Shard {
  target: TargetName;
  first: number;
  count: number;
}

interface ShardResult {
  records: CaseRecord[];
  /** seeds still to run when the child died early */
  rest: Shard | null;
  /** the harness itself failed (setup error, a bug in a target): not a finding about invad */
  harness: string[];
  ms: number;
}

const CHILD = join(__dirname, 'child.js');
const TIMEOUT: Record<TargetName, number> = { addon: 10_000, score: 15_000, bundle: 20_000, cli: 40_000, selftest: 1500 };
const live = new Set<number>();

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // gone already
  }
}

/** Runs one shard in a child process (its own process group, so a kill takes its children too). */
function runShard(shard: Shard, o: Options, workDir: string): Promise<ShardResult> {
  const dir = join(workDir, `${shard.target}-${shard.first}`);
  mkdirSync(dir, { recursive: true });
  const caseTimeout = o.timeoutMs ?? TIMEOUT[shard.target];
  const script = `ulimit -v ${o.memoryMb * 1024} 2>/dev/null; ulimit -c 0 2>/dev/null; exec "$0" "$@"`;
  const useShell = existsSync('/bin/sh');
  const args = [CHILD, shard.target, String(shard.first), String(shard.count), dir];
  const child = useShell
    ? spawn('/bin/sh', ['-c', script, process.execPath, ...args], { detached: true, stdio: ['ignore', 'pipe', 'pipe', 'pipe'] })
    : spawn(process.execPath, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
  if (child.pid !== undefined) live.add(child.pid);
  const t0 = performance.now();

  return new Promise((resolveShard) => {
    const records: CaseRecord[] = [];
    const harness: string[] = [];
    let output = '';
    let current: { seed: number; input?: string } | null = null;
    let lastEnded: number | null = null;
    let fatal: { seed: number | null; error: ErrorInfo } | null = null;
    let hung = false;
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    const arm = (ms: number) => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        hung = true;
        killGroup(child.pid);
      }, ms);
    };
    arm(SETUP_TIMEOUT_MS);
    const keep = (d: Buffer) => {
      output = (output + d.toString('utf8')).slice(-4096);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    let pending = '';
    const protocol = child.stdio[3] as NodeJS.ReadableStream;
    protocol.on('data', (d: Buffer) => {
      pending += d.toString('utf8');
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const msg = JSON.parse(pending.slice(0, nl)) as ChildMessage;
        pending = pending.slice(nl + 1);
        if (msg.t === 'ready') clearTimeout(timer);
        else if (msg.t === 'start') {
          current = { seed: msg.seed };
          arm(caseTimeout);
        } else if (msg.t === 'note' && current) current.input = msg.text;
        else if (msg.t === 'slow' && current) arm(Math.max(caseTimeout, msg.ms));
        else if (msg.t === 'end') {
          clearTimeout(timer);
          records.push({ seed: msg.seed, outcome: msg.outcome, key: msg.key, input: current?.input, error: msg.error, counts: msg.counts });
          lastEnded = msg.seed;
          current = null;
        } else if (msg.t === 'fatal') fatal = { seed: msg.seed, error: msg.error };
        else if (msg.t === 'harness') harness.push(`${shard.target} seed ${msg.seed}: ${msg.error.name}: ${msg.error.message}\n${msg.error.stack ?? ''}`);
        else if (msg.t === 'done') {
          arm(SETUP_TIMEOUT_MS); // teardown
          done = true;
        }
      }
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (child.pid !== undefined) live.delete(child.pid);
      const ms = performance.now() - t0;
      const end = shard.first + shard.count;
      if (done && !hung && code === 0) return resolveShard({ records, rest: null, harness, ms });
      if (code === HARNESS_EXIT)
        return resolveShard({
          records,
          rest: null,
          harness: [...harness, `${shard.target} child (seeds ${shard.first}..${end - 1}): ${output.trim().slice(-1500)}`],
          ms,
        });
      const how = hung ? 'hang' : 'crash';
      const key = hung
        ? current
          ? 'timeout'
          : 'timeout outside a case'
        : fatal
          ? `fatal: ${fatal.error.name}`
          : signal
            ? `signal ${signal}`
            : `exit code ${code}`;
      // A death between cases belongs to the case before: async work it left behind.
      const seed: number | null = current?.seed ?? fatal?.seed ?? lastEnded;
      if (seed === null) {
        // In setup: the target cannot run at all here.
        return resolveShard({ records, rest: null, harness: [...harness, `${shard.target} child died in setup (${key}): ${output.trim().slice(-1500)}`], ms });
      }
      const rec = {
        seed,
        outcome: how as Outcome,
        key,
        input: current?.input ?? records.find((r) => r.seed === seed)?.input,
        error: fatal?.error,
        output: output.trim().slice(-2000),
      };
      if (current === null) rec.key += done ? ' (in teardown, after the last case)' : ' (after the case returned)';
      records.push(rec);
      const next = seed + 1;
      resolveShard({ records, rest: next < end ? { target: shard.target, first: next, count: end - next } : null, harness, ms });
    });
  });
}

interface TargetStats {
  cases: Map<number, CaseRecord>;
  /** summed CaseRecord.counts of the cases that finished (a crashed or hung case adds none) */
  inputs: Record<string, number>;
  ms: number;
  children: number;
}

function worst(a: CaseRecord | undefined, b: CaseRecord): CaseRecord {
  return a && SEVERITY[a.outcome] >= SEVERITY[b.outcome] ? a : b;
}

async function runAll(shards: Shard[], o: Options, workDir: string, stats: Map<TargetName, TargetStats>, harness: string[]): Promise<void> {
  const queue = [...shards];
  const progress = (t: TargetName) => {
    if (o.quiet) return;
    const s = stats.get(t)!;
    const c = countOutcomes(s);
    process.stderr.write(`fuzz ${t}: ${s.cases.size}/${o.iterations[t]} cases, ${OUTCOMES.map((k) => `${k} ${c[k]}`).join(', ')}\n`);
  };
  const worker = async () => {
    for (let shard = queue.shift(); shard; shard = queue.shift()) {
      const r = await runShard(shard, o, workDir);
      const s = stats.get(shard.target)!;
      s.ms += r.ms;
      s.children++;
      for (const rec of r.records) {
        s.cases.set(rec.seed, worst(s.cases.get(rec.seed), rec));
        for (const [k, n] of Object.entries(rec.counts ?? {})) s.inputs[k] = (s.inputs[k] ?? 0) + n;
      }
      harness.push(...r.harness);
      if (r.rest) queue.unshift(r.rest);
      progress(shard.target);
    }
  };
  await Promise.all(Array.from({ length: o.jobs }, worker));
}

function countOutcomes(s: TargetStats): Record<Outcome, number> {
  const c = Object.fromEntries(OUTCOMES.map((k) => [k, 0])) as Record<Outcome, number>;
  for (const r of s.cases.values()) c[r.outcome]++;
  return c;
}

function replayCommand(target: TargetName, seed: number): string {
  return `npm run fuzz -- --target ${target} --seed ${seed} --iterations 1`;
}

/** The summary table: one row per target and a total. */
export function summaryTable(rows: Array<{ target: string; counts: Record<Outcome, number>; seconds: number }>): string {
  const head = ['target', 'cases', ...OUTCOMES, 'seconds'];
  const total = {
    target: 'total',
    counts: Object.fromEntries(OUTCOMES.map((k) => [k, rows.reduce((n, r) => n + r.counts[k], 0)])) as Record<Outcome, number>,
    seconds: rows.reduce((n, r) => n + r.seconds, 0),
  };
  const cells = [...rows, total].map((r) => [
    r.target,
    String(OUTCOMES.reduce((n, k) => n + r.counts[k], 0)),
    ...OUTCOMES.map((k) => String(r.counts[k])),
    r.seconds.toFixed(1),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) => c.map((x, i) => (i === 0 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join('  ');
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n');
}

async function main(): Promise<number> {
  let o: Options;
  try {
    o = parseOptions(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`fuzz: ${(err as Error).message}\n\n${HELP}\n`);
    return 2;
  }
  const workDir = mkdtempSync(join(tmpdir(), 'invad-fuzz-'));
  const onSignal = () => {
    for (const pid of live) killGroup(pid);
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const t0 = performance.now();
  // The machine's load during the campaign: the 1-minute average every 10 s (the campaign's
  // own children add up to `jobs` to it).
  const loads = [loadavg()[0]];
  const sampler = setInterval(() => loads.push(loadavg()[0]), 10_000).unref();
  const stats = new Map(o.targets.map((t) => [t, { cases: new Map<number, CaseRecord>(), inputs: {}, ms: 0, children: 0 } as TargetStats]));
  const harness: string[] = [];
  const shards = o.targets.flatMap((target) => {
    const n = o.iterations[target];
    // At least `jobs` shards, so a smaller run still uses every job.
    const size = Math.max(1, Math.min(SHARD[target], Math.ceil(n / o.jobs)));
    return Array.from({ length: Math.ceil(n / size) }, (_, i) => ({ target, first: o.seed + i * size, count: Math.min(size, n - i * size) }));
  });
  // Slow targets first, so they do not finish last on one job.
  shards.sort((a, b) => TIMEOUT[b.target] - TIMEOUT[a.target]);
  if (!o.quiet)
    process.stderr.write(`fuzz: seed ${o.seed}, ${o.targets.map((t) => `${t} ${o.iterations[t]}`).join(', ')}, ${o.jobs} job(s), work folder ${workDir}\n`);
  await runAll(shards, o, workDir, stats, harness);

  const findings: Record<string, Finding[]> = {};
  for (const [target, s] of stats) {
    findings[target] = [...s.cases.values()]
      .filter((r) => FAILURES.includes(r.outcome))
      .sort((a, b) => a.seed - b.seed)
      .map((r) => ({ ...r, replay: replayCommand(target, r.seed) }));
  }
  if (o.replay) {
    for (const [target, list] of Object.entries(findings) as Array<[TargetName, Finding[]]>) {
      for (const f of list.filter((x) => x.outcome !== 'untyped').slice(0, REPLAYS_PER_TARGET)) {
        const r = await runShard({ target, first: f.seed, count: 1 }, o, workDir);
        f.alone = r.records.find((x) => x.seed === f.seed)?.outcome;
      }
    }
  }
  clearInterval(sampler);
  loads.push(loadavg()[0]);
  const rows = [...stats].map(([target, s]) => ({ target, counts: countOutcomes(s), seconds: s.ms / 1000 }));
  const typedKinds = Object.fromEntries(
    [...stats].map(([target, s]) => {
      const kinds: Record<string, number> = {};
      for (const r of s.cases.values()) if (r.outcome === 'typed') kinds[r.key ?? '?'] = (kinds[r.key ?? '?'] ?? 0) + 1;
      return [target, kinds];
    }),
  );
  const failed = rows.some((r) => FAILURES.some((k) => r.counts[k] > 0)) || harness.length > 0;
  const report = {
    command: `npm run fuzz -- ${process.argv.slice(2).join(' ')}`.trim(),
    createdAt: new Date().toISOString(),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    cores: cpus().length,
    loadAverage: { start: loads[0], mean: loads.reduce((a, b) => a + b, 0) / loads.length, max: Math.max(...loads), samples: loads.length },
    seed: o.seed,
    iterations: Object.fromEntries(o.targets.map((t) => [t, o.iterations[t]])),
    jobs: o.jobs,
    memoryMb: o.memoryMb,
    wallSeconds: (performance.now() - t0) / 1000,
    pass: !failed,
    targets: Object.fromEntries(
      rows.map((r) => [
        r.target,
        {
          counts: r.counts,
          inputs: stats.get(r.target)!.inputs,
          seconds: r.seconds,
          children: stats.get(r.target)!.children,
          typedKinds: typedKinds[r.target],
          findings: findings[r.target],
        },
      ]),
    ),
    harnessErrors: harness,
  };
  mkdirSync(dirname(o.report), { recursive: true });
  writeFileSync(o.report, JSON.stringify(report, null, 2) + '\n');
  if (!o.keep) rmSync(workDir, { recursive: true, force: true });

  const fed = [...stats].map(
    ([t, s]) =>
      `${t}: ${
        Object.entries(s.inputs)
          .map(([k, n]) => `${n} ${k}`)
          .join(', ') || 'nothing'
      }`,
  );
  process.stdout.write(
    `\n${summaryTable(rows)}\n\n${fed.join('\n')}\nwall ${report.wallSeconds.toFixed(1)} s on ${report.cores} cores (load average ${report.loadAverage.start.toFixed(1)} at the start, mean ${report.loadAverage.mean.toFixed(1)}, max ${report.loadAverage.max.toFixed(1)}), seed ${o.seed}; report: ${o.report}\n`,
  );
  for (const [target, list] of Object.entries(findings)) {
    // One line per distinct kind of finding, with the first seed that shows it.
    const byKind = new Map<string, Finding[]>();
    for (const f of list) byKind.set(`${f.outcome} ${f.key ?? ''}`, [...(byKind.get(`${f.outcome} ${f.key ?? ''}`) ?? []), f]);
    for (const [kind, fs] of byKind) {
      const f = fs[0];
      const msg = f.error ? `${f.error.name}: ${f.error.message}`.split('\n')[0].slice(0, 200) : (f.output ?? '').split('\n').slice(-1)[0].slice(0, 200);
      process.stdout.write(
        `\n${target} ${kind} x${fs.length}${f.alone ? ` (alone: ${f.alone})` : ''}\n  input: ${f.input ?? '?'}\n  ${msg}\n  replay: ${f.replay}\n`,
      );
    }
  }
  for (const h of harness) process.stdout.write(`\nharness error: ${h}\n`);
  process.stdout.write(failed ? '\nFAIL: crashes, hangs or untyped errors (see above)\n' : '\nPASS: no crashes, hangs or untyped errors\n');
  return failed ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`fuzz: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 2;
  },
);
