/**
 * `invad serve` over loopback: every route, JSON and binary inference against Detector.score on
 * the same images, the error answers (400 with codes, 404, 413, 401, 503 with Retry-After), the
 * metrics text, readiness while the model loads, micro-batching across requests, and SIGTERM
 * draining of the CLI in a child process. Each server binds port 0 on 127.0.0.1.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { Detector } from '../src/runtime/detector';
import type { RawImage } from '../src/runtime/preprocess';
import { decodeInferenceResponse, encodeInferenceRequest, type InferenceResponse } from '../src/runtime/remote/kserve-codec';
import { startServer, type InvadServer } from '../src/deploy/serve';
import { packageRoot } from '../src/util/package-info';
import { tempDir, TINY, writeSlowBundle, writeTinyBundle } from './helpers/bundles';
import { pngOf, randomRaw } from './helpers/images';

const SIDE = TINY.inputSize;
const GRID = SIDE / TINY.stride;
const INFER = '/v2/models/invad/infer';

let tmp: ReturnType<typeof tempDir>;
let bundle: string;
let slowBundle: string;
beforeAll(async () => {
  tmp = tempDir('invad-serve-');
  bundle = await writeTinyBundle(tmp.dir);
  slowBundle = await writeSlowBundle(tmp.dir, 300);
});
afterAll(() => tmp.cleanup());

/** N frames of the model's input size, uint8 [N, H, W, 3], each from its own seed. */
function frames(n: number, seed = 1): { data: Uint8Array; each: RawImage[] } {
  const each = Array.from({ length: n }, (_, i) => randomRaw(SIDE, SIDE, 3, seed + i));
  const data = new Uint8Array(n * SIDE * SIDE * 3);
  each.forEach((f, i) => data.set(f.data, i * SIDE * SIDE * 3));
  return { data, each };
}

async function infer(
  url: string,
  body: Buffer,
  headers: Record<string, string>,
): Promise<{ status: number; response?: InferenceResponse; json?: { error: string; code: string }; headers: Headers }> {
  const r = await fetch(url + INFER, { method: 'POST', body, headers });
  const bytes = Buffer.from(await r.arrayBuffer());
  if (r.status !== 200) return { status: r.status, json: JSON.parse(bytes.toString('utf8')), headers: r.headers };
  return { status: 200, response: decodeInferenceResponse(bytes, r.headers.get('inference-header-content-length') ?? undefined), headers: r.headers };
}

async function errorOf(r: Response): Promise<{ status: number; code: string; error: string }> {
  const body = (await r.json()) as { code: string; error: string };
  return { status: r.status, code: body.code, error: body.error };
}

describe('one server on the tiny bundle', () => {
  let server: InvadServer;
  let det: Detector;
  beforeAll(async () => {
    server = await startServer({ model: bundle, port: 0 });
    det = await Detector.load(bundle);
  });
  afterAll(async () => {
    await server.close();
    await det.dispose();
  });

  test('binds to 127.0.0.1 by default; health, server and model metadata, readiness', async () => {
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect((await fetch(server.url + '/v2/health/live')).status).toBe(200);
    expect((await fetch(server.url + '/v2/health/ready')).status).toBe(200);
    expect((await fetch(server.url + '/v2/models/invad/ready')).status).toBe(200);
    expect((await fetch(server.url + '/v2/models/invad/versions/1/ready')).status).toBe(200);
    const meta = await (await fetch(server.url + '/v2')).json();
    expect(meta).toMatchObject({ name: 'invad', extensions: ['binary_tensor_data'] });
    const model = await (await fetch(server.url + '/v2/models/invad')).json();
    expect(model).toMatchObject({
      name: 'invad',
      versions: ['1'],
      inputs: [{ name: 'image', datatype: 'UINT8', shape: [-1, SIDE, SIDE, 3] }],
      parameters: { steps: TINY.steps, score_definition: 'combined', calibrated: false, max_batch_size: 8, alpha: 'drop', resize_kernel: 'linear' },
    });
    expect(model.outputs.map((o: { name: string }) => o.name)).toEqual(['score', 'is_anomalous', 'map', 'spatial_range', 'nll']);
    expect(model.outputs[2]).toEqual({ name: 'map', datatype: 'FP32', shape: [-1, GRID, GRID] });
    expect(await fetch(server.url + '/v2/models/invad/versions/1').then((r) => r.json())).toEqual(model);
  });

  test('POST /v1/score gives the same fields and score as Detector.score on the same image, and the map with ?map=1', async () => {
    const png = await pngOf(randomRaw(40, 30, 3, 5));
    const want = await det.score(png);
    const r = await fetch(server.url + '/v1/score', { method: 'POST', body: png, headers: { 'content-type': 'image/png' } });
    expect(r.status).toBe(200);
    const got = await r.json();
    expect(Object.keys(got)).toEqual(['score', 'isAnomalous', 'threshold', 'components', 'steps', 'width', 'height', 'timings']);
    expect(got).toMatchObject({
      score: want.score,
      isAnomalous: want.isAnomalous,
      threshold: want.threshold,
      components: want.components,
      steps: want.steps,
      width: 40,
      height: 30,
    });
    // No content type at all: the bytes decide.
    const withMap = await (await fetch(server.url + '/v1/score?map=1', { method: 'POST', body: png })).json();
    expect(withMap.score).toBe(want.score);
    expect(withMap.map.width * withMap.map.height).toBe(40 * 30);
    expect(Float32Array.from(withMap.map.data)).toEqual(want.map);
  });

  test('JSON infer: the outputs of Detector.score on the same frames, as float32', async () => {
    const { data, each } = frames(2, 11);
    const want = await Promise.all(each.map((f) => det.score(f)));
    const body = encodeInferenceRequest(
      { id: 'req-1', inputs: [{ name: 'image', datatype: 'UINT8', shape: [2, SIDE, SIDE, 3], data }] },
      { binaryData: false },
    );
    expect(body.headers['Inference-Header-Content-Length']).toBeUndefined();
    const { status, response, headers } = await infer(server.url, body.body, body.headers);
    expect(status).toBe(200);
    expect(headers.get('content-type')).toMatch(/^application\/json/);
    expect(response).toMatchObject({ modelName: 'invad', modelVersion: '1', id: 'req-1' });
    const out = Object.fromEntries(response!.outputs.map((t) => [t.name, t]));
    expect(out.score.shape).toEqual([2]);
    expect(Array.from(out.score.data as Float32Array)).toEqual(want.map((r) => Math.fround(r.score)));
    expect(Array.from(out.is_anomalous.data as Uint8Array)).toEqual(want.map((r) => (r.isAnomalous ? 1 : 0)));
    expect(Array.from(out.spatial_range.data as Float32Array)).toEqual(want.map((r) => Math.fround(r.components.spatialRange)));
    expect(Array.from(out.nll.data as Float32Array)).toEqual(want.map((r) => Math.fround(r.components.nll)));
    expect(out.map.shape).toEqual([2, GRID, GRID]);
    expect((out.map.data as Float32Array).subarray(GRID * GRID)).toEqual(want[1].featureMaps.l2);
  });

  test('binary infer (Inference-Header-Content-Length): binary outputs, chosen outputs in the asked order, the versioned route', async () => {
    const { data, each } = frames(3, 21);
    const want = await Promise.all(each.map((f) => det.score(f)));
    const all = encodeInferenceRequest({
      inputs: [{ name: 'image', datatype: 'UINT8', shape: [3, SIDE, SIDE, 3], data }],
      parameters: { binary_data_output: true },
    });
    expect(all.headers['Inference-Header-Content-Length']).toBeDefined();
    const a = await infer(server.url, all.body, all.headers);
    expect(a.status).toBe(200);
    expect(a.headers.get('inference-header-content-length')).toMatch(/^\d+$/);
    expect(Array.from(a.response!.outputs[0].data as Float32Array)).toEqual(want.map((r) => Math.fround(r.score)));

    // Two outputs, one binary and one JSON, in the request's order.
    const some = encodeInferenceRequest({
      inputs: [{ name: 'image', datatype: 'UINT8', shape: [3, SIDE, SIDE, 3], data }],
      outputs: [{ name: 'map', parameters: { binary_data: true } }, { name: 'is_anomalous' }],
    });
    const r = await fetch(server.url + '/v2/models/invad/versions/1/infer', { method: 'POST', body: some.body, headers: some.headers });
    const bytes = Buffer.from(await r.arrayBuffer());
    const headerLength = Number(r.headers.get('inference-header-content-length'));
    const head = JSON.parse(bytes.subarray(0, headerLength).toString('utf8'));
    expect(head.outputs.map((o: { name: string }) => o.name)).toEqual(['map', 'is_anomalous']);
    expect(head.outputs[0].parameters).toEqual({ binary_data_size: 3 * GRID * GRID * 4 });
    expect(head.outputs[1].data).toEqual(want.map((w) => w.isAnomalous));
    const decoded = decodeInferenceResponse(bytes, String(headerLength));
    expect((decoded.outputs[0].data as Float32Array).subarray(0, GRID * GRID)).toEqual(want[0].featureMaps.l2);
  });

  test('bad input is 400 with the InvadError code; unknown routes and models are 404', async () => {
    const post = (path: string, body: string | Buffer, headers: Record<string, string> = {}) =>
      fetch(server.url + path, { method: 'POST', body, headers }).then(errorOf);
    expect(await post('/v1/score', Buffer.from('not an image'))).toMatchObject({ status: 400, code: 'ERR_INVAD_INVALID_INPUT' });
    expect(await post('/v1/score', Buffer.alloc(0))).toMatchObject({ status: 400, code: 'ERR_INVAD_BAD_REQUEST' });

    const tensor = (datatype: string, shape: number[], data: number[]) => JSON.stringify({ inputs: [{ name: 'image', datatype, shape, data }] });
    const zeros = (n: number) => new Array<number>(n).fill(0);
    const wrongType = await post(INFER, tensor('FP32', [1, SIDE, SIDE, 3], zeros(SIDE * SIDE * 3)));
    expect(wrongType).toMatchObject({ status: 400, code: 'ERR_INVAD_INVALID_INPUT' });
    expect(wrongType.error).toMatch(/datatype is FP32, expected UINT8/);
    const wrongShape = await post(INFER, tensor('UINT8', [1, SIDE, SIDE + 1, 3], zeros(SIDE * (SIDE + 1) * 3)));
    expect(wrongShape).toMatchObject({ status: 400, code: 'ERR_INVAD_INVALID_INPUT' });
    expect(wrongShape.error).toMatch(/shape is \[1, 32, 33, 3\]/);
    expect(await post(INFER, tensor('UINT8', [1, SIDE, SIDE, 3], zeros(5)))).toMatchObject({ status: 400, code: 'ERR_INVAD_INVALID_INPUT' });
    expect(await post(INFER, tensor('UINT8', [0, SIDE, SIDE, 3], []))).toMatchObject({ status: 400, code: 'ERR_INVAD_INVALID_INPUT' });
    expect(await post(INFER, tensor('UINT8', [1, SIDE, SIDE, 3], [256, ...zeros(SIDE * SIDE * 3 - 1)]))).toMatchObject({
      status: 400,
      code: 'ERR_INVAD_INVALID_INPUT',
    });
    expect(await post(INFER, '{"inputs": [')).toMatchObject({ status: 400, code: 'ERR_INVAD_INVALID_INPUT' });
    const twoInputs = JSON.stringify({ inputs: [0, 1].map((i) => ({ name: `image${i}`, datatype: 'UINT8', shape: [1], data: [0] })) });
    expect(await post(INFER, twoInputs)).toMatchObject({ status: 400, code: 'ERR_INVAD_INVALID_INPUT' });
    const { data } = frames(1);
    const unknownOutput = encodeInferenceRequest({
      inputs: [{ name: 'image', datatype: 'UINT8', shape: [1, SIDE, SIDE, 3], data }],
      outputs: [{ name: 'heatmap' }],
    });
    expect(await post(INFER, unknownOutput.body, unknownOutput.headers)).toMatchObject({ status: 400, code: 'ERR_INVAD_INVALID_INPUT' });
    const truncated = encodeInferenceRequest({ inputs: [{ name: 'image', datatype: 'UINT8', shape: [1, SIDE, SIDE, 3], data }] });
    const cut = await post(INFER, truncated.body.subarray(0, truncated.body.length - 100), truncated.headers);
    expect(cut).toMatchObject({ status: 400, code: 'ERR_INVAD_INVALID_INPUT' });
    expect(cut.error).toMatch(/truncated/);
    expect(await post(INFER, truncated.body, { ...truncated.headers, 'Inference-Header-Content-Length': 'ten' })).toMatchObject({
      status: 400,
      code: 'ERR_INVAD_INVALID_INPUT',
    });

    expect(await post('/v2/models/other/infer', truncated.body, truncated.headers)).toMatchObject({ status: 404, code: 'ERR_INVAD_NOT_FOUND' });
    expect(await fetch(server.url + '/v2/models/invad/versions/2').then(errorOf)).toMatchObject({ status: 404, code: 'ERR_INVAD_NOT_FOUND' });
    expect(await fetch(server.url + '/v3/anything').then(errorOf)).toMatchObject({ status: 404, code: 'ERR_INVAD_NOT_FOUND' });
    // The server is unharmed: the same frame scores as before.
    const again = await infer(server.url, truncated.body, truncated.headers);
    expect(Array.from(again.response!.outputs[0].data as Float32Array)).toEqual([Math.fround((await det.score(frames(1).each[0])).score)]);
  });

  test('GET /metrics: Prometheus text with requests, errors by code, queue depth, batch sizes and stage latencies', async () => {
    await fetch(server.url + '/v1/score', { method: 'POST', body: Buffer.from('junk') });
    const r = await fetch(server.url + '/metrics');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await r.text();
    expect(text).toMatch(/^invad_http_requests_total\{route="\/v1\/score",method="POST",status="200"\} [1-9]\d*$/m);
    expect(text).toMatch(/^invad_http_requests_total\{route="\/v2\/models\/:model\/infer",method="POST",status="400"\} [1-9]\d*$/m);
    expect(text).toMatch(/^invad_errors_total\{code="ERR_INVAD_INVALID_INPUT"\} [1-9]\d*$/m);
    expect(text).toMatch(/^invad_queue_depth 0$/m);
    expect(text).toMatch(/^invad_queue_limit 64$/m);
    expect(text).toMatch(/^invad_batch_size_count [1-9]\d*$/m);
    for (const stage of ['decode', 'preprocess', 'queue', 'backbone', 'unet', 'kernel', 'resize', 'total']) {
      expect(text).toMatch(new RegExp(`^invad_stage_duration_seconds_count\\{stage="${stage}"\\} [1-9]\\d*$`, 'm'));
    }
    expect(text).toMatch(/^invad_http_request_duration_seconds_bucket\{le="0\.005",route="\/v2\/health\/live",status="200"\} \d+$/m);
    expect(text).toMatch(/^process_resident_memory_bytes \d+/m);
  });
});

test('413 for a body over the limit, on both scoring routes', async () => {
  const server = await startServer({ model: bundle, port: 0, bodyLimit: 4096 });
  try {
    for (const path of ['/v1/score', INFER]) {
      const r = await fetch(server.url + path, { method: 'POST', body: Buffer.alloc(5000), headers: { 'content-type': 'application/octet-stream' } });
      expect(await errorOf(r)).toMatchObject({ status: 413, code: 'ERR_INVAD_BODY_TOO_LARGE' });
    }
  } finally {
    await server.close();
  }
});

test('--api-key: required on every route but health, as Bearer or X-API-Key; a wrong or missing key is 401', async () => {
  const server = await startServer({ model: bundle, port: 0, apiKey: 's3cret-key' });
  try {
    const get = (path: string, headers: Record<string, string> = {}) => fetch(server.url + path, { headers });
    expect((await get('/v2/health/live')).status).toBe(200);
    expect((await get('/v2/health/ready')).status).toBe(200);
    for (const path of ['/v2', '/v2/models/invad', '/v2/models/invad/ready', '/metrics']) {
      expect(await get(path).then(errorOf)).toMatchObject({ status: 401, code: 'ERR_INVAD_UNAUTHORIZED' });
      expect((await get(path, { authorization: 'Bearer s3cret-key' })).status).toBe(200);
      expect((await get(path, { 'x-api-key': 's3cret-key' })).status).toBe(200);
    }
    for (const wrong of ['s3cret-kex', 'S3CRET-KEY', 's3cret', 's3cret-key-and-more', '']) {
      expect((await get('/v2', { authorization: `Bearer ${wrong}` })).status).toBe(401);
      expect((await get('/v2', { 'x-api-key': wrong })).status).toBe(401);
    }
    const png = await pngOf(randomRaw(8, 8, 3, 1));
    expect((await fetch(server.url + '/v1/score', { method: 'POST', body: png })).status).toBe(401);
    expect((await fetch(server.url + '/v1/score', { method: 'POST', body: png, headers: { 'x-api-key': 's3cret-key' } })).status).toBe(200);
  } finally {
    await server.close();
  }
});

test('ready only once the Detector is loaded: live 200, ready 400, scoring 503 while it loads', async () => {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let url = '';
  let listening!: () => void;
  const up = new Promise<void>((resolve) => (listening = resolve));
  const starting = startServer({
    model: bundle,
    port: 0,
    onListening: (u) => {
      url = u;
      listening();
    },
    loadDetector: async (model, options) => {
      await gate;
      return Detector.load(model, options);
    },
  });
  await up;
  expect((await fetch(url + '/v2/health/live')).status).toBe(200);
  expect(await fetch(url + '/v2/health/ready').then(errorOf)).toMatchObject({ status: 400, code: 'ERR_INVAD_NOT_READY' });
  expect((await fetch(url + '/v2/models/invad/ready')).status).toBe(400);
  const early = await fetch(url + '/v1/score', { method: 'POST', body: await pngOf(randomRaw(8, 8, 3, 1)) });
  expect(early.headers.get('retry-after')).toBe('1');
  expect(await errorOf(early)).toMatchObject({ status: 503, code: 'ERR_INVAD_NOT_READY' });
  release();
  const server = await starting;
  try {
    expect((await fetch(url + '/v2/health/ready')).status).toBe(200);
  } finally {
    await server.close();
  }
});

test('close(): a request whose body is still arriving is finished; one that arrives after is refused', async () => {
  const server = await startServer({ model: bundle, port: 0 });
  const png = await pngOf(randomRaw(24, 24, 3, 4));
  const { port } = new URL(server.url);
  const socket = connect(Number(port), '127.0.0.1');
  let answer = '';
  socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
  const ended = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  socket.write(`POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: ${png.length}\r\n\r\n`);
  socket.write(png.subarray(0, 100));
  await new Promise((r) => setTimeout(r, 200)); // the headers are parsed: accepted
  const closing = server.close();
  await new Promise((r) => setTimeout(r, 50));
  const late = await fetch(server.url + '/v1/score', { method: 'POST', body: png }).then(
    (r) => r.status,
    () => 'refused',
  );
  expect([503, 'refused']).toContain(late);
  socket.write(png.subarray(100)); // not end(): a half-closed request is abandoned by Node's server
  await ended;
  expect(answer).toMatch(/^HTTP\/1\.1 200 /);
  expect(answer).toMatch(/\r\nconnection: close\r\n/i);
  await closing;
  const det = await Detector.load(bundle);
  try {
    expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)).score).toBe((await det.score(png)).score);
  } finally {
    await det.dispose();
  }
});

describe('a slow model (UNet >= 300 ms per image)', () => {
  test('a full queue answers 503 with Retry-After at once; a batch larger than the queue is 400', async () => {
    const server = await startServer({ model: slowBundle, port: 0, maxQueue: 2, retryAfterS: 2 });
    try {
      const { data } = frames(2);
      const body = encodeInferenceRequest({ inputs: [{ name: 'image', datatype: 'UINT8', shape: [2, SIDE, SIDE, 3], data }] });
      const first = infer(server.url, body.body, body.headers);
      // Wait until the first request holds both slots.
      for (let i = 0; i < 200 && !/^invad_queue_depth 2$/m.test(await (await fetch(server.url + '/metrics')).text()); i++)
        await new Promise((r) => setTimeout(r, 10));
      const t0 = performance.now();
      const turned = await fetch(server.url + '/v1/score', { method: 'POST', body: await pngOf(randomRaw(8, 8, 3, 1)) });
      const ms = performance.now() - t0;
      expect(turned.headers.get('retry-after')).toBe('2');
      expect(await errorOf(turned)).toMatchObject({ status: 503, code: 'ERR_INVAD_OVERLOADED' });
      expect(ms).toBeLessThan(250); // not queued behind the 600 ms of work
      expect((await first).status).toBe(200);

      const big = encodeInferenceRequest({ inputs: [{ name: 'image', datatype: 'UINT8', shape: [3, SIDE, SIDE, 3], data: frames(3).data }] });
      const tooMany = await infer(server.url, big.body, big.headers);
      expect(tooMany.status).toBe(400);
      expect(tooMany.json).toMatchObject({ code: 'ERR_INVAD_INVALID_INPUT' });
    } finally {
      await server.close();
    }
  });

  test("concurrent requests share the Detector's micro-batches", async () => {
    const server = await startServer({ model: slowBundle, port: 0 });
    try {
      const png = await pngOf(randomRaw(16, 16, 3, 3));
      const answers = await Promise.all(Array.from({ length: 4 }, () => fetch(server.url + '/v1/score', { method: 'POST', body: png }).then((r) => r.json())));
      const sizes = answers.map((a: { timings: { batchSize: number } }) => a.timings.batchSize);
      // The first runs alone; the rest arrive while it runs and form one batch.
      expect(Math.max(...sizes)).toBeGreaterThan(1);
      expect(new Set(answers.map((a: { score: number }) => a.score)).size).toBe(1);
    } finally {
      await server.close();
    }
  });
});

describe('the CLI', () => {
  const cli = join(packageRoot(), 'dist', 'src', 'tools', 'cli', 'main.js');
  let child: ChildProcess | undefined;
  afterEach(() => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
  });

  /** Starts `invad serve`, resolving with its URL once it says it is ready. */
  function serve(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ url: string; stderr: () => string; exited: Promise<number | null> }> {
    if (!existsSync(cli)) throw new Error(`${cli} missing: npm test compiles it first (npm run compile)`);
    const proc = spawn(process.execPath, [cli, 'serve', '--port', '0', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    child = proc;
    let err = '';
    const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
    return new Promise((resolve, reject) => {
      proc.stderr.on('data', (chunk: Buffer) => {
        err += chunk.toString('utf8');
        const m = /ready: model "invad" on (http:\/\/\S+)/.exec(err);
        if (m) resolve({ url: m[1], stderr: () => err, exited });
      });
      void exited.then((code) => reject(new Error(`invad serve exited with ${code} before it was ready:\n${err}`)));
    });
  }

  test('SIGTERM: stops accepting, finishes the accepted request, then exits 0', async () => {
    const { url, stderr, exited } = await serve(['--model', slowBundle]);
    const png = await pngOf(randomRaw(16, 16, 3, 9));
    const accepted = fetch(url + '/v1/score', { method: 'POST', body: png }).then(async (r) => ({ status: r.status, body: await r.json() }));
    for (let i = 0; i < 200 && !/^invad_queue_depth 1$/m.test(await (await fetch(url + '/metrics')).text()); i++) await new Promise((r) => setTimeout(r, 10));
    child!.kill('SIGTERM');
    for (let i = 0; i < 200 && !stderr().includes('no longer accepting'); i++) await new Promise((r) => setTimeout(r, 10));
    // A request after SIGTERM is never scored: refused, or 503 on a connection that was open.
    const late = await fetch(url + '/v1/score', { method: 'POST', body: png }).then(
      (r) => r.status,
      () => 'refused',
    );
    expect([503, 'refused']).toContain(late);
    const done = await accepted;
    expect(done.status).toBe(200);
    expect(typeof done.body.score).toBe('number');
    expect(await exited).toBe(0);
    expect(stderr()).toMatch(/SIGTERM: no longer accepting[\s\S]*stopped/);
  });

  test('$INVAD_API_KEY sets the key; without --host it listens on 127.0.0.1', async () => {
    const { url, exited } = await serve(['--model', bundle], { INVAD_API_KEY: 'from-env' });
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:/);
    expect((await fetch(url + '/v2')).status).toBe(401);
    expect((await fetch(url + '/v2', { headers: { authorization: 'Bearer from-env' } })).status).toBe(200);
    child!.kill('SIGINT');
    expect(await exited).toBe(0);
  });
});
