/**
 * `invad backbone`: turn an ONNX classifier into a feature backbone
 * (taps -> bilinear resize to a common grid -> concat), or list its tap candidates.
 */
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Command, InvalidArgumentError as CommanderArgError, Option } from 'commander';
import { BACKBONE_PRESETS, type BackbonePreset, MODELS_DIR_ENV, resolveBackboneModel } from '../../../fit/backbones';
import { InvadError } from '../../../util/errors';
import { UsageError } from '../exit';
import { buildFeatureBackbone, describeTapCandidates, type Size2D } from '../../../fit/onnx/backbone';

/** '224' -> 224x224, '256x320' -> height 256, width 320. */
export function parseSize(value: string): Size2D {
  const m = /^\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*$/.exec(value);
  const height = m ? Number(m[1]) : NaN;
  const width = m ? Number(m[2] ?? m[1]) : NaN;
  if (!Number.isInteger(height) || !Number.isInteger(width) || height < 1 || width < 1) {
    throw new CommanderArgError('expected a positive integer or HEIGHTxWIDTH, e.g. 224 or 256x320');
  }
  return { height, width };
}

function parseTaps(value: string): string[] {
  const taps = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (taps.length === 0) throw new CommanderArgError('expected comma-separated tensor names');
  return taps;
}

interface BackboneCommandOptions {
  model?: string;
  backbonePreset?: string;
  /** deprecated alias of backbonePreset */
  preset?: string;
  taps?: string[];
  out?: string;
  inputSize?: Size2D;
  grid?: Size2D;
  inputName?: string;
  list?: boolean;
  json?: boolean;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return (
    rows
      .map((r) =>
        r
          .map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c])))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

function fmtStride(s: number): string {
  return Number.isInteger(s) ? String(s) : s.toFixed(2);
}

async function readModel(path: string, preset: BackbonePreset | undefined): Promise<Uint8Array> {
  try {
    return await readFile(path);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const hint = preset ? `\n  get it: ${preset.howToGet}` : '';
    throw new UsageError(`cannot read the model ${path}: ${e.code === 'ENOENT' ? 'no such file' : e.message}${hint}`);
  }
}

/**
 * The value of an option that replaced a deprecated one: warns (one line on stderr) when the
 * old name is used, and refuses the two with different values.
 */
export function deprecatedAlias<T>(
  command: string,
  current: { flag: string; value: T | undefined },
  old: { flag: string; value: T | undefined },
): T | undefined {
  if (old.value === undefined) return current.value;
  process.stderr.write(`invad ${command}: warning: ${old.flag} is deprecated; use ${current.flag}\n`);
  if (current.value !== undefined && current.value !== old.value) {
    throw new UsageError(`${current.flag} ${String(current.value)} and ${old.flag} ${String(old.value)} disagree; pass ${current.flag} only`);
  }
  return old.value;
}

async function run(o: BackboneCommandOptions): Promise<number> {
  const presetName = deprecatedAlias('backbone', { flag: '--backbone-preset', value: o.backbonePreset }, { flag: '--preset', value: o.preset });
  let preset: BackbonePreset | undefined;
  if (presetName !== undefined) {
    preset = BACKBONE_PRESETS[presetName];
    if (!preset) throw new UsageError(`unknown preset "${presetName}"; presets are ${Object.keys(BACKBONE_PRESETS).join(', ')}`);
  }
  if (o.model === undefined && presetName === undefined)
    throw new UsageError('--model <classifier.onnx> is required (or a --backbone-preset, whose model file is looked for in $INVAD_MODELS_DIR and ./models)');
  const modelPath = o.model ?? resolveBackboneModel(presetName!, undefined, { flag: '--model' });
  const inputSize = o.inputSize ?? preset?.inputSize ?? { height: 224, width: 224 };
  const bytes = await readModel(modelPath, preset);

  if (o.list) {
    const cands = await describeTapCandidates(bytes, { inputSize, inputName: o.inputName });
    if (o.json) {
      process.stdout.write(JSON.stringify({ model: modelPath, inputSize, candidates: cands }, null, 2) + '\n');
      return 0;
    }
    process.stdout.write(`${modelPath}: ${cands.length} tap candidates (4-D feature maps) at ${inputSize.height}x${inputSize.width}, in graph order\n`);
    const rows = [['tap', 'tensor', 'channels', 'size', 'stride']];
    for (const c of cands) rows.push([c.name, c.tensor === c.name ? '' : c.tensor, String(c.channels), `${c.height}x${c.width}`, fmtStride(c.stride)]);
    process.stdout.write(table(rows));
    return 0;
  }

  const taps = o.taps ?? preset?.taps;
  if (!taps) throw new UsageError('give --backbone-preset <name> or --taps a,b,c (see --list for candidates)');
  if (!o.out) throw new UsageError('--out <backbone.onnx> is required');
  const fb = await buildFeatureBackbone(bytes, { taps, inputSize, grid: o.grid, inputName: o.inputName });
  await mkdir(dirname(o.out), { recursive: true });
  await writeFile(o.out, fb.bytes);
  const { channels, height, width } = fb.featureShape;
  if (o.json) {
    process.stdout.write(
      JSON.stringify({ out: o.out, model: modelPath, preset: presetName ?? null, inputSize, featureShape: fb.featureShape, taps: fb.taps }, null, 2) + '\n',
    );
  } else {
    process.stdout.write(
      `wrote ${o.out} (${(fb.bytes.length / 1e6).toFixed(1)} MB): ${fb.inputName} [N,3,${inputSize.height},${inputSize.width}] -> ` +
        `${fb.outputName} [N,${channels},${height},${width}]\n`,
    );
    const rows = [['tap', 'tensor', 'channels', 'size', 'stride']];
    for (const t of fb.taps) rows.push([t.name, t.tensor === t.name ? '' : t.tensor, String(t.channels), `${t.height}x${t.width}`, fmtStride(t.stride)]);
    process.stdout.write(table(rows));
    process.stdout.write(`features: ${channels} x ${height} x ${width}\n`);
  }
  const exp = preset?.expectedFeatureShape;
  if (preset && exp && o.taps === undefined && o.grid === undefined && (exp.channels !== channels || exp.height !== height || exp.width !== width)) {
    process.stderr.write(
      `invad backbone: note: preset "${presetName}" expects ${exp.channels} x ${exp.height} x ${exp.width} at ${preset.inputSize.height}x${preset.inputSize.width}\n`,
    );
  }
  return 0;
}

export function backboneCommand(): Command {
  return new Command('backbone')
    .description('Build a feature backbone from an ONNX classifier: tap intermediate tensors, resize them bilinearly to a common grid, concat on channels')
    .option('-m, --model <file>', `the classifier ONNX model (default: the preset's model file in $${MODELS_DIR_ENV}, then ./models)`)
    .option('--backbone-preset <name>', `taps, input size and model file of a known backbone: ${Object.keys(BACKBONE_PRESETS).join(', ')}`)
    .addOption(new Option('--preset <name>', 'deprecated: use --backbone-preset').hideHelp())
    .option('--taps <list>', "comma-separated tensor names, fine to coarse (overrides the preset's)", parseTaps)
    .option('-o, --out <file>', 'where to write the backbone ONNX model')
    .option('--input-size <n>', "input image size, N or HxW (default: the preset's, else 224)", parseSize)
    .option('--grid <n>', "feature grid, N or HxW (default: the last tap's size)", parseSize)
    .option('--input-name <name>', 'the image input (default: the first graph input)')
    .option('--list', 'list the tensors usable as taps, with their shapes, and exit')
    .option('--json', 'print JSON instead of tables')
    .action(async (o: BackboneCommandOptions) => {
      try {
        process.exitCode = await run(o);
      } catch (err) {
        if (err instanceof UsageError || err instanceof InvadError) {
          const code = err instanceof InvadError ? ` [${err.code}]` : '';
          process.stderr.write(`invad backbone: ${err.message}${code}\n`);
          process.exitCode = 2;
          return;
        }
        throw err;
      }
    });
}
