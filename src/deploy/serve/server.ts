/**
 * `invad serve`: one Detector behind HTTP, speaking the KServe v2 inference protocol (with
 * Triton's binary tensor extension) plus a convenience route for line controllers. fastify
 * parses HTTP; this file wires the checks every request passes, in order:
 *
 * 1. the API key (every route but health), compared in constant time;
 * 2. shutting down or not loaded yet: 503;
 * 3. the bounded queue already full: 503 with Retry-After, before the body is read;
 * 4. the body limit (fastify): 413;
 * 5. the route: a bad image or tensor is 400 with the InvadError code.
 *
 * Concurrent requests all call the one Detector, so they share its micro-batches.
 */
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { Detector, type DetectorOptions, type ScoreResult } from '../../runtime/detector';
import { loadBundle } from '../../runtime/bundle/load';
import { InvadError } from '../../util/errors';
import { intInRange, invalidArgument, pathString, plainObject } from '../../util/validate';
import { Admission } from './admission';
import { apiKeyChecker } from './auth';
import type { RouteFlags, ServeContext } from './context';
import { errorAnswer, HttpError } from './http-errors';
import { ServeMetrics } from './metrics';
import { scoreRoutes } from './score-route';
import { ServedModel } from './served-model';
import { v2Routes } from './v2-routes';

/** Options of {@link startServer}. */
export interface ServeOptions {
  /** The model bundle folder. */
  model: string;
  /** How the Detector loads (providers, steps, batch size, ...). */
  detector?: DetectorOptions;
  /** Interface to bind. Default '127.0.0.1': reachable from this machine only; '0.0.0.0' for every interface. */
  host?: string;
  /** TCP port; 0 picks a free one (the returned url says which). Default 8000. */
  port?: number;
  /** When set, every route but /v2/health/* needs `Authorization: Bearer <key>` or `X-API-Key: <key>`. */
  apiKey?: string;
  /** Most images accepted and not yet answered; past it, 503 with Retry-After. Default 64. */
  maxQueue?: number;
  /** Largest request body in bytes; past it, 413. Default 32 MiB. */
  bodyLimit?: number;
  /** Retry-After of a 503, in seconds. Default 1. */
  retryAfterS?: number;
  /** Called once the port is open, before the model has loaded (health/live answers from then on). */
  onListening?: (url: string) => void;
  /** Where the server reports internal errors (500s) and engine failures. Default: nowhere. */
  log?: (line: string) => void;
  /** @internal How the Detector is loaded (tests hold it back to see the not-ready state). */
  loadDetector?: (model: string, options: DetectorOptions | undefined) => Promise<Detector>;
}

/** A running server: see {@link startServer}. */
export interface InvadServer {
  /** e.g. http://127.0.0.1:8000 */
  readonly url: string;
  /** The Detector the server scores with. */
  readonly detector: Detector;
  /**
   * Graceful stop: stops accepting connections (new requests on open ones get 503), answers
   * every request already accepted, then disposes the Detector. Idempotent.
   */
  close(): Promise<void>;
}

const DEFAULTS = { host: '127.0.0.1', port: 8000, maxQueue: 64, bodyLimit: 32 * 1024 * 1024, retryAfterS: 1 };

function resolve(raw: ServeOptions) {
  const o = plainObject('options', raw) as unknown as ServeOptions;
  pathString('options.model', o.model, 'a bundle folder path');
  if (o.apiKey !== undefined && (typeof o.apiKey !== 'string' || o.apiKey.length === 0))
    throw invalidArgument('options.apiKey', 'a non-empty string', o.apiKey);
  if (o.host !== undefined && (typeof o.host !== 'string' || o.host.length === 0)) throw invalidArgument('options.host', 'a host name or address', o.host);
  return {
    ...o,
    host: o.host ?? DEFAULTS.host,
    port: o.port === undefined ? DEFAULTS.port : intInRange('options.port', o.port, 0, 65535),
    maxQueue: o.maxQueue === undefined ? DEFAULTS.maxQueue : intInRange('options.maxQueue', o.maxQueue, 1, 1_000_000),
    bodyLimit: o.bodyLimit === undefined ? DEFAULTS.bodyLimit : intInRange('options.bodyLimit', o.bodyLimit, 1024, 2 ** 31 - 1),
    retryAfterS: o.retryAfterS === undefined ? DEFAULTS.retryAfterS : intInRange('options.retryAfterS', o.retryAfterS, 0, 3600),
  };
}

function flags(request: FastifyRequest): RouteFlags {
  return (request.routeOptions.config ?? {}) as RouteFlags;
}

function urlOf(app: FastifyInstance): string {
  const addr = app.server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return `http://${host}:${addr.port}`;
}

/**
 * Starts `invad serve` in this process: listens first (so /v2/health/live answers while the
 * model loads), then loads the Detector, and resolves once it is ready.
 * @throws InvalidArgumentError for bad options; the Detector's errors (ModelBundleError,
 *   ProviderError, ...) when the model cannot load, after the port is closed again; Node's
 *   EADDRINUSE / EACCES when the port cannot be bound
 */
export async function startServer(options: ServeOptions): Promise<InvadServer> {
  const o = resolve(options);
  const log = o.log ?? (() => {});
  const metrics = new ServeMetrics(o.maxQueue);
  const admission = new Admission(o.maxQueue, o.retryAfterS, (d) => metrics.setQueueDepth(d));
  const authorized = o.apiKey === undefined ? () => true : apiKeyChecker(o.apiKey);
  let served: ServedModel | undefined;
  let draining = false;
  let broken = false;
  const notReady = (why: string) => new HttpError(503, 'ERR_INVAD_NOT_READY', why, { 'retry-after': String(o.retryAfterS) });

  const context: ServeContext = {
    metrics,
    admission,
    model() {
      // Not refused while draining: a request accepted before close() is finished (the onRequest
      // hook turns away the ones that arrive after).
      if (!served) throw notReady('the model is still loading');
      return served;
    },
    ready: () => served !== undefined && !draining && !broken,
    live: () => !broken,
    async scoreAll(inputs) {
      const model = context.model();
      return admission.run(inputs.length, async () => {
        const settled = await Promise.allSettled(inputs.map((input) => model.score(input)));
        const results: ScoreResult[] = [];
        for (const s of settled) {
          if (s.status === 'fulfilled') {
            metrics.scored(s.value);
            results.push(s.value);
            continue;
          }
          if (s.reason instanceof InvadError && s.reason.code === 'ERR_INVAD_ENGINE_BROKEN' && !broken) {
            broken = true;
            log(`invad serve: the engine is broken, health checks now fail (restart the process): ${s.reason.message}`);
          }
          throw s.reason;
        }
        return results;
      });
    },
  };

  const app = Fastify({
    bodyLimit: o.bodyLimit,
    logger: false,
    // Our onRequest hook answers requests that arrive while closing, in our error format.
    return503OnClosing: false,
    // Leaves room for the model: a slow client cannot hold a connection open forever.
    requestTimeout: 120_000,
  });

  const started = new WeakMap<FastifyRequest, number>();
  /** Why a request is turned away as soon as its headers are in (before its body is read), or undefined. */
  const refusal = (request: FastifyRequest): HttpError | undefined => {
    const f = flags(request);
    if (f.open) return undefined;
    if (!authorized(request.headers)) {
      return new HttpError(401, 'ERR_INVAD_UNAUTHORIZED', 'missing or wrong API key (send Authorization: Bearer <key> or X-API-Key: <key>)', {
        'www-authenticate': 'Bearer',
      });
    }
    if (!f.admits) return undefined;
    if (draining) return notReady('the server is shutting down');
    if (!served) return notReady('the model is still loading');
    return admission.full ? admission.overloaded(1) : undefined;
  };
  app.addHook('onRequest', (request, _reply, done) => {
    started.set(request, performance.now());
    done(refusal(request));
  });
  // While draining, every answer closes its connection, so close() is not held up by keep-alive.
  app.addHook('onSend', async (_request, reply) => {
    if (draining) reply.header('connection', 'close');
  });
  app.addHook('onResponse', async (request, reply) => {
    const t0 = started.get(request) ?? performance.now();
    metrics.request(request.routeOptions.url ?? 'unmatched', request.method, reply.statusCode, (performance.now() - t0) / 1000);
  });
  app.setErrorHandler(async (err, _request, reply) => {
    const answer = errorAnswer(err);
    metrics.error(answer.body.code);
    if (answer.status >= 500 && answer.body.code !== 'ERR_INVAD_OVERLOADED' && answer.body.code !== 'ERR_INVAD_NOT_READY')
      log(`invad serve: ${answer.status} ${answer.body.code}: ${answer.body.error}`);
    return reply.code(answer.status).headers(answer.headers).type('application/json').send(answer.body);
  });
  app.setNotFoundHandler((request) => {
    throw new HttpError(404, 'ERR_INVAD_NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`);
  });

  app.get('/metrics', async (_request, reply) => reply.type(metrics.contentType).send(await metrics.render()));
  await app.register(v2Routes(context));
  await app.register(scoreRoutes(context));

  await app.listen({ host: o.host, port: o.port });
  const url = urlOf(app);
  o.onListening?.(url);

  let detector: Detector;
  try {
    detector = await (o.loadDetector ?? ((m, d) => Detector.load(m, d)))(o.model, o.detector);
    // The Detector has checked the bundle; this read is for the tensor spec only.
    const { manifest } = await loadBundle(o.model, { skipHashCheck: true });
    served = new ServedModel(detector, manifest);
  } catch (err) {
    await app.close();
    throw err;
  }

  let closing: Promise<void> | undefined;
  return {
    url,
    detector,
    close() {
      closing ??= (async () => {
        draining = true;
        // Stops listening, closes idle keep-alive connections, waits for accepted requests.
        await app.close();
        await detector.dispose();
      })();
      return closing;
    },
  };
}
