/**
 * The feature grid as a fit option (issue 17, item 1): `fit --grid`, the UNet presets' grid rules
 * (mirrored from train/presets.py), and a tiny fit at 28 x 28 on the real MobileNetV2 taps.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { Detector } from '../src';
import { fit } from '../src/fit/fit';
import { MAX_ATTENTION_POSITIONS, UNET_PRESET_LEVELS, UNET_PRESETS, unetGridProblem } from '../src/fit/trainer/runner';
import { fitCommand } from '../src/tools/cli/commands/fit';
import { packageRoot } from '../src/util/package-info';
import { mulberry32 } from '../src/util/prng';
import { tempDir } from './helpers/bundles';
import { hasShared, hasTorch, MOBILENET } from './helpers/requirements';

jest.setTimeout(10 * 60_000);

/** train/presets.py's view: each preset's levels and attention, and grid_problem on `grids` (no torch needed). */
function pythonPresets(
  grids: Array<[number, number]>,
): { presets: Record<string, unknown>; max: number; problems: Record<string, Array<string | null>> } | undefined {
  const script = [
    'import json, sys',
    'from train.presets import PRESETS, MAX_ATTENTION_POSITIONS, grid_problem',
    'grids = json.loads(sys.argv[1])',
    'print(json.dumps({',
    '  "presets": {n: {"levels": len(p["model"]["channel_mult"]), "attentionDs": p["model"]["attention_ds"]} for n, p in PRESETS.items()},',
    '  "max": MAX_ATTENTION_POSITIONS,',
    '  "problems": {n: [grid_problem(n, h, w) for h, w in grids] for n in PRESETS}}))',
  ].join('\n');
  for (const py of ['python3', '/usr/bin/python3']) {
    const r = spawnSync(py, ['-c', script, JSON.stringify(grids)], { cwd: packageRoot(), encoding: 'utf8' });
    if (r.status === 0) return JSON.parse(r.stdout) as ReturnType<typeof pythonPresets>;
  }
  return undefined;
}

describe('the UNet presets and the feature grid', () => {
  test('every preset takes 14 x 14 and 28 x 28', () => {
    for (const p of UNET_PRESETS) {
      expect(unetGridProblem(p, 14, 14)).toBeUndefined();
      expect(unetGridProblem(p, 28, 28)).toBeUndefined();
    }
    expect(unetGridProblem('paper', 8, 8)).toMatch(/too small for preset 'paper': its 3 down-samplings take it to 1 x 1/);
    expect(unetGridProblem('tiny', 130, 130)).toMatch(/too large for preset 'tiny'.*65 x 65 = 4225 positions/);
  });

  test('the TypeScript mirror agrees with train/presets.py', () => {
    const grids: Array<[number, number]> = [];
    for (let g = 1; g <= 140; g++) grids.push([g, g]);
    grids.push([28, 4], [4, 28], [13, 9], [130, 2]);
    const py = pythonPresets(grids);
    if (py === undefined) {
      if (process.env.CI) throw new Error('python3 is required in CI');
      console.warn('\n*** SKIPPING: no python3 to read train/presets.py ***\n');
      return;
    }
    expect(py.presets).toEqual(UNET_PRESET_LEVELS);
    expect(py.max).toBe(MAX_ATTENTION_POSITIONS);
    for (const p of UNET_PRESETS) expect(grids.map(([h, w]) => unetGridProblem(p, h, w) ?? null)).toEqual(py.problems[p]);
  });
});

describe('fit --grid', () => {
  const base = { normal: '/nonexistent', out: '/nonexistent/out', backbone: 'mobilenetv2-int8', backboneModel: '/nonexistent.onnx' };

  test('checked before any work: an integer 2..128 the UNet preset can take', async () => {
    for (const grid of [1, 129, 14.5, Number.NaN]) await expect(fit({ ...base, grid })).rejects.toMatchObject({ argument: 'grid' });
    await expect(fit({ ...base, grid: 8, unetPreset: 'paper' })).rejects.toMatchObject({
      argument: 'grid',
      message: expect.stringMatching(/too small for preset 'paper'/),
    });
    // small (the default) takes 8: the next failure is the missing model, past the grid check.
    await expect(fit({ ...base, grid: 8 })).rejects.not.toMatchObject({ argument: 'grid' });
  });

  test('the CLI passes --grid through and rejects a non-integer', async () => {
    const run = async (args: string[]) => {
      const err = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
      try {
        await fitCommand()
          .exitOverride()
          .parseAsync(['--normal', '/nonexistent', '--out', '/nonexistent/out', '-b', 'mobilenetv2-int8', ...args], { from: 'user' });
        return undefined;
      } catch (e) {
        return e as Error & { argument?: string };
      } finally {
        err.mockRestore();
      }
    };
    expect((await run(['--grid', 'x']))?.message).toMatch(/positive integer/);
    expect(await run(['--grid', '8', '--unet-preset', 'paper'])).toMatchObject({ argument: 'grid' });
    expect(fitCommand().helpInformation()).toContain('--grid <n>');
  });
});

const SIZE = 96;
async function writeTextures(dir: string, n: number): Promise<void> {
  mkdirSync(dir, { recursive: true });
  for (let s = 0; s < n; s++) {
    const rand = mulberry32(s + 1);
    const phase = rand() * 6.28;
    const px = Buffer.alloc(SIZE * SIZE);
    for (let i = 0; i < px.length; i++) px[i] = Math.round(128 + 40 * Math.sin(((i % SIZE) + Math.floor(i / SIZE)) / 5 + phase) + 20 * (rand() - 0.5));
    await sharp(px, { raw: { width: SIZE, height: SIZE, channels: 1 } })
      .png()
      .toFile(join(dir, `good_${s}.png`));
  }
}

(hasShared() && hasTorch() ? test : test.skip)('a tiny fit at grid 28: the bundle works on 28 x 28 features', async () => {
  const tmp = tempDir('invad-fit-grid-');
  try {
    const normal = join(tmp.dir, 'good');
    await writeTextures(normal, 12);
    const r = await fit({
      normal,
      out: join(tmp.dir, 'model'),
      backbone: 'mobilenetv2-int8',
      backboneModel: MOBILENET,
      unetPreset: 'tiny',
      grid: 28,
      epochs: 1,
      valFraction: 0.2,
      latentSteps: [2],
      steps: 2,
      outOfFold: false,
    });
    expect(r.manifest.features).toEqual({ channels: 152, height: 28, width: 28 });
    expect(r.manifest.provenance.training.featureGrid).toEqual({ height: 28, width: 28, chosenBy: 'the grid option' });
    const det = await Detector.load(r.out);
    try {
      const [s] = await det.scoreBatch([join(normal, 'good_0.png')]);
      expect(Number.isFinite(s.score)).toBe(true);
      expect(s.featureMaps.latentGaussian?.length).toBe(28 * 28);
      expect([s.width, s.height]).toEqual([SIZE, SIZE]);
    } finally {
      await det.dispose();
    }
  } finally {
    tmp.cleanup();
  }
});
