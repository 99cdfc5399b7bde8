/** `invad score`: one JSON line per image on stdout; with --out, a heat-map overlay PNG per image. */
import { mkdir, writeFile } from 'node:fs/promises';
import { basename, extname, join } from 'node:path';
import { Command, InvalidArgumentError as CommanderArgError } from 'commander';
import { Detector, type ScoreResult } from '../../../runtime/detector';
import type { ExecutionProvider } from '../../../runtime/engine/protocol';
import { InvadError } from '../../../util/errors';
import { renderOverlay } from '../../../eval/report/overlay';
import { decodeImage } from '../../../runtime/preprocess';
import { expandImagePaths } from '../../../util/image-files';
import { makeProgress } from '../progress';

export function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new CommanderArgError('expected a positive integer');
  return n;
}

export function parseProviders(value: string): ExecutionProvider[] {
  return value.split(',').map((s) => s.trim()) as ExecutionProvider[];
}

interface ScoreCommandOptions {
  model: string;
  out?: string;
  steps?: number;
  batchSize: number;
  providers: ExecutionProvider[];
}

function resultLine(file: string, r: ScoreResult) {
  const { map: _map, ...rest } = r;
  return { file, score: rest.score, isAnomalous: rest.isAnomalous, threshold: rest.threshold, components: rest.components, steps: rest.steps, width: rest.width, height: rest.height, timings: rest.timings };
}

async function writeOverlay(outDir: string, file: string, r: ScoreResult, pixelThreshold: number | null): Promise<string> {
  const image = await decodeImage(file, file);
  const range: [number, number] | undefined = pixelThreshold !== null ? [0, 2 * pixelThreshold] : undefined;
  const png = await renderOverlay(image, r.map, { range });
  const dest = join(outDir, `${basename(file, extname(file))}_overlay.png`);
  await writeFile(dest, png);
  return dest;
}

async function run(inputs: string[], o: ScoreCommandOptions): Promise<number> {
  const files = await expandImagePaths(inputs);
  if (files.length === 0) {
    process.stderr.write('invad score: no images found in the given paths\n');
    return 2;
  }
  if (o.out) await mkdir(o.out, { recursive: true });
  const det = await Detector.load(o.model, { executionProviders: o.providers, steps: o.steps, maxBatchSize: o.batchSize });
  const { pixelThreshold } = det.info();
  let failures = 0;
  const progress = makeProgress(files.length, 'scoring');
  try {
    const chunk = Math.max(o.batchSize * 4, 32);
    for (let i = 0; i < files.length; i += chunk) {
      const part = files.slice(i, i + chunk);
      const results = await det.scoreBatch(part, { batchSize: o.batchSize, errors: 'collect' });
      for (let j = 0; j < part.length; j++) {
        const r = results[j];
        if (r instanceof Error) {
          failures++;
          const code = r instanceof InvadError ? r.code : 'ERR_UNKNOWN';
          process.stdout.write(JSON.stringify({ file: part[j], error: { code, message: r.message } }) + '\n');
          continue;
        }
        const line: Record<string, unknown> = resultLine(part[j], r);
        if (o.out) line.overlay = await writeOverlay(o.out, part[j], r, pixelThreshold);
        process.stdout.write(JSON.stringify(line) + '\n');
      }
      progress.update(Math.min(files.length, i + chunk));
    }
  } finally {
    progress.stop();
    await det.dispose();
  }
  if (failures > 0) process.stderr.write(`invad score: ${failures} of ${files.length} images failed\n`);
  return failures > 0 ? 1 : 0;
}

export function scoreCommand(): Command {
  return new Command('score')
    .description('Score images with a model bundle: one JSON line per image (file, score, decision, timings)')
    .argument('<inputs...>', 'image files or folders (searched recursively for .png .jpg .jpeg .bmp .tif .tiff .webp .gif)')
    .requiredOption('-m, --model <dir>', 'model bundle folder')
    .option('-o, --out <dir>', 'also write a heat-map overlay PNG per image into this folder')
    .option('-s, --steps <n>', 'inversion steps S (default: the bundle\'s)', parsePositiveInt)
    .option('-b, --batch-size <n>', 'images per model run', parsePositiveInt, 8)
    .option('-p, --providers <list>', 'execution providers to try in order, e.g. cuda,cpu', parseProviders, ['cpu'] as ExecutionProvider[])
    .action(async (inputs: string[], o: ScoreCommandOptions) => {
      process.exitCode = await run(inputs, o);
    });
}
