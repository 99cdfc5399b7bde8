/** `invad serve` as an API: start a KServe v2 server over a model bundle in this process. */
export { startServer, type InvadServer, type ServeOptions } from './server';
export { type ErrorBody, type ServeErrorCode } from './http-errors';
export { type ScoreAnswer } from './score-route';
export { scoreFields, type ScoreFields } from './score-fields';
export { MODEL_VERSION } from './v2-routes';
