/** `invad score`: one JSON line per image on stdout; with --out, a heat-map overlay PNG per image. */
import { mkdir, writeFile } from 'node:fs/promises';
import { basename, dirname, extname, join, relative, resolve, sep } from 'node:path';
import { Command, InvalidArgumentError as CommanderArgError } from 'commander';
import { Detector, type ScoreResult } from '../../../runtime/detector';
import { type DriftInfo, formatDrift } from '../../../runtime/drift';
import type { ExecutionProvider } from '../../../runtime/engine/protocol';
import { InvadError } from '../../../util/errors';
import { scoreFields } from '../../../deploy/serve/score-fields';
import { renderOverlay } from '../../../eval/report/overlay';
import { decodeImage } from '../../../runtime/preprocess';
import { expandImagePaths } from '../../../util/image-files';
import { EXIT_INPUT_FAILED, EXIT_OK, EXIT_USAGE, UsageError } from '../exit';
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

/** The same fields as `invad serve`'s POST /v1/score answers, after the file. */
function resultLine(file: string, r: ScoreResult) {
  return { file, ...scoreFields(r) };
}

/** The deepest folder that holds every one of `dirs` (absolute paths). */
function commonFolder(dirs: readonly string[]): string {
  let parts = dirs[0].split(sep);
  for (const d of dirs.slice(1)) {
    const other = d.split(sep);
    let k = 0;
    while (k < parts.length && k < other.length && parts[k] === other[k]) k++;
    parts = parts.slice(0, k);
  }
  return parts.join(sep) || sep;
}

/**
 * Where each image's overlay goes: its path below the images' deepest common folder, mirrored
 * under `outDir`, as `<stem>_overlay.png`. So `a/x.png` and `b/x.png` give `a/x_overlay.png` and
 * `b/x_overlay.png`, and one folder of images gives flat names as before.
 * @throws UsageError when two different images would still share an overlay (`x.png` and
 *   `x.jpg` in one folder); the same file given twice shares one.
 */
export function overlayDestinations(files: readonly string[], outDir: string): string[] {
  if (files.length === 0) return [];
  const absolute = files.map((f) => resolve(f));
  const base = commonFolder(absolute.map((f) => dirname(f)));
  const owner = new Map<string, string>();
  return absolute.map((file, i) => {
    const dest = join(outDir, relative(base, dirname(file)), `${basename(file, extname(file))}_overlay.png`);
    const first = owner.get(dest);
    if (first !== undefined && first !== file) {
      throw new UsageError(`${files[i]} and ${first} would both write the overlay ${dest}; rename one, or score them in separate runs`);
    }
    owner.set(dest, file);
    return dest;
  });
}

async function writeOverlay(dest: string, file: string, r: ScoreResult, pixelThreshold: number | null): Promise<void> {
  const image = await decodeImage(file, file);
  const range: [number, number] | undefined = pixelThreshold !== null ? [0, 2 * pixelThreshold] : undefined;
  const png = await renderOverlay(image, r.map, { range });
  await mkdir(dirname(dest), { recursive: true });
  await writeFile(dest, png);
}

function errorOf(err: unknown): { code: string; message: string } {
  const code = err instanceof InvadError ? err.code : ((err as NodeJS.ErrnoException)?.code ?? 'ERR_UNKNOWN');
  return { code, message: err instanceof Error ? err.message : String(err) };
}

async function run(inputs: string[], o: ScoreCommandOptions): Promise<number> {
  const files = await expandImagePaths(inputs);
  if (files.length === 0) {
    process.stderr.write('invad score: no images found in the given paths\n');
    return EXIT_USAGE;
  }
  // Checked before the model loads: a clash is a usage error, found in milliseconds.
  const overlays = o.out ? overlayDestinations(files, o.out) : undefined;
  const det = await Detector.load(o.model, { executionProviders: o.providers, steps: o.steps, maxBatchSize: o.batchSize });
  const { pixelThreshold } = det.info();
  let failures = 0;
  let drift: DriftInfo | undefined;
  const progress = makeProgress(files.length, 'scoring');
  try {
    const chunk = Math.max(o.batchSize * 4, 32);
    for (let i = 0; i < files.length; i += chunk) {
      const part = files.slice(i, i + chunk);
      const partOverlays = overlays?.slice(i, i + chunk);
      const results = await det.scoreBatch(part, { batchSize: o.batchSize, errors: 'collect' });
      for (let j = 0; j < part.length; j++) {
        const r = results[j];
        if (r instanceof Error) {
          failures++;
          process.stdout.write(JSON.stringify({ file: part[j], error: errorOf(r) }) + '\n');
          continue;
        }
        const line: Record<string, unknown> = resultLine(part[j], r);
        if (partOverlays) {
          // The score stands; a failed overlay (say, a full disk) fails this image only.
          try {
            await writeOverlay(partOverlays[j], part[j], r, pixelThreshold);
            line.overlay = partOverlays[j];
          } catch (err) {
            failures++;
            line.overlayError = errorOf(err);
          }
        }
        process.stdout.write(JSON.stringify(line) + '\n');
      }
      progress.update(Math.min(files.length, i + chunk));
    }
    drift = det.info().drift;
  } finally {
    progress.stop();
    await det.dispose();
  }
  // On stderr: stdout stays one JSON line per image.
  if (drift) process.stderr.write(formatDrift(drift) + '\n');
  if (failures > 0) process.stderr.write(`invad score: ${failures} of ${files.length} images failed\n`);
  return failures > 0 ? EXIT_INPUT_FAILED : EXIT_OK;
}

export function scoreCommand(): Command {
  return new Command('score')
    .description('Score images with a model bundle: one JSON line per image (file, score, decision, timings)')
    .argument('<inputs...>', 'image files or folders (searched recursively for .png .jpg .jpeg .bmp .tif .tiff .webp .gif)')
    .requiredOption('-m, --model <dir>', 'model bundle folder')
    .option(
      '-o, --out <dir>',
      "also write a heat-map overlay PNG per image into this folder, as <stem>_overlay.png at the image's path below the images' common folder",
    )
    .option('-s, --steps <n>', "inversion steps S (default: the bundle's)", parsePositiveInt)
    .option('-b, --batch-size <n>', 'images per model run', parsePositiveInt, 8)
    .option('-p, --providers <list>', 'execution providers to try in order, e.g. cuda,cpu', parseProviders, ['cpu'] as ExecutionProvider[])
    .action(async (inputs: string[], o: ScoreCommandOptions) => {
      process.exitCode = await run(inputs, o);
    });
}
