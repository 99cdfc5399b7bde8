/**
 * `POST /v1/score`, for line controllers that would rather not speak tensors: the body is one
 * encoded image (PNG, JPEG, WebP, TIFF, ... as sharp reads them), decoded and resized on the
 * server, and the answer has the same JSON fields as a line of `invad score`. With `?map=1` it
 * also has the anomaly map at the image's own resolution, row-major.
 */
import type { FastifyPluginCallback } from 'fastify';
import { bodyBytes, type RouteFlags, type ServeContext } from './context';
import { scoreFields, type ScoreFields } from './score-fields';

/** The answer of `POST /v1/score`. */
export interface ScoreAnswer extends ScoreFields {
  /** with ?map=1: the anomaly map, width x height values, row-major */
  map?: { width: number; height: number; data: number[] };
}

const ADMITS: { config: RouteFlags } = { config: { admits: true } };

/** True for ?map=1 / ?map=true; absent or 0 / false leaves the map out. */
function wantsMap(query: unknown): boolean {
  const v = (query as Record<string, unknown> | undefined)?.map;
  return v === '1' || v === 'true';
}

export function scoreRoutes(ctx: ServeContext): FastifyPluginCallback {
  return (app, _options, done) => {
    // Any content type: the image's own bytes decide how it decodes.
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
    app.post('/v1/score', ADMITS, async (request): Promise<ScoreAnswer> => {
      ctx.model();
      const [r] = await ctx.scoreAll([bodyBytes(request, '/v1/score')]);
      const answer: ScoreAnswer = scoreFields(r);
      if (wantsMap(request.query)) answer.map = { width: r.width, height: r.height, data: Array.from(r.map) };
      return answer;
    });
    done();
  };
}
