import { createHash } from 'node:crypto';
import { readdirSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { Detector, ModelBundleError, ModelMismatchError, loadBundle, validateManifest } from '../src';
import { writeBundle } from '../src/fit/write-bundle';
import { linearUnet, convBackbone } from '../src/fit/onnx/synthetic';
import { editManifest, tempDir, tinyContents, TINY, writeTinyBundle } from './helpers/bundles';

let tmp: ReturnType<typeof tempDir>;
beforeEach(() => {
  tmp = tempDir();
});
afterEach(() => tmp.cleanup());

const manifestPath = (b: string) => join(b, 'manifest.json');

describe('bundle format', () => {
  test('a written bundle validates and loads, with hashes and provenance', async () => {
    const b = await writeTinyBundle(tmp.dir);
    const loaded = await loadBundle(b);
    expect(validateManifest(loaded.manifest)).toBe(true);
    expect(loaded.manifest.models.unet.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(loaded.manifest.provenance.backbone.name).toBe('synthetic-conv');
    expect(loaded.manifest.calibration.status).toBe('placeholder');
    expect(loaded.manifest.schedule).toMatchObject({ betaStart: 1e-4, betaEnd: 0.02, trainSteps: 1000, defaultSteps: 3 });
  });

  test('writing refuses to replace an existing bundle unless asked, and leaves no temporary folder', async () => {
    const b = await writeTinyBundle(tmp.dir);
    await expect(writeBundle(b, tinyContents())).rejects.toMatchObject({ code: 'ERR_INVAD_INVALID_ARGUMENT' });
    await writeBundle(b, tinyContents(), { overwrite: true });
    expect(readdirSync(tmp.dir)).toEqual(['bundle']);
  });
});

describe('bundle errors name the file and the field', () => {
  test('missing manifest', async () => {
    const b = await writeTinyBundle(tmp.dir);
    rmSync(manifestPath(b));
    await expect(loadBundle(b)).rejects.toMatchObject({ name: 'ModelBundleError', file: 'manifest.json' });
  });

  test('corrupted manifest (not JSON)', async () => {
    const b = await writeTinyBundle(tmp.dir);
    writeFileSync(manifestPath(b), '{"format": "invad-bundle", ');
    await expect(loadBundle(b)).rejects.toMatchObject({ code: 'ERR_INVAD_MODEL_BUNDLE', file: 'manifest.json' });
  });

  test('schema violation names the field', async () => {
    const b = await writeTinyBundle(tmp.dir);
    editManifest(b, (m) => (m.features.channels = -4));
    await expect(loadBundle(b)).rejects.toMatchObject({ file: 'manifest.json', field: '/features/channels' });
    editManifest(b, (m) => {
      m.features.channels = TINY.channels;
      m.version = 99;
    });
    await expect(loadBundle(b)).rejects.toMatchObject({ field: '/version' });
  });

  test('missing model file', async () => {
    const b = await writeTinyBundle(tmp.dir);
    rmSync(join(b, 'unet.onnx'));
    await expect(loadBundle(b)).rejects.toMatchObject({ file: 'unet.onnx', field: '/models/unet/file' });
  });

  test('hash mismatch', async () => {
    const b = await writeTinyBundle(tmp.dir);
    appendFileSync(join(b, 'backbone.onnx'), Buffer.from([0]));
    const err = await loadBundle(b).catch((e) => e);
    expect(err).toBeInstanceOf(ModelBundleError);
    expect(err).toMatchObject({ file: 'backbone.onnx', field: '/models/backbone/sha256' });
  });

  test('UNet with the wrong output shape is a ModelMismatchError at load', async () => {
    const side = TINY.inputSize / TINY.stride;
    const b = join(tmp.dir, 'wrong');
    await writeBundle(b, {
      ...tinyContents(),
      unet: { bytes: linearUnet({ channels: TINY.channels, height: side, width: side, k: 1, m: 0, outputChannels: TINY.channels + 1 }) },
    });
    const err = await Detector.load(b).catch((e) => e);
    expect(err).toBeInstanceOf(ModelMismatchError);
    expect(err).toMatchObject({ code: 'ERR_INVAD_MODEL_MISMATCH', file: 'unet.onnx', field: '/features' });
  });

  test('UNet with a float t input is a ModelMismatchError naming tName', async () => {
    const side = TINY.inputSize / TINY.stride;
    const b = join(tmp.dir, 'wrong-t');
    await writeBundle(b, {
      ...tinyContents(),
      unet: { bytes: linearUnet({ channels: TINY.channels, height: side, width: side, k: 1, m: 0, tElemType: 'float32' }) },
    });
    await expect(Detector.load(b)).rejects.toMatchObject({ file: 'unet.onnx', field: '/models/unet/tName' });
  });

  test('backbone with a differently named input is a ModelMismatchError', async () => {
    const b = join(tmp.dir, 'wrong-name');
    const S = TINY.inputSize;
    await writeBundle(b, {
      ...tinyContents(),
      backbone: { name: 'x', bytes: convBackbone({ height: S, width: S, channels: TINY.channels, stride: TINY.stride, inputName: 'pixels' }) },
    });
    await expect(Detector.load(b)).rejects.toMatchObject({ file: 'backbone.onnx', field: '/models/backbone/inputName' });
  });

  test('manifest features that disagree with the backbone output', async () => {
    const b = await writeTinyBundle(tmp.dir);
    editManifest(b, (m) => (m.features.channels = TINY.channels * 2));
    await expect(Detector.load(b)).rejects.toMatchObject({ code: 'ERR_INVAD_MODEL_MISMATCH', file: 'backbone.onnx', field: '/features' });
  });

  test('a model file that is not ONNX is a ModelBundleError naming it (more cases in bundle-validation.test.ts)', async () => {
    const b = await writeTinyBundle(tmp.dir);
    writeFileSync(join(b, 'unet.onnx'), 'garbage');
    editManifest(b, (m) => (m.models.unet.sha256 = createHash('sha256').update('garbage').digest('hex')));
    await expect(Detector.load(b)).rejects.toMatchObject({ code: 'ERR_INVAD_MODEL_BUNDLE', file: 'unet.onnx', field: '/models/unet/file' });
  });
});
