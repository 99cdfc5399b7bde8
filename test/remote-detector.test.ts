/**
 * RemoteDetector against a stand-in KServe v2 server written here with node:http (fixed
 * answers, for the request it sends and the error mapping), and against `invad serve` for
 * parity with Detector.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import sharp from 'sharp';
import { Detector } from '../src/runtime/detector';
import { RemoteDetector } from '../src/runtime/remote/remote-detector';
import {
  INFERENCE_HEADER_CONTENT_LENGTH,
  binaryOutputChoice,
  decodeInferenceRequest,
  encodeInferenceResponse,
  type InferenceRequest,
  type Tensor,
} from '../src/runtime/remote/kserve-codec';
import { SCORES } from '../src/runtime/scores';
import { DisposedError, InferenceError, InvalidArgumentError, InvalidInputError, RemoteError } from '../src/util/errors';
import { tempDir, writeTinyBundle } from './helpers/bundles';
import { pngOf, randomRaw } from './helpers/images';

// ---------------------------------------------------------------------------------------------
// The stand-in server: model "invad", input uint8 [-1, 8, 8, 3], a 2 x 2 feature grid.

const H = 8;
const W = 8;
const GRID = 2;

const METADATA = {
  name: 'invad',
  versions: ['1'],
  platform: 'invad',
  inputs: [{ name: 'image', datatype: 'UINT8', shape: [-1, H, W, 3] }],
  outputs: [
    { name: 'score', datatype: 'FP32', shape: [-1] },
    { name: 'is_anomalous', datatype: 'BOOL', shape: [-1] },
    { name: 'map', datatype: 'FP32', shape: [-1, GRID, GRID] },
    { name: 'spatial_range', datatype: 'FP32', shape: [-1] },
    { name: 'nll', datatype: 'FP32', shape: [-1] },
  ],
  parameters: { steps: 3, score_definition: 'combined', calibrated: true, threshold: 0.5, pixel_threshold: 0.25, max_batch_size: 8 },
};

/**
 * Outputs computed from the pixels, so a test can tell which image a result belongs to:
 * map = mean of each 4 x 4 quadrant / 255, score = mean of the image / 255, flagged above 0.5,
 * spatial_range = max - min of the map, nll = the image's first byte.
 */
function outputsFor(image: Tensor, perImageShape: (n: number) => number[] = (n) => [n]): Tensor[] {
  const [n] = image.shape;
  const px = image.data as Uint8Array;
  const per = H * W * 3;
  const score = new Float32Array(n);
  const map = new Float32Array(n * GRID * GRID);
  const sp = new Float32Array(n);
  const nll = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let sum = 0;
    for (let k = 0; k < per; k++) sum += px[i * per + k];
    score[i] = sum / per / 255;
    for (let gy = 0; gy < GRID; gy++) {
      for (let gx = 0; gx < GRID; gx++) {
        let s = 0;
        for (let y = gy * 4; y < gy * 4 + 4; y++) for (let x = gx * 4; x < gx * 4 + 4; x++) for (let c = 0; c < 3; c++) s += px[i * per + (y * W + x) * 3 + c];
        map[i * 4 + gy * GRID + gx] = s / 48 / 255;
      }
    }
    const cells = map.subarray(i * 4, i * 4 + 4);
    sp[i] = Math.max(...cells) - Math.min(...cells);
    nll[i] = px[i * per];
  }
  const flags = Uint8Array.from(score, (s) => (s > 0.5 ? 1 : 0));
  return [
    { name: 'score', datatype: 'FP32', shape: perImageShape(n), data: score },
    { name: 'is_anomalous', datatype: 'BOOL', shape: perImageShape(n), data: flags },
    { name: 'map', datatype: 'FP32', shape: [n, GRID, GRID], data: map },
    { name: 'spatial_range', datatype: 'FP32', shape: perImageShape(n), data: sp },
    { name: 'nll', datatype: 'FP32', shape: perImageShape(n), data: nll },
  ];
}

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  request?: InferenceRequest;
}

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer) => void;

let server: http.Server;
let base: string;
let seen: Seen[] = [];
let metadata: Record<string, unknown> = METADATA;
let inferHandler: Handler;

function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
}

/** The normal infer answer: outputs from the pixels, binary as the request asks. */
const answerFromPixels =
  (perImageShape?: (n: number) => number[]): Handler =>
  (req, res, body) => {
    const request = decodeInferenceRequest(body, req.headers[INFERENCE_HEADER_CONTENT_LENGTH.toLowerCase()]);
    seen[seen.length - 1].request = request;
    const encoded = encodeInferenceResponse(
      { modelName: 'invad', modelVersion: '1', outputs: outputsFor(request.inputs[0], perImageShape) },
      { binaryData: binaryOutputChoice(request) },
    );
    res.writeHead(200, encoded.headers).end(encoded.body);
  };

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
      const body = Buffer.concat(chunks);
      if (req.method === 'GET' && req.url === '/v2/models/invad') return sendJson(res, 200, metadata);
      if (req.method === 'POST' && req.url === '/v2/models/invad/infer') return inferHandler(req, res, body);
      sendJson(res, 404, { error: `no route ${req.method} ${req.url}`, code: 'ERR_INVAD_NOT_FOUND' });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

beforeEach(() => {
  seen = [];
  metadata = METADATA;
  inferHandler = answerFromPixels();
});

afterEach(() => {
  // Stalled answers of the timeout tests must not outlive their test.
  server.closeAllConnections();
});

/** An H x W RGB image of one gray level. */
const flat = (level: number) => ({ data: new Uint8Array(H * W * 3).fill(level), width: W, height: H, channels: 3 as const });

async function remoteError(p: Promise<unknown>): Promise<RemoteError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RemoteError);
  return err as RemoteError;
}

// ---------------------------------------------------------------------------------------------

describe('connect and score against the stand-in v2 server', () => {
  test('connect reads the model metadata: input size, feature grid, and how the server scores', async () => {
    const remote = await RemoteDetector.connect(base, { apiKey: 'secret' });
    const info = remote.info();
    expect(info).toMatchObject({
      url: `${base}/v2/models/invad`,
      model: 'invad',
      platform: 'invad',
      inputSize: { width: W, height: H },
      featureShape: { height: GRID, width: GRID },
      steps: 3,
      scoreDefinition: 'combined',
      calibrated: true,
      threshold: 0.5,
      pixelThreshold: 0.25,
      maxBatchSize: 8,
      hasLatentGaussian: false,
      preprocessing: { alpha: 'drop', resizeKernel: 'linear', source: 'default' },
    });
    expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual(['GET /v2/models/invad']);
    expect(seen[0].headers.authorization).toBe('Bearer secret');
    await remote.dispose();
  });

  test('score sends one uint8 [1, H, W, 3] tensor as binary data and asks for every output as binary', async () => {
    const remote = await RemoteDetector.connect(base, { apiKey: 'secret', headers: { 'x-line': '7' } });
    const image = randomRaw(W, H, 3, 1);
    const r = await remote.score(image);
    const infer = seen[1];
    expect(infer.headers.authorization).toBe('Bearer secret');
    expect(infer.headers['x-line']).toBe('7');
    expect(infer.headers['content-type']).toBe('application/octet-stream');
    expect(Number(infer.headers[INFERENCE_HEADER_CONTENT_LENGTH.toLowerCase()])).toBeGreaterThan(0);
    const req = infer.request!;
    expect(req.inputs).toHaveLength(1);
    expect(req.inputs[0]).toMatchObject({ name: 'image', datatype: 'UINT8', shape: [1, H, W, 3] });
    // An image at the input size is sent as is: the exact pixels.
    expect(Buffer.from(req.inputs[0].data as Uint8Array).equals(Buffer.from(image.data))).toBe(true);
    expect(req.outputs?.map((o) => [o.name, o.parameters?.binary_data])).toEqual([
      ['score', true],
      ['is_anomalous', true],
      ['map', true],
      ['spatial_range', true],
      ['nll', true],
    ]);

    const [expected] = [outputsFor(req.inputs[0])];
    expect(r.score).toBeCloseTo((expected[0].data as Float32Array)[0], 6);
    expect(r.isAnomalous).toBe((expected[1].data as Uint8Array)[0] === 1);
    expect(r.threshold).toBe(0.5);
    expect(r.width).toBe(GRID);
    expect(r.height).toBe(GRID);
    expect(Array.from(r.map)).toEqual(Array.from(expected[2].data));
    // The served map is the score definition's map, and appears under its name.
    expect(r.featureMaps).toEqual({ [SCORES.combined.map]: r.map });
    expect(r.components).toEqual({ spatialRange: (expected[3].data as Float32Array)[0], nll: image.data[0] });
    expect(r.steps).toBe(3);
    expect(r.timings.batchSize).toBe(1);
    expect(r.timings.totalMs).toBeGreaterThanOrEqual(r.timings.requestMs);
    await remote.dispose();
  });

  test('the sent pixels are Detector preprocessing: alpha mode and resize kernel from the server', async () => {
    metadata = { ...METADATA, parameters: { ...METADATA.parameters, alpha: 'flatten-white', resize_kernel: 'nearest' } };
    const remote = await RemoteDetector.connect(base);
    expect(remote.info().preprocessing).toEqual({ alpha: 'flatten-white', resizeKernel: 'nearest', source: 'server' });
    const rgba = randomRaw(21, 13, 4, 3);
    await remote.score(await pngOf(rgba));
    // The same steps written out with sharp: flatten on white, resize (fill) with the nearest kernel.
    const expected = await sharp(rgba.data, { raw: { width: 21, height: 13, channels: 4 } })
      .flatten({ background: { r: 255, g: 255, b: 255 } })
      .toColourspace('srgb')
      .raw()
      .toBuffer()
      .then((rgb) =>
        sharp(rgb, { raw: { width: 21, height: 13, channels: 3 } })
          .resize(W, H, { fit: 'fill', kernel: 'nearest' })
          .raw()
          .toBuffer(),
      );
    expect(Buffer.from(seen[1].request!.inputs[0].data as Uint8Array).equals(expected)).toBe(true);
    // The caller's options win over the server's.
    const mine = await RemoteDetector.connect(base, { input: { alpha: 'drop', resizeKernel: 'cubic' } });
    expect(mine.info().preprocessing).toEqual({ alpha: 'drop', resizeKernel: 'cubic', source: 'options' });
  });

  test('scoreBatch: batchSize images per request, results in input order, a bad image fails alone', async () => {
    const remote = await RemoteDetector.connect(base);
    const images = [10, 200, 30, 250, 90].map(flat);
    const results = await remote.scoreBatch(images, { batchSize: 2 });
    expect(seen.filter((s) => s.method === 'POST').map((s) => s.request!.inputs[0].shape[0])).toEqual([2, 2, 1]);
    expect(results.map((r) => Math.round(r.score * 255))).toEqual([10, 200, 30, 250, 90]);
    expect(results.map((r) => r.isAnomalous)).toEqual([false, true, false, true, false]);
    expect(results.map((r) => r.timings.batchSize)).toEqual([2, 2, 2, 2, 1]);

    seen = [];
    const mixed = [flat(10), Buffer.from('not an image'), flat(250)];
    const collected = await remote.scoreBatch(mixed, { errors: 'collect' });
    expect(collected[1]).toBeInstanceOf(InvalidInputError);
    expect((collected[1] as InvalidInputError).input).toBe('input[1]');
    expect((collected[0] as { score: number }).score * 255).toBeCloseTo(10, 3);
    expect((collected[2] as { score: number }).score * 255).toBeCloseTo(250, 3);
    // The two good images went in one request.
    expect(seen.filter((s) => s.method === 'POST').map((s) => s.request!.inputs[0].shape[0])).toEqual([2]);
    await expect(remote.scoreBatch(mixed)).rejects.toBeInstanceOf(InvalidInputError);
    expect(await remote.scoreBatch([])).toEqual([]);
  });

  test('a Triton-style server: no parameters in the metadata, the config route has them, [N, 1] per-image outputs', async () => {
    metadata = {
      ...METADATA,
      platform: 'onnxruntime_onnx',
      parameters: undefined,
      outputs: METADATA.outputs.map((o) => (o.shape.length === 1 ? { ...o, shape: [-1, 1] } : o)),
    };
    inferHandler = answerFromPixels((n) => [n, 1]);
    const config = {
      max_batch_size: 2,
      parameters: { steps: { string_value: '5' }, score_definition: { string_value: 'sp' }, threshold: { string_value: '0.75' } },
    };
    const configServer = http.createServer((req, res) => {
      // The config route is Triton's; everything else goes to the stand-in.
      if (req.url === '/v2/models/invad/config') return sendJson(res, 200, config);
      server.emit('request', req, res);
    });
    await new Promise<void>((resolve) => configServer.listen(0, '127.0.0.1', resolve));
    try {
      const remote = await RemoteDetector.connect(`http://127.0.0.1:${(configServer.address() as AddressInfo).port}`);
      expect(remote.info()).toMatchObject({
        platform: 'onnxruntime_onnx',
        steps: 5,
        scoreDefinition: 'sp',
        threshold: 0.75,
        maxBatchSize: 2,
        calibrated: null,
      });
      const results = await remote.scoreBatch([flat(40), flat(140), flat(240)]);
      expect(results.map((r) => Math.round(r.score * 255))).toEqual([40, 140, 240]);
      expect(results.map((r) => r.timings.batchSize)).toEqual([2, 2, 1]);
      expect(results[0].featureMaps).toEqual({ l2: results[0].map });
    } finally {
      configServer.closeAllConnections();
      await new Promise((resolve) => configServer.close(resolve));
    }
  });

  test('a kept-alive connection the server has just closed is replaced, not reported as a failure', async () => {
    const remote = await RemoteDetector.connect(base);
    await remote.score(flat(1));
    // The connection is closed under the client, as a server's keep-alive timeout does, and
    // the next request goes out at once: it is first tried on that connection.
    server.closeAllConnections();
    await new Promise((resolve) => setImmediate(resolve));
    const again = await RemoteDetector.connect(base);
    await again.score(flat(2));
    server.closeAllConnections();
    await new Promise((resolve) => setImmediate(resolve));
    expect(Math.round((await again.score(flat(77))).score * 255)).toBe(77);
    expect(seen.filter((s) => s.method === 'POST')).toHaveLength(3);
  });

  test('a URL with a path prefix (a gateway) keeps it', async () => {
    const remote = RemoteDetector.connect(`${base}/gateway/`);
    // The stand-in serves at the root, so the prefixed route is a 404: what matters is the path asked for.
    const err = await remoteError(remote);
    expect(err.url).toBe(`${base}/gateway/v2/models/invad`);
    expect(err.code).toBe('ERR_INVAD_REMOTE_REJECTED');
    expect(err.status).toBe(404);
  });

  test('dispose waits for calls in flight, then refuses new ones with DisposedError', async () => {
    const remote = await RemoteDetector.connect(base);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const normal = answerFromPixels();
    inferHandler = (req, res, body) => void gate.then(() => normal(req, res, body));
    const pending = remote.score(flat(100));
    let disposed = false;
    const disposing = remote.dispose().then(() => (disposed = true));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(disposed).toBe(false);
    release();
    expect(Math.round((await pending).score * 255)).toBe(100);
    await disposing;
    await expect(remote.score(flat(1))).rejects.toBeInstanceOf(DisposedError);
    await expect(remote.scoreBatch([flat(1)])).rejects.toBeInstanceOf(DisposedError);
  });
});

describe('failures map to typed errors with stable codes', () => {
  test('bad arguments are InvalidArgumentErrors', async () => {
    await expect(RemoteDetector.connect('not a url')).rejects.toMatchObject({ code: 'ERR_INVAD_INVALID_ARGUMENT', argument: 'url' });
    await expect(RemoteDetector.connect('ftp://host/')).rejects.toMatchObject({ argument: 'url' });
    await expect(RemoteDetector.connect(base, { timeoutMs: 0 })).rejects.toMatchObject({ argument: 'options.timeoutMs' });
    await expect(RemoteDetector.connect(base, { input: { resizeKernel: 'bilinear' as 'linear' } })).rejects.toMatchObject({
      argument: 'options.input.resizeKernel',
    });
    await expect(RemoteDetector.connect(base, { apiKey: '' })).rejects.toBeInstanceOf(InvalidArgumentError);
    const remote = await RemoteDetector.connect(base);
    await expect(remote.scoreBatch([flat(1)], { batchSize: 0 })).rejects.toMatchObject({ argument: 'options.batchSize' });
    await expect(remote.score(42 as unknown as Uint8Array)).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  test('nothing listening: ERR_INVAD_REMOTE_UNAVAILABLE, no status', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const err = await remoteError(RemoteDetector.connect(`http://127.0.0.1:${port}`));
    expect(err.code).toBe('ERR_INVAD_REMOTE_UNAVAILABLE');
    expect(err.status).toBeNull();
    expect(err.message).toMatch(/ECONNREFUSED/);
  });

  test('no answer within timeoutMs: ERR_INVAD_REMOTE_TIMEOUT, also when the answer stalls halfway', async () => {
    const remote = await RemoteDetector.connect(base, { timeoutMs: 300 });
    inferHandler = () => {}; // never answers
    const t0 = Date.now();
    const err = await remoteError(remote.score(flat(1)));
    expect(err.code).toBe('ERR_INVAD_REMOTE_TIMEOUT');
    expect(err.message).toMatch(/no complete answer within 300 ms/);
    expect(Date.now() - t0).toBeLessThan(5000);

    // Headers and part of the body, then nothing.
    inferHandler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '1000' });
      res.write('{"model_name":"invad",');
    };
    expect((await remoteError(remote.score(flat(1)))).code).toBe('ERR_INVAD_REMOTE_TIMEOUT');
  });

  test('the connection dropped mid-answer: ERR_INVAD_REMOTE_UNAVAILABLE', async () => {
    const remote = await RemoteDetector.connect(base);
    inferHandler = (_req, res) => {
      res.writeHead(200, { 'content-length': '1000' });
      res.write('{"model_name":');
      setTimeout(() => res.socket?.destroy(), 20);
    };
    expect((await remoteError(remote.score(flat(1)))).code).toBe('ERR_INVAD_REMOTE_UNAVAILABLE');
  });

  test.each([
    [
      400,
      'ERR_INVAD_REMOTE_REJECTED',
      { error: 'inputs[0] ("image"): shape is [1, 9, 9, 3], expected [-1, 8, 8, 3]', code: 'ERR_INVAD_INVALID_INPUT' },
      {},
      null,
    ],
    [413, 'ERR_INVAD_REMOTE_REJECTED', { error: 'Request body is too large', code: 'ERR_INVAD_BODY_TOO_LARGE' }, {}, null],
    [401, 'ERR_INVAD_REMOTE_UNAUTHORIZED', { error: 'missing or wrong API key', code: 'ERR_INVAD_UNAUTHORIZED' }, {}, null],
    [503, 'ERR_INVAD_REMOTE_UNAVAILABLE', { error: 'queue full', code: 'ERR_INVAD_OVERLOADED' }, { 'retry-after': '2' }, 2000],
    [429, 'ERR_INVAD_REMOTE_UNAVAILABLE', { error: 'slow down' }, {}, null],
    [502, 'ERR_INVAD_REMOTE_UNAVAILABLE', { error: 'bad gateway' }, {}, null],
    [500, 'ERR_INVAD_REMOTE_SERVER', { error: 'internal error: boom', code: 'ERR_INVAD_INTERNAL' }, {}, null],
  ])('HTTP %i -> %s', async (status, code, body, headers, retryAfterMs) => {
    const remote = await RemoteDetector.connect(base);
    inferHandler = (_req, res) => sendJson(res, status, body, headers);
    const err = await remoteError(remote.score(flat(1)));
    expect(err).toMatchObject({ code, status, retryAfterMs, remoteCode: (body as { code?: string }).code ?? null, url: `${base}/v2/models/invad/infer` });
    expect(err.message).toContain(`HTTP ${status}`);
    expect(err.message).toContain(body.error);
    if (status === 413) expect(err.message).toMatch(/send fewer images per request/);
  });

  test('Retry-After as an HTTP date; an error body that is not JSON', async () => {
    const remote = await RemoteDetector.connect(base);
    inferHandler = (_req, res) => res.writeHead(503, { 'retry-after': new Date(Date.now() + 10_000).toUTCString() }).end('Service Unavailable');
    const err = await remoteError(remote.score(flat(1)));
    expect(err.retryAfterMs).toBeGreaterThan(5000);
    expect(err.retryAfterMs).toBeLessThanOrEqual(10_000);
    expect(err.message).toMatch(/Service Unavailable/);
  });

  test('an unknown model: the metadata request is a 404 -> ERR_INVAD_REMOTE_REJECTED', async () => {
    const err = await remoteError(RemoteDetector.connect(base, { model: 'other' }));
    expect(err).toMatchObject({ code: 'ERR_INVAD_REMOTE_REJECTED', status: 404, remoteCode: 'ERR_INVAD_NOT_FOUND' });
  });

  test('metadata that is not an invad model -> ERR_INVAD_REMOTE_PROTOCOL', async () => {
    metadata = { ...METADATA, outputs: METADATA.outputs.filter((o) => o.name !== 'map') };
    expect((await remoteError(RemoteDetector.connect(base))).message).toMatch(/no output "map"/);
    metadata = { ...METADATA, inputs: [{ name: 'image', datatype: 'FP32', shape: [-1, 3, H, W] }] };
    expect((await remoteError(RemoteDetector.connect(base))).message).toMatch(/input "image" is FP32 \[-1, 3, 8, 8\]; expected UINT8 \[-1, H, W, 3\]/);
    metadata = { name: 'invad' };
    const err = await remoteError(RemoteDetector.connect(base));
    expect(err.code).toBe('ERR_INVAD_REMOTE_PROTOCOL');
    expect(err.cause).toBeInstanceOf(InvalidInputError);
  });

  test('a 200 answer that is not a valid response -> ERR_INVAD_REMOTE_PROTOCOL, with the codec error as cause', async () => {
    const remote = await RemoteDetector.connect(base);
    inferHandler = (_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<html>proxy login</html>');
    let err = await remoteError(remote.score(flat(1)));
    expect(err.code).toBe('ERR_INVAD_REMOTE_PROTOCOL');
    expect(err.cause).toBeInstanceOf(InvalidInputError);

    // A truncated binary section.
    inferHandler = (req, res, body) => {
      const request = decodeInferenceRequest(body, req.headers[INFERENCE_HEADER_CONTENT_LENGTH.toLowerCase()]);
      const encoded = encodeInferenceResponse({ modelName: 'invad', outputs: outputsFor(request.inputs[0]) }, { binaryData: true });
      res.writeHead(200, encoded.headers).end(encoded.body.subarray(0, encoded.body.length - 3));
    };
    err = await remoteError(remote.score(flat(1)));
    expect(err.code).toBe('ERR_INVAD_REMOTE_PROTOCOL');
    expect(err.message).toMatch(/truncated/);

    // Outputs of the wrong shape, or missing.
    inferHandler = (req, res, body) => {
      const request = decodeInferenceRequest(body, req.headers[INFERENCE_HEADER_CONTENT_LENGTH.toLowerCase()]);
      const outputs = outputsFor(request.inputs[0]).map((t) => (t.name === 'map' ? { ...t, shape: [1, 4] } : t));
      const encoded = encodeInferenceResponse({ modelName: 'invad', outputs }, { binaryData: true });
      res.writeHead(200, encoded.headers).end(encoded.body);
    };
    expect((await remoteError(remote.score(flat(1)))).message).toMatch(/output "map" is FP32 \[1, 4\]; expected FP32 \[1, 2, 2\]/);
    inferHandler = (req, res, body) => {
      const request = decodeInferenceRequest(body, req.headers[INFERENCE_HEADER_CONTENT_LENGTH.toLowerCase()]);
      const outputs = outputsFor(request.inputs[0]).filter((t) => t.name !== 'nll');
      const encoded = encodeInferenceResponse({ modelName: 'invad', outputs }, { binaryData: true });
      res.writeHead(200, encoded.headers).end(encoded.body);
    };
    expect((await remoteError(remote.score(flat(1)))).message).toMatch(/the answer has no output "nll"/);
  });

  test('a non-finite score is an InferenceError for that image, as in Detector', async () => {
    const remote = await RemoteDetector.connect(base);
    inferHandler = (req, res, body) => {
      const request = decodeInferenceRequest(body, req.headers[INFERENCE_HEADER_CONTENT_LENGTH.toLowerCase()]);
      const outputs = outputsFor(request.inputs[0]);
      (outputs[0].data as Float32Array)[1] = NaN;
      const encoded = encodeInferenceResponse({ modelName: 'invad', outputs }, { binaryData: true });
      res.writeHead(200, encoded.headers).end(encoded.body);
    };
    const results = await remote.scoreBatch([flat(1), flat(2), flat(3)], { errors: 'collect' });
    expect(results[1]).toBeInstanceOf(InferenceError);
    expect(results[1].message).toMatch(/input\[1\]: the server's image score is NaN/);
    expect(results[0]).not.toBeInstanceOf(Error);
  });

  test('a failed request fails every image it carried (collect), or rejects (throw)', async () => {
    const remote = await RemoteDetector.connect(base);
    inferHandler = (_req, res) => sendJson(res, 500, { error: 'boom' });
    const results = await remote.scoreBatch([flat(1), flat(2), flat(3)], { batchSize: 2, errors: 'collect' });
    expect(results.map((r) => (r as RemoteError).code)).toEqual(Array(3).fill('ERR_INVAD_REMOTE_SERVER'));
    expect(seen.filter((s) => s.method === 'POST')).toHaveLength(2);
    await expect(remote.scoreBatch([flat(1)])).rejects.toMatchObject({ code: 'ERR_INVAD_REMOTE_SERVER' });
  });
});

// ---------------------------------------------------------------------------------------------
// Parity with Detector through `invad serve` (src/deploy/serve, another part of issue 15).

const SERVE_DIR = path.join(__dirname, '..', 'src', 'deploy', 'serve');
const hasServe = fs.existsSync(path.join(SERVE_DIR, 'index.ts'));
if (!hasServe) {
  console.warn(`remote-detector.test.ts: ${SERVE_DIR} is absent, so the Detector vs RemoteDetector parity test on invad serve is skipped`);
}

(hasServe ? describe : describe.skip)('Detector vs RemoteDetector on invad serve', () => {
  type ServeModule = { startServer: (o: Record<string, unknown>) => Promise<{ url: string; close(): Promise<void> }> };
  let tmp: ReturnType<typeof tempDir>;
  let detector: Detector;
  let served: { url: string; close(): Promise<void> };

  beforeAll(async () => {
    tmp = tempDir();
    const bundle = await writeTinyBundle(tmp.dir);
    const detectorOptions = { executionProviders: ['cpu'] as const, steps: 3 };
    // Loaded by path so that this file compiles while src/deploy/serve is absent.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const serve = require(SERVE_DIR) as ServeModule;
    served = await serve.startServer({ model: bundle, port: 0, apiKey: 'parity-key', detector: { ...detectorOptions, executionProviders: ['cpu'] } });
    detector = await Detector.load(bundle, { ...detectorOptions, executionProviders: ['cpu'] });
  });

  afterAll(async () => {
    await served?.close();
    await detector?.dispose();
    tmp?.cleanup();
  });

  const close = (a: number, b: number) => Math.abs(a - b) <= 1e-4 * Math.max(1, Math.abs(a), Math.abs(b));

  test('the same scores, decisions, components and feature-grid maps (1e-4), one by one and in batches', async () => {
    const remote = await RemoteDetector.connect(served.url, { apiKey: 'parity-key' });
    const info = remote.info();
    expect(info.inputSize).toEqual(detector.info().inputSize);
    expect(info.steps).toBe(detector.info().steps);
    expect(info.scoreDefinition).toBe(detector.scoreDefinition);
    const mapName = SCORES[detector.scoreDefinition].map;
    // At the input size, larger (resized here), smaller, RGBA, and encoded.
    const images = [
      randomRaw(32, 32, 3, 11),
      randomRaw(57, 41, 3, 12),
      randomRaw(20, 24, 3, 13),
      randomRaw(32, 32, 4, 14),
      await pngOf(randomRaw(48, 40, 3, 15)),
    ];
    const local = await detector.scoreBatch(images);
    const one = await Promise.all(images.map((im) => remote.score(im)));
    const batched = await remote.scoreBatch(images, { batchSize: 2 });
    for (const remoteResults of [one, batched]) {
      remoteResults.forEach((r, i) => {
        const d = local[i];
        expect(close(r.score, d.score)).toBe(true);
        expect(r.isAnomalous).toBe(d.isAnomalous);
        expect(r.threshold).toBe(d.threshold);
        expect(close(r.components.spatialRange, d.components.spatialRange)).toBe(true);
        expect(close(r.components.nll, d.components.nll)).toBe(true);
        const want = d.featureMaps[mapName]!;
        expect(r.map.length).toBe(want.length);
        const worst = r.map.reduce((m, v, k) => Math.max(m, Math.abs(v - want[k]) / Math.max(1, Math.abs(want[k]))), 0);
        expect(worst).toBeLessThanOrEqual(1e-4);
      });
    }
    await remote.dispose();
  });

  test('a wrong API key is ERR_INVAD_REMOTE_UNAUTHORIZED with the server code', async () => {
    const err = await remoteError(RemoteDetector.connect(served.url, { apiKey: 'wrong' }));
    expect(err).toMatchObject({ code: 'ERR_INVAD_REMOTE_UNAUTHORIZED', status: 401, remoteCode: 'ERR_INVAD_UNAUTHORIZED' });
  });
});
