/**
 * Runs the PyTorch trainer (`python -m train fit`, in train/) as a child
 * process and streams its JSON-lines progress. Training belongs where autograd
 * and GPUs live; everything around it stays in TypeScript.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { AbortedError, TrainingError } from '../../util/errors';
import { packageRoot } from '../../util/package-info';

/** The trainer's UNet sizes (train/presets.py): tiny for tests, small (6.6M), medium (15.5M), paper (121M). */
export const UNET_PRESETS = ['tiny', 'small', 'medium', 'paper'] as const;
export type UnetPreset = (typeof UNET_PRESETS)[number];

/**
 * What train/presets.py's grid_problem reads of each preset: its UNet's level count
 * (len(channel_mult)) and the down-sampling factors with attention (attention_ds). Mirrored here so
 * that fit refuses a feature grid before extracting features; test/fit-grid.test.ts checks both
 * against presets.py.
 */
export const UNET_PRESET_LEVELS: Readonly<Record<UnetPreset, { levels: number; attentionDs: readonly number[] }>> = {
  tiny: { levels: 2, attentionDs: [] },
  small: { levels: 3, attentionDs: [4] },
  medium: { levels: 3, attentionDs: [2, 4] },
  paper: { levels: 4, attentionDs: [2, 4, 8] },
};

/** The most positions one attention block may attend over (presets.py MAX_ATTENTION_POSITIONS). */
export const MAX_ATTENTION_POSITIONS = 64 * 64;

/**
 * Why UNet preset `preset` cannot take a height x width feature grid, or undefined when it can
 * (the same rules and messages as train/presets.py grid_problem). The sizes need not divide:
 * each down-sampling gives ceil(size / 2) and each up-sampling crops back to the skip tensor, so
 * 14 -> 7 -> 4 and 28 -> 14 -> 7 -> 4 both work. Refused: an attention level the UNet never
 * reaches, a deepest map under 2 x 2, an attention block over MAX_ATTENTION_POSITIONS positions.
 */
export function unetGridProblem(preset: UnetPreset, height: number, width: number): string | undefined {
  const { levels, attentionDs } = UNET_PRESET_LEVELS[preset];
  const sizes: Array<[number, number]> = [[height, width]];
  for (let k = 1; k < levels; k++) {
    const [h, w] = sizes[k - 1];
    sizes.push([Math.ceil(h / 2), Math.ceil(w / 2)]);
  }
  const reached = sizes.map((_, k) => 2 ** k);
  for (const ds of attentionDs) {
    if (!reached.includes(ds)) {
      return `preset '${preset}' puts attention at down-sampling ${ds}, which its ${levels}-level UNet never reaches (levels [${reached.join(', ')}])`;
    }
  }
  const deepest = sizes[levels - 1];
  if (Math.min(...deepest) < 2) {
    return (
      `a ${height} x ${width} feature grid is too small for preset '${preset}': its ${levels - 1} down-samplings ` +
      `take it to ${deepest[0]} x ${deepest[1]} (at least 2 x 2 needed); use a larger grid or a preset with fewer levels`
    );
  }
  for (const ds of [...new Set([...attentionDs, reached[levels - 1]])].sort((a, b) => a - b)) {
    const [h, w] = sizes[reached.indexOf(ds)];
    if (h * w > MAX_ATTENTION_POSITIONS) {
      return (
        `a ${height} x ${width} feature grid is too large for preset '${preset}': attention at down-sampling ${ds} ` +
        `would run over ${h} x ${w} = ${h * w} positions (at most ${MAX_ATTENTION_POSITIONS})`
      );
    }
  }
  return undefined;
}

export const INSTALL_TORCH_HINT =
  'PyTorch is needed to train. On Debian/Ubuntu: sudo apt-get install -y --no-install-recommends python3-torch python3-numpy python3-onnx ; ' +
  'with pip: pip install torch numpy onnx ; or point INVAD_PYTHON at a Python that has them.';

export interface TrainerSummary {
  epochs: number;
  train_loss: number;
  val_loss: number;
  wall_s: number;
  [key: string]: unknown;
}

export type TrainerEvent =
  | { event: 'start'; params: number; device: string; epochs: number; train: number; val: number; config: Record<string, unknown> }
  | { event: 'epoch'; epoch: number; epochs: number; loss: number; val_loss: number; lr: number; images_per_s: number; elapsed_s: number }
  | { event: 'step'; [key: string]: unknown }
  | ({ event: 'done' } & TrainerSummary)
  | { event: 'error'; message: string };

export interface TrainerOptions {
  python?: string;
  trainNpy: string;
  valNpy: string;
  workDir: string;
  preset: UnetPreset;
  epochs?: number;
  batchSize?: number;
  lr?: number;
  seed: number;
  resume: boolean;
  device?: 'auto' | 'cpu' | 'cuda';
  maxMinutes?: number;
  signal?: AbortSignal;
  onEvent?: (e: TrainerEvent) => void;
  onLog?: (line: string) => void;
}

/**
 * The first Python that can import torch: $INVAD_PYTHON, python3 on PATH, then
 * Debian's /usr/bin/python3 (PATH may hold a pyenv without PyTorch).
 */
export function findPython(explicit?: string): string {
  const candidates = explicit ? [explicit] : [process.env.INVAD_PYTHON, 'python3', '/usr/bin/python3'].filter((c): c is string => !!c);
  for (const py of candidates) {
    const r = spawnSync(py, ['-c', 'import torch, numpy, onnx'], { stdio: 'ignore', timeout: 120_000 });
    if (r.status === 0) return py;
  }
  throw new TrainingError(`No Python with PyTorch, numpy and onnx found (tried ${candidates.join(', ')}). ${INSTALL_TORCH_HINT}`);
}

function trainerArgs(o: TrainerOptions): string[] {
  const args = ['-m', 'train', 'fit', '--train', o.trainNpy, '--val', o.valNpy, '--out', o.workDir, '--preset', o.preset, '--seed', String(o.seed)];
  if (o.epochs !== undefined) args.push('--epochs', String(o.epochs));
  if (o.batchSize !== undefined) args.push('--batch-size', String(o.batchSize));
  if (o.lr !== undefined) args.push('--lr', String(o.lr));
  if (o.device) args.push('--device', o.device);
  if (o.maxMinutes !== undefined) args.push('--max-minutes', String(o.maxMinutes));
  if (o.resume) args.push('--resume');
  return args;
}

export function runTrainer(o: TrainerOptions): Promise<TrainerSummary> {
  const python = findPython(o.python);
  return new Promise<TrainerSummary>((resolve, reject) => {
    const child = spawn(python, trainerArgs(o), { cwd: packageRoot(), stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PYTHONUNBUFFERED: '1' } });
    let summary: TrainerSummary | undefined;
    let lastError: string | undefined;
    const tail: string[] = [];
    const onAbort = () => {
      child.kill('SIGINT');
      setTimeout(() => child.kill('SIGKILL'), 5000).unref();
    };
    o.signal?.addEventListener('abort', onAbort, { once: true });
    createInterface({ input: child.stdout }).on('line', (line) => {
      let e: TrainerEvent;
      try {
        e = JSON.parse(line) as TrainerEvent;
      } catch {
        o.onLog?.(line);
        return;
      }
      if (e.event === 'done') summary = e;
      if (e.event === 'error') lastError = e.message;
      o.onEvent?.(e);
    });
    createInterface({ input: child.stderr }).on('line', (line) => {
      tail.push(line);
      if (tail.length > 20) tail.shift();
      o.onLog?.(line);
    });
    child.on('error', (err) => reject(new TrainingError(`could not start ${python}: ${err.message}`, { cause: err })));
    child.on('close', (code, sig) => {
      o.signal?.removeEventListener('abort', onAbort);
      if (o.signal?.aborted) return reject(new AbortedError('training'));
      if (code === 0 && summary) return resolve(summary);
      if (code === 3) return reject(new TrainingError(lastError ?? INSTALL_TORCH_HINT));
      const why = lastError ?? tail.slice(-8).join('\n');
      reject(new TrainingError(`trainer exited with ${code ?? sig}: ${why}`));
    });
  });
}
