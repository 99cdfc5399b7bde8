/** What the server's route files share, and the small helpers they all use. */
import type { FastifyRequest } from 'fastify';
import type { ScoreResult } from '../../runtime/detector';
import type { ImageInput } from '../../runtime/preprocess';
import type { Admission } from './admission';
import { HttpError } from './http-errors';
import type { ServeMetrics } from './metrics';
import type { ServedModel } from './served-model';

/** What the route files share: the loaded model, the queue, the metrics. */
export interface ServeContext {
  readonly metrics: ServeMetrics;
  readonly admission: Admission;
  /** The model, or a 503 while it loads. */
  model(): ServedModel;
  /** Ready for inference: loaded, not shutting down, engine not broken. */
  ready(): boolean;
  /** Alive: false only once the engine is broken for good (restart the process). */
  live(): boolean;
  /** Scores frames or encoded images through the bounded queue; rejects with the first failure. */
  scoreAll(inputs: readonly ImageInput[]): Promise<ScoreResult[]>;
}

/** Per-route flags, in fastify's route `config`. */
export interface RouteFlags {
  /** health routes: no API key, answered while loading and while shutting down */
  open?: boolean;
  /** scoring routes: refused at once when the queue is full */
  admits?: boolean;
}

/** A route's raw body as bytes (the routes take bodies as Buffers); 400 when there is none. */
export function bodyBytes(request: FastifyRequest, what: string): Buffer {
  const body = request.body;
  if (!Buffer.isBuffer(body) || body.length === 0) throw new HttpError(400, 'ERR_INVAD_BAD_REQUEST', `${what}: the request has no body`);
  return body;
}
