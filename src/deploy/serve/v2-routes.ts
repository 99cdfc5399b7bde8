/**
 * The KServe v2 REST routes ("Open Inference Protocol"): health, server and model metadata,
 * model readiness and inference, with Triton's binary tensor data extension. The model is
 * `invad`, version `1` (the version the exported Triton repository uses), so a client written
 * for this server works against Triton serving `invad export --format triton` unchanged.
 */
import type { FastifyInstance, FastifyPluginCallback, FastifyRequest } from 'fastify';
import {
  binaryOutputChoice,
  decodeInferenceRequest,
  encodeInferenceResponse,
  INFERENCE_HEADER_CONTENT_LENGTH,
  selectOutputs,
} from '../../runtime/remote/kserve-codec';
import { MODEL_NAME } from '../../runtime/remote/tensor-spec';
import { InvalidInputError } from '../../util/errors';
import { packageVersion } from '../../util/package-info';
import { bodyBytes, type RouteFlags, type ServeContext } from './context';
import { HttpError } from './http-errors';

/** The only version served; `/v2/models/invad/versions/1/...` and the unversioned routes are the same model. */
export const MODEL_VERSION = '1';

const OPEN: { config: RouteFlags } = { config: { open: true } };
const ADMITS: { config: RouteFlags } = { config: { admits: true } };
/** Node lower-cases header names. */
const HEADER_LENGTH = INFERENCE_HEADER_CONTENT_LENGTH.toLowerCase();

interface ModelParams {
  model: string;
  version?: string;
}

/** @throws HttpError 404 for another model name or version */
function checkModel(request: FastifyRequest): void {
  const { model, version } = request.params as ModelParams;
  if (model !== MODEL_NAME) throw new HttpError(404, 'ERR_INVAD_NOT_FOUND', `no model "${model}": this server serves "${MODEL_NAME}"`);
  if (version !== undefined && version !== MODEL_VERSION)
    throw new HttpError(404, 'ERR_INVAD_NOT_FOUND', `no version "${version}" of model "${MODEL_NAME}": the server has version ${MODEL_VERSION}`);
}

/** Both the plain and the versioned path of a model route. */
function modelPaths(suffix: string): string[] {
  return [`/v2/models/:model${suffix}`, `/v2/models/:model/versions/:version${suffix}`];
}

/**
 * KServe v2 health: 200 for true and, as the spec says, a 4xx status for false. The body
 * of a false answer says why.
 */
function health(app: FastifyInstance, path: string, ok: () => boolean, why: string): void {
  app.get(path, OPEN, (_request, reply) => (ok() ? reply.code(200).send() : reply.code(400).send({ error: why, code: 'ERR_INVAD_NOT_READY' })));
}

/** The v2 routes, as a fastify plugin over the server's shared context. */
export function v2Routes(ctx: ServeContext): FastifyPluginCallback {
  return (app, _options, done) => {
    health(app, '/v2/health/live', () => ctx.live(), 'the inference engine is broken; restart the server');
    health(app, '/v2/health/ready', () => ctx.ready(), 'the model is loading, the server is shutting down, or the engine is broken');

    app.get('/v2', () => ({ name: 'invad', version: packageVersion(), extensions: ['binary_tensor_data'] }));

    for (const path of modelPaths('/ready')) {
      app.get(path, (request, reply) => {
        checkModel(request);
        return ctx.ready() ? reply.code(200).send() : reply.code(400).send({ error: `model "${MODEL_NAME}" is not ready`, code: 'ERR_INVAD_NOT_READY' });
      });
    }

    for (const path of modelPaths('')) {
      app.get(path, (request) => {
        checkModel(request);
        const m = ctx.model();
        return {
          name: MODEL_NAME,
          versions: [MODEL_VERSION],
          platform: 'invad',
          inputs: m.tensors.inputs,
          outputs: m.tensors.outputs,
          parameters: m.parameters,
        };
      });
    }

    // The infer body is JSON, or JSON followed by binary tensors: take it as bytes, whatever
    // its content type, and split it here.
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));

    for (const path of modelPaths('/infer')) {
      app.post(path, ADMITS, async (request, reply) => {
        checkModel(request);
        const model = ctx.model();
        const req = decodeInferenceRequest(bodyBytes(request, 'infer'), request.headers[HEADER_LENGTH]);
        const frames = model.frames(req.inputs);
        if (frames.length > ctx.admission.limit) {
          throw new InvalidInputError(
            'inputs[0]',
            `a batch of ${frames.length} images is more than the server's queue holds (${ctx.admission.limit}); send at most ${ctx.admission.limit} per request`,
          );
        }
        // Unknown output names fail before any work is done.
        const names = selectOutputs(
          req,
          model.tensors.outputs.map((t) => t.name),
        );
        const results = await ctx.scoreAll(frames);
        const { body, headers } = encodeInferenceResponse(
          { modelName: MODEL_NAME, modelVersion: MODEL_VERSION, ...(req.id === undefined ? {} : { id: req.id }), outputs: model.outputs(results, names) },
          { binaryData: binaryOutputChoice(req) },
        );
        return reply.headers(headers).send(body);
      });
    }
    done();
  };
}
