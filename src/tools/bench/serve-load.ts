/**
 * Load and fault tests of `invad serve` over loopback (issue 15, section 4), with autocannon.
 * Not part of `npm test` (minutes long, and its figures depend on the machine):
 *
 *   npm run build:ts && node dist/src/tools/bench/serve-load.js [--model DIR] [--json FILE]
 *       [--route score|infer] [--sustain-s 60] [--soak 10000] [--bad 1000] [--max-queue 64]
 *       [--connections 32] [--quick]
 *
 * It starts `invad serve` as a child process (a tiny synthetic bundle unless --model), then:
 * 1. saturation: closed loop with --connections (fewer than the queue holds) for 10 s; the
 *    throughput is the saturation rate;
 * 2. sustained: --sustain-s at 80% of saturation: zero errors expected, p50/p99 latency;
 * 3. overload: 3x saturation with more connections than the queue holds, for 15 s: the excess
 *    must get 503 quickly (a side probe times single requests), the server must stay up, and
 *    a closed loop afterwards must reach full throughput again (within the noise of a shared
 *    machine: 75% of the first measurement);
 * 4. soak: --soak requests in ten chunks; the server's RSS (from /proc) may grow under 5% from
 *    the first chunk to the last, and its file descriptors must not grow;
 * 5. faults: clients that disconnect mid-upload and mid-answer, malformed JSON, truncated
 *    binary tensors, and --bad undecodable images mixed into good traffic; after each, the
 *    reference images must score exactly as before.
 * Exit code 0 when every check passes, 1 otherwise. Linux only for RSS and descriptors.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { convBackbone, linearUnet } from '../../fit/onnx/synthetic';
import { writeBundle } from '../../fit/write-bundle';
import { encodeInferenceRequest } from '../../runtime/remote/kserve-codec';
import { packageRoot } from '../../util/package-info';
import { CpuMonitor, type CpuLoad, machineInfo, machineLine } from './machine';
import { summarize } from './stats';

// autocannon ships no types; the part of its API used here.
interface CannonRequest {
  method: string;
  path: string;
  body?: Buffer;
  headers?: Record<string, string>;
}
interface CannonOptions {
  url: string;
  connections: number;
  duration?: number;
  amount?: number;
  overallRate?: number;
  timeout?: number;
  requests: CannonRequest[];
}
interface CannonResult {
  requests: { average: number; total: number; sent: number };
  latency: { p50: number; p99: number; average: number; max: number };
  errors: number;
  timeouts: number;
  non2xx: number;
  duration: number;
  statusCodeStats: Record<string, { count: number }>;
}
// eslint-disable-next-line @typescript-eslint/no-require-imports
const autocannon = require('autocannon') as (o: CannonOptions) => Promise<CannonResult>;

/** One autocannon run, boiled down. */
interface Phase {
  name: string;
  connections: number;
  /** offered rate, req/s; null for a closed loop */
  offeredRate: number | null;
  seconds: number;
  requests: number;
  perSecond: number;
  status: Record<string, number>;
  errors: number;
  timeouts: number;
  p50Ms: number;
  p99Ms: number;
  cpu: CpuLoad;
}

interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

interface ServerProcess {
  child: ChildProcess;
  url: string;
  stderr: () => string;
  exited: Promise<number | null>;
}

const SIDE = 32;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The tiny synthetic bundle the tests use: 32 x 32 input, 6 x 4 x 4 features, S = 3. */
async function writeTinyBundle(dir: string): Promise<string> {
  const out = join(dir, 'bundle');
  const c = 6;
  const side = SIDE / 8;
  await writeBundle(out, {
    input: { width: SIDE, height: SIDE, resizeKernel: 'linear' },
    features: { channels: c, height: side, width: side },
    defaultSteps: 3,
    backbone: { bytes: convBackbone({ height: SIDE, width: SIDE, channels: c, stride: 8, seed: 7 }), name: 'synthetic-conv', taps: ['conv'] },
    unet: { bytes: linearUnet({ channels: c, height: side, width: side, k: 0.7, m: 1e-4 }) },
    training: { synthetic: true },
  });
  return out;
}

/** A deterministic RGB texture as PNG. */
async function png(width: number, height: number, seed: number): Promise<Buffer> {
  const px = Buffer.alloc(width * height * 3);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < px.length; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    px[i] = s >>> 24;
  }
  return sharp(px, { raw: { width, height, channels: 3 } })
    .png()
    .toBuffer();
}

function startServe(model: string, maxQueue: number): Promise<ServerProcess> {
  const cli = join(packageRoot(), 'dist', 'src', 'tools', 'cli', 'main.js');
  const child = spawn(process.execPath, [cli, 'serve', '--model', model, '--port', '0', '--max-queue', String(maxQueue)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    child.stderr.on('data', (chunk: Buffer) => {
      err += chunk.toString('utf8');
      const m = /ready: model "invad" on (http:\/\/\S+)/.exec(err);
      if (m) resolve({ child, url: m[1], stderr: () => err, exited });
    });
    void exited.then((code) => reject(new Error(`invad serve exited with ${code} before it was ready:\n${err}`)));
  });
}

/** RSS (MiB) and open descriptors of a process, from /proc; nulls elsewhere. */
function procStats(pid: number): { rssMiB: number | null; fds: number | null } {
  try {
    const kb = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return { rssMiB: kb ? Number(kb[1]) / 1024 : null, fds: readdirSync(`/proc/${pid}/fd`).length };
  } catch {
    return { rssMiB: null, fds: null };
  }
}

async function run(name: string, monitor: CpuMonitor, o: CannonOptions): Promise<Phase> {
  monitor.reset();
  const r = await autocannon({ timeout: 30, ...o });
  const status = Object.fromEntries(Object.entries(r.statusCodeStats ?? {}).map(([k, v]) => [k, v.count]));
  const requests = Object.values(status).reduce((a, n) => a + n, 0);
  return {
    name,
    connections: o.connections,
    offeredRate: o.overallRate ?? null,
    seconds: r.duration,
    requests,
    perSecond: requests / r.duration,
    status,
    errors: r.errors,
    timeouts: r.timeouts,
    p50Ms: r.latency.p50,
    p99Ms: r.latency.p99,
    cpu: monitor.read(),
  };
}

function phaseLine(p: Phase): string {
  const status = Object.entries(p.status)
    .map(([k, v]) => `${k}: ${v}`)
    .join(', ');
  const offered = p.offeredRate === null ? 'closed loop' : `offered ${p.offeredRate.toFixed(0)}/s`;
  return `${p.name.padEnd(12)} ${p.connections} conns, ${offered}, ${p.seconds.toFixed(1)} s: ${p.requests} answers (${status}), ${p.perSecond.toFixed(1)}/s, p50 ${p.p50Ms} ms, p99 ${p.p99Ms} ms, errors ${p.errors}, timeouts ${p.timeouts}; CPU busy ${(p.cpu.machineBusy * 100).toFixed(0)}% (others ${(p.cpu.others * 100).toFixed(0)}%)`;
}

/**
 * One request on a connection of its own, closed after the answer (agent: false): no client
 * pool keeps sockets open on the server, so its descriptor count means what it says.
 */
function request(
  url: string,
  method: string,
  path: string,
  body?: Buffer | string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url + path, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * The server's own view of its 503 answers on `route`, from /metrics: how many, their mean
 * time from headers to answer, and the share answered within 1 ms and 5 ms.
 */
async function serverSide503(url: string, route: string): Promise<{ count: number; meanMs: number; within1Ms: number; within5Ms: number }> {
  const text = (await request(url, 'GET', '/metrics')).body.toString('utf8');
  const labels = `route="${route}",status="503"`;
  const lines = text.split('\n');
  const value = (series: string) => {
    const line = lines.find((l) => l.startsWith(`${series} `));
    return line === undefined ? NaN : Number(line.slice(series.length + 1));
  };
  const count = value(`invad_http_request_duration_seconds_count{${labels}}`);
  const sum = value(`invad_http_request_duration_seconds_sum{${labels}}`);
  const le = (b: string) => value(`invad_http_request_duration_seconds_bucket{le="${b}",${labels}}`) / count;
  return { count, meanMs: (sum / count) * 1000, within1Ms: le('0.001'), within5Ms: le('0.005') };
}

/** Scores of the reference images through /v1/score: the fingerprint every fault must leave unchanged. */
async function referenceScores(url: string, images: readonly Buffer[]): Promise<number[]> {
  const out: number[] = [];
  for (const body of images) {
    const r = await request(url, 'POST', '/v1/score', body);
    if (r.status !== 200) throw new Error(`reference image answered ${r.status}: ${r.body.toString('utf8')}`);
    out.push((JSON.parse(r.body.toString('utf8')) as { score: number }).score);
  }
  return out;
}

/** Raw HTTP/1.1 over a socket that is dropped: after `sendBytes` of the request, or `afterMs` after sending all of it. */
function dropRequest(
  url: string,
  path: string,
  body: Buffer,
  headers: Record<string, string>,
  cut: { sendBytes: number } | { afterMs: number },
): Promise<void> {
  const { hostname, port } = new URL(url);
  const head = [
    `POST ${path} HTTP/1.1`,
    `Host: ${hostname}:${port}`,
    `Content-Length: ${body.length}`,
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    '',
    '',
  ].join('\r\n');
  const request = Buffer.concat([Buffer.from(head), body]);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname, () => {
      if ('sendBytes' in cut) {
        socket.write(request.subarray(0, Math.min(cut.sendBytes, request.length)), () => socket.destroy());
      } else {
        socket.write(request, () => setTimeout(() => socket.destroy(), cut.afterMs));
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => resolve());
  });
}

/** Times single requests at `everyMs` until `stop()`; each answer's status and latency. */
function probe(url: string, body: Buffer, everyMs: number): { stop: () => Promise<Array<{ status: number; ms: number }>> } {
  const seen: Array<{ status: number; ms: number }> = [];
  const pending: Array<Promise<void>> = [];
  const timer = setInterval(() => {
    const t0 = performance.now();
    pending.push(
      request(url, 'POST', '/v1/score', body).then(
        (r) => {
          seen.push({ status: r.status, ms: performance.now() - t0 });
        },
        () => {
          seen.push({ status: 0, ms: performance.now() - t0 });
        },
      ),
    );
  }, everyMs);
  return {
    stop: async () => {
      clearInterval(timer);
      await Promise.all(pending);
      return seen;
    },
  };
}

async function main(): Promise<number> {
  const { values: a } = parseArgs({
    options: {
      model: { type: 'string' },
      json: { type: 'string' },
      route: { type: 'string', default: 'score' },
      'sustain-s': { type: 'string', default: '60' },
      soak: { type: 'string', default: '10000' },
      bad: { type: 'string', default: '1000' },
      'max-queue': { type: 'string', default: '64' },
      connections: { type: 'string', default: '32' },
      quick: { type: 'boolean', default: false },
    },
  });
  const quick = a.quick === true;
  const sustainS = quick ? 10 : Number(a['sustain-s']);
  const soakN = quick ? 2000 : Number(a.soak);
  const badN = Math.max(10, Math.round((quick ? 200 : Number(a.bad)) / 10) * 10);
  const maxQueue = Number(a['max-queue']);
  const connections = Number(a.connections);
  if (a.route !== 'score' && a.route !== 'infer') throw new Error('--route is score or infer');

  const m = machineInfo();
  console.log('invad serve: load and fault tests over loopback (autocannon)');
  console.log(`  machine   ${machineLine(m)}; load average ${m.loadAverage.join(' ')}`);

  const tmp = mkdtempSync(join(tmpdir(), 'invad-serve-load-'));
  let server: ServerProcess | undefined;
  const checks: Check[] = [];
  const check = (name: string, ok: boolean, detail: string) => {
    checks.push({ name, ok, detail });
    console.log(`  ${ok ? 'PASS' : 'FAIL'} ${name}: ${detail}`);
  };
  try {
    const model = a.model ?? (await writeTinyBundle(tmp));
    server = await startServe(model, maxQueue);
    const { url } = server;
    const pid = server.child.pid!;
    const monitor = new CpuMonitor(() => [pid]);
    console.log(`  server    ${url} (pid ${pid}), model ${a.model ?? 'tiny synthetic bundle (32 x 32 input, S = 3)'}, --max-queue ${maxQueue}`);

    // What every load phase sends: a 64 x 64 PNG to /v1/score, or one binary uint8 frame to infer.
    const image = await png(64, 64, 1);
    const frame = (await sharp(image).resize(SIDE, SIDE).raw().toBuffer()) as Buffer;
    const inferBody = encodeInferenceRequest({ inputs: [{ name: 'image', datatype: 'UINT8', shape: [1, SIDE, SIDE, 3], data: new Uint8Array(frame) }] });
    const good: CannonRequest =
      a.route === 'score'
        ? { method: 'POST', path: '/v1/score', body: image, headers: { 'content-type': 'image/png' } }
        : { method: 'POST', path: '/v2/models/invad/infer', body: inferBody.body, headers: inferBody.headers };
    console.log(`  request   ${good.path} (${good.body!.length} bytes)`);
    const references = await Promise.all([1, 2, 3, 4].map((s) => png(48 + s * 8, 40 + s * 4, 100 + s)));
    const before = await referenceScores(url, references);

    // 0. warm-up
    await run('warm-up', monitor, { url, connections, duration: 3, requests: [good] });

    // 1. saturation
    const sat = await run('saturation', monitor, { url, connections, duration: quick ? 5 : 10, requests: [good] });
    console.log(`  ${phaseLine(sat)}`);
    const saturation = sat.perSecond;

    // 2. sustained at 80%
    const sustained = await run('sustained', monitor, {
      url,
      connections,
      duration: sustainS,
      overallRate: Math.max(1, Math.round(0.8 * saturation)),
      requests: [good],
    });
    console.log(`  ${phaseLine(sustained)}`);
    const sustainedOk = (sustained.status['200'] ?? 0) === sustained.requests && sustained.errors === 0 && sustained.timeouts === 0;
    check(
      'sustained 80% load, zero errors',
      sustainedOk,
      `${sustained.requests} answers, all 200: ${sustainedOk}; p50 ${sustained.p50Ms} ms, p99 ${sustained.p99Ms} ms`,
    );

    // 3. overload at 3x, with a side probe timing single requests
    const side = probe(url, image, 50);
    const overload = await run('overload', monitor, {
      url,
      connections: Math.max(4 * maxQueue, 3 * connections),
      duration: quick ? 8 : 15,
      overallRate: Math.round(3 * saturation),
      requests: [good],
    });
    const probes = await side.stop();
    console.log(`  ${phaseLine(overload)}`);
    const rejected = probes.filter((p) => p.status === 503).map((p) => p.ms);
    const served = probes.filter((p) => p.status === 200).map((p) => p.ms);
    const r503 = rejected.length > 0 ? summarize(rejected) : null;
    const r200 = served.length > 0 ? summarize(served) : null;
    const own503 = await serverSide503(url, good.path === '/v1/score' ? '/v1/score' : '/v2/models/:model/infer');
    const alive = server.child.exitCode === null && (await request(url, 'GET', '/v2/health/live')).status === 200;
    const overloadOk =
      (overload.status['503'] ?? 0) > 0 && alive && Object.keys(overload.status).every((s) => s === '200' || s === '503') && overload.errors === 0;
    check(
      'overload 3x: 503s, never a crash',
      overloadOk,
      `${overload.status['503'] ?? 0} x 503 and ${overload.status['200'] ?? 0} x 200, ${overload.perSecond.toFixed(1)} answers/s; probe 503 latency p50 ${r503?.median.toFixed(1) ?? '-'} ms, p99 ${r503?.p99.toFixed(1) ?? '-'} ms (${rejected.length}); probe 200 latency p50 ${r200?.median.toFixed(1) ?? '-'} ms (${served.length}); server side, headers to 503: mean ${own503.meanMs.toFixed(3)} ms, ${(own503.within1Ms * 100).toFixed(1)}% within 1 ms, ${(own503.within5Ms * 100).toFixed(1)}% within 5 ms; alive ${alive}`,
    );
    await sleep(2000);
    const recovery = await run('recovery', monitor, { url, connections, duration: quick ? 5 : 10, requests: [good] });
    console.log(`  ${phaseLine(recovery)}`);
    const recovered = recovery.perSecond / saturation;
    check(
      'recovers after overload',
      // 75%: on a shared machine two 10 s closed loops differ by 10-20% with the neighbours' load.
      recovered >= 0.75 && (recovery.status['200'] ?? 0) === recovery.requests,
      `${recovery.perSecond.toFixed(1)}/s = ${(recovered * 100).toFixed(0)}% of saturation (other processes took ${(sat.cpu.others * 100).toFixed(0)}% of the CPU then, ${(recovery.cpu.others * 100).toFixed(0)}% now), all 200`,
    );

    // 4. soak
    const chunk = Math.max(100, Math.round(soakN / 10));
    const samples: Array<{ requests: number; rssMiB: number | null; fds: number | null }> = [];
    let soakErrors = 0;
    for (let done = 0; done < soakN; done += chunk) {
      const r = await run('soak', monitor, { url, connections: 16, amount: chunk, requests: [good] });
      soakErrors += r.requests - (r.status['200'] ?? 0) + r.errors + r.timeouts;
      await sleep(200); // the client's sockets close
      samples.push({ requests: done + chunk, ...procStats(pid) });
    }
    const first = samples[0];
    const last = samples[samples.length - 1];
    const rssGrowth = first.rssMiB !== null && last.rssMiB !== null ? (last.rssMiB - first.rssMiB) / first.rssMiB : null;
    console.log(`  soak       RSS MiB by requests: ${samples.map((s) => `${s.requests}: ${s.rssMiB?.toFixed(1) ?? '-'}`).join(', ')}`);
    console.log(`  soak       descriptors: ${samples.map((s) => s.fds ?? '-').join(', ')}`);
    check(
      `soak ${soakN} requests: RSS growth < 5%, descriptors flat`,
      soakErrors === 0 && rssGrowth !== null && rssGrowth < 0.05 && first.fds !== null && last.fds! <= first.fds,
      `RSS ${first.rssMiB?.toFixed(1)} -> ${last.rssMiB?.toFixed(1)} MiB (${rssGrowth === null ? '-' : (rssGrowth * 100).toFixed(2)}%, after the first ${chunk} to the last), descriptors ${first.fds} -> ${last.fds}, ${soakErrors} errors`,
    );

    // 5. faults
    const fdsBefore = procStats(pid).fds;
    const same = async (after: string) => {
      const now = await referenceScores(url, references);
      const equal = now.every((v, i) => v === before[i]);
      check(
        `same scores after ${after}`,
        equal,
        equal ? `${now.length} reference images score exactly as before` : `before ${before.join(', ')}; now ${now.join(', ')}`,
      );
    };
    const big = await png(640, 480, 7);
    await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        i % 2 === 0
          ? dropRequest(url, '/v1/score', big, { 'content-type': 'image/png' }, { sendBytes: 200 + i * 50 })
          : dropRequest(url, '/v1/score', big, { 'content-type': 'image/png' }, { afterMs: i % 7 }),
      ),
    );
    await same('100 client disconnects (50 mid-upload, 50 before the answer)');

    const statuses = async (n: number, path: string, body: Buffer | string, headers: Record<string, string>) => {
      const out: Record<string, number> = {};
      for (let i = 0; i < n; i += 10) {
        const batch = await Promise.all(Array.from({ length: Math.min(10, n - i) }, () => request(url, 'POST', path, body, headers).then((r) => r.status)));
        for (const s of batch) out[s] = (out[s] ?? 0) + 1;
      }
      return out;
    };
    const malformed = await statuses(
      100,
      '/v2/models/invad/infer',
      '{"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 32, 32, 3], "data": [1, 2,',
      {
        'content-type': 'application/json',
      },
    );
    check('malformed JSON bodies get 400', malformed['400'] === 100, JSON.stringify(malformed));
    await same('100 malformed bodies');
    const truncated = await statuses(100, '/v2/models/invad/infer', inferBody.body.subarray(0, inferBody.body.length - 1000), inferBody.headers);
    check('truncated binary tensors get 400', truncated['400'] === 100, JSON.stringify(truncated));
    await same('100 truncated binary tensors');

    const badImage: CannonRequest = {
      method: 'POST',
      path: '/v1/score',
      body: Buffer.concat([image.subarray(0, 60), Buffer.alloc(200, 7)]),
      headers: { 'content-type': 'image/png' },
    };
    const scoreGood: CannonRequest = { method: 'POST', path: '/v1/score', body: image, headers: { 'content-type': 'image/png' } };
    // Each connection cycles good, good, good, bad: with 10 connections and 40 requests per
    // 10 bad images, every connection ends on a whole cycle, so exactly badN are bad.
    const mixed = await run('bad images', monitor, { url, connections: 10, amount: badN * 4, requests: [scoreGood, scoreGood, scoreGood, badImage] });
    console.log(`  ${phaseLine(mixed)}`);
    check(
      `${badN} bad images mixed into ${3 * badN} good ones`,
      mixed.status['400'] === badN && mixed.status['200'] === 3 * badN && mixed.errors === 0,
      `${mixed.status['200'] ?? 0} x 200, ${mixed.status['400'] ?? 0} x 400 (ERR_INVAD_INVALID_INPUT)`,
    );
    await same(`${badN} bad images`);
    // Idle keep-alive sockets of this process's fetch pool close after about 4 s; wait for them.
    let fdsAfter = procStats(pid).fds;
    for (let i = 0; i < 40 && fdsBefore !== null && fdsAfter !== null && fdsAfter > fdsBefore; i++) {
      await sleep(250);
      fdsAfter = procStats(pid).fds;
    }
    check('no descriptors leaked by the faults', fdsBefore === null || fdsAfter === null || fdsAfter <= fdsBefore, `${fdsBefore} -> ${fdsAfter}`);

    // Shutdown: SIGTERM drains and exits 0.
    server.child.kill('SIGTERM');
    const code = await server.exited;
    check('SIGTERM exits 0', code === 0, `exit code ${code}`);

    const result = {
      machine: m,
      route: good.path,
      maxQueue,
      connections,
      saturationPerSecond: saturation,
      phases: { saturation: sat, sustained, overload, recovery, mixed },
      overloadProbe: { rejected: r503, served: r200, serverSide503: own503 },
      soak: { chunk, samples, rssGrowth },
      checks,
    };
    if (a.json) {
      writeFileSync(a.json, JSON.stringify(result, null, 2));
      console.log(`  wrote ${a.json}`);
    }
  } finally {
    if (server && server.child.exitCode === null) server.child.kill('SIGKILL');
    rmSync(tmp, { recursive: true, force: true });
  }
  const failed = checks.filter((c) => !c.ok);
  console.log(
    failed.length === 0 ? `all ${checks.length} checks passed` : `${failed.length} of ${checks.length} checks FAILED: ${failed.map((c) => c.name).join('; ')}`,
  );
  return failed.length === 0 ? 0 : 1;
}

if (require.main === module) {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
}
