/**
 * `invad serve`: a KServe v2 inference server over one model bundle (src/deploy/serve). Runs
 * until SIGTERM or SIGINT, then stops accepting, answers what it accepted, and exits 0.
 */
import { Command, InvalidArgumentError as CommanderArgError } from 'commander';
import type { ExecutionProvider } from '../../../runtime/engine/protocol';
import { parsePositiveInt, parseProviders } from './score';

interface ServeCommandOptions {
  model: string;
  port: number;
  host: string;
  providers: ExecutionProvider[];
  steps?: number;
  batchSize: number;
  apiKey?: string;
  maxQueue: number;
  bodyLimit: number;
}

function parsePort(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new CommanderArgError('expected a port from 0 to 65535 (0: any free port)');
  return n;
}

/** "64m", "512k", "1g" or plain bytes. */
export function parseBytes(value: string): number {
  const m = /^(\d+)\s*([kmg]?)i?b?$/i.exec(value.trim());
  if (!m) throw new CommanderArgError('expected a size in bytes, e.g. 33554432, 512k or 32m');
  const n = Number(m[1]) * 1024 ** ' kmg'.indexOf((m[2] || ' ').toLowerCase());
  if (n < 1024 || n > 2 ** 31 - 1) throw new CommanderArgError('expected a size from 1k to 2g');
  return n;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}

async function run(o: ServeCommandOptions): Promise<void> {
  const say = (line: string) => process.stderr.write(`invad serve: ${line}\n`);
  const apiKey = o.apiKey ?? (process.env.INVAD_API_KEY || undefined);
  if (!isLoopback(o.host) && apiKey === undefined)
    say(`warning: listening on ${o.host} without an API key: anyone who can reach the port can score images (set INVAD_API_KEY)`);

  // A signal during the model load is kept and acted on once the server is up.
  let stop: (signal: string) => void = () => {};
  let pending: string | undefined;
  const onSignal = (signal: string) => {
    if (pending !== undefined) return say(`${signal} again: still finishing accepted requests (SIGKILL stops at once)`);
    pending = signal;
    stop(signal);
  };
  process.on('SIGTERM', onSignal).on('SIGINT', onSignal);
  // Loaded here, not at the top: the other commands need neither fastify nor prom-client
  // (together about 0.3 s of start-up).
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { startServer } = require('../../../deploy/serve/server') as typeof import('../../../deploy/serve/server');
  try {
    const server = await startServer({
      model: o.model,
      host: o.host,
      port: o.port,
      detector: { executionProviders: o.providers, steps: o.steps, maxBatchSize: o.batchSize },
      ...(apiKey === undefined ? {} : { apiKey }),
      maxQueue: o.maxQueue,
      bodyLimit: o.bodyLimit,
      onListening: (url) => say(`listening on ${url}; loading ${o.model} (GET /v2/health/ready answers 200 once loaded)`),
      log: say,
    });
    const info = server.detector.info();
    say(
      `ready: model "invad" on ${server.url} (S = ${info.steps}, ${info.scoreDefinition}, ${info.engine} on ${info.device}, queue ${o.maxQueue} images${apiKey === undefined ? '' : ', API key required'})`,
    );
    const signal = await new Promise<string>((resolve) => (pending !== undefined ? resolve(pending) : (stop = resolve)));
    say(`${signal}: no longer accepting; finishing accepted requests`);
    await server.close();
    say('stopped');
  } finally {
    process.off('SIGTERM', onSignal).off('SIGINT', onSignal);
  }
}

export function serveCommand(): Command {
  return new Command('serve')
    .description(
      'Serve a model bundle over HTTP: the KServe v2 inference protocol (with binary tensors) as model "invad", POST /v1/score for encoded images, GET /metrics',
    )
    .requiredOption('-m, --model <dir>', 'model bundle folder')
    .option('--port <n>', 'TCP port (0: any free port)', parsePort, 8000)
    .option('--host <address>', 'interface to bind; 0.0.0.0 for every interface', '127.0.0.1')
    .option('-p, --providers <list>', 'execution providers to try in order, e.g. cuda,cpu', parseProviders, ['cpu'] as ExecutionProvider[])
    .option('-s, --steps <n>', "inversion steps S (default: the bundle's)", parsePositiveInt)
    .option('-b, --batch-size <n>', 'most images merged into one model run', parsePositiveInt, 8)
    .option(
      '--api-key <key>',
      'require this key (Authorization: Bearer <key> or X-API-Key) on every route but /v2/health/*; prefer $INVAD_API_KEY, which other users cannot see in ps',
    )
    .option('--max-queue <n>', 'most images accepted and not yet answered; past it, 503 with Retry-After', parsePositiveInt, 64)
    .option('--body-limit <bytes>', 'largest request body (e.g. 32m); past it, 413', parseBytes, 32 * 1024 * 1024)
    .action(async (o: ServeCommandOptions) => {
      await run(o);
    });
}
