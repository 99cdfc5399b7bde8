/**
 * Pins the demo bundle's scores bit for bit, so refactors of the score code (the definition
 * table, calibration, the detector's map choice) can show they changed nothing.
 *
 * The demo bundle (scripts/demo.ts) gets latent statistics and a per-S calibration at S = 2
 * and 3, then both engines score a few demo textures at each S with every definition. The
 * expected values below were recorded from the code before the score-definition table existed
 * (issue 11). Numbers compare with Object.is, so any change in the last bit fails; maps compare
 * by the SHA-256 of their float32 bytes.
 *
 * They were recorded on an x86-64 CPU with ONNX Runtime's CPU provider; another CPU family may
 * round differently inside ORT's kernels. After an intended numeric change, rerun with
 * INVAD_RECORD_PINS=1 to print the new values, and say why in the commit.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { Detector } from '../src';
import type { ScoreDefinition } from '../src/runtime/bundle/manifest';
import type { EngineKind } from '../src/runtime/engine/protocol';
import { calibrateBundle, fitBundleLatents } from '../src/fit/calibrate-bundle';
import { texture, writeDemoBundle } from '../scripts/demo';
import { tempDir } from './helpers/bundles';

const SIZE = 64;
const STEPS = [2, 3];
const ENGINES: EngineKind[] = ['native', 'onnxruntime-node'];
// Spelled out, not read from the code under test, so a refactor cannot drop one unnoticed.
const DEFINITIONS: ScoreDefinition[] = ['sp', 'nll', 'combined', 'latent-gaussian'];

const gray = (seed: number, scratch: boolean) => ({ data: texture(seed, scratch), width: SIZE, height: SIZE, channels: 1 as const });

function sha256(parts: Array<ArrayBufferView | string>): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(typeof p === 'string' ? p : new Uint8Array(p.buffer, p.byteOffset, p.byteLength));
  return h.digest('hex');
}

let tmp: ReturnType<typeof tempDir>;
let model: string;

beforeAll(async () => {
  tmp = tempDir('invad-pinned-');
  model = join(tmp.dir, 'model');
  await writeDemoBundle(model);
  const images = join(tmp.dir, 'normals');
  mkdirSync(images);
  const files: string[] = [];
  for (let i = 0; i < 40; i++) {
    const f = join(images, `${i}.png`);
    await sharp(texture(1000 + i, false), { raw: { width: SIZE, height: SIZE, channels: 1 } })
      .png()
      .toFile(f);
    files.push(f);
  }
  await fitBundleLatents(model, files.slice(0, 24), { steps: STEPS });
  await calibrateBundle(model, files.slice(24), { steps: STEPS });
});
afterAll(() => tmp?.cleanup());

/** Everything the test pins, recomputed from the code as it is. */
async function observe(): Promise<Record<string, unknown>> {
  const manifest = JSON.parse(readFileSync(join(model, 'manifest.json'), 'utf8'));
  const out: Record<string, unknown> = {
    calibrationSha256: sha256([JSON.stringify(manifest.calibration)]),
    latentSha256: manifest.latentGaussian.map((g: { meanSha256: string; precisionSha256: string }) => [g.meanSha256, g.precisionSha256]),
  };
  const inputs = [gray(5000, false), gray(5001, false), gray(5002, false), gray(5000, true), gray(5001, true), gray(5002, true)];
  for (const engine of ENGINES) {
    for (const definition of DEFINITIONS) {
      const det = await Detector.load(model, { engine, scoreDefinition: definition });
      try {
        // The two engines agree bit for bit on this bundle, so make sure each one really ran.
        expect(det.info().engine).toBe(engine);
        for (const steps of STEPS) {
          const scores: number[] = [];
          const maps: Float32Array[] = [];
          let threshold: number | null = null;
          // One image at a time, so every run has the same batch of one.
          for (const input of inputs) {
            const r = await det.score(input, { steps });
            scores.push(r.score);
            threshold = r.threshold;
            maps.push(r.map, r.featureMaps.l2, ...(r.featureMaps.latentGaussian ? [r.featureMaps.latentGaussian] : []));
          }
          out[`${engine} S=${steps} ${definition}`] = { scores, threshold, mapsSha256: sha256(maps) };
        }
      } finally {
        await det.dispose();
      }
    }
  }
  return out;
}

const PINNED: Record<string, unknown> = {
  calibrationSha256: '1694ded7354c518ca5f54a23162494e272bb24ebe920d5f311b2ed02df1915fe',
  latentSha256: [
    ['3388896f7b2a58b536e7bb4896d92f48a31dc3e97bbfde6577552be81abd4adb', '7d11743118de69529153ebf73d937ff6c2b66e7b60c9028440dcde3a8e10e8b6'],
    ['18570f12888371405828f1a940588bf7159b11fc4dab517d71aebf9a1cfbc4b5', '76bc503366068531a66fe948639093d3f71b0add24268e2915612054d6e717c6'],
  ],
  'native S=2 sp': {
    scores: [-0.3819054651274323, 0.654310573976853, 1.5740566497080257, 32.65716696233369, 25.612855208955278, 24.271425006325163],
    threshold: 1.4754653858872238,
    mapsSha256: '7ab7677dddbd188c1ef507d848f5ec982ec39c8f38ef949bf9112cfe3180db64',
  },
  'native S=3 sp': {
    scores: [-0.3819049257570567, 0.6543116345827683, 1.574057509627627, 32.6571556329669, 25.612855755742714, 24.271423592209974],
    threshold: 1.475465696609692,
    mapsSha256: 'e3dafe90217b18efbe66cc9a805f9301dfae1ebd3adbc78be52964fcb1feadd1',
  },
  'native S=2 nll': {
    scores: [-1.0724274778765954, 0.6317581592684267, 2.0233592689329365, 0.1582139391607619, 1.8948052050448998, 2.8406787955254305],
    threshold: 2.3449172311541995,
    mapsSha256: '7ab7677dddbd188c1ef507d848f5ec982ec39c8f38ef949bf9112cfe3180db64',
  },
  'native S=3 nll': {
    scores: [-1.0724275157698095, 0.6317582001121742, 2.0233593648465633, 0.15821369654396317, 1.8948054298252661, 2.8406788668971683],
    threshold: 2.3449173028069197,
    mapsSha256: 'e3dafe90217b18efbe66cc9a805f9301dfae1ebd3adbc78be52964fcb1feadd1',
  },
  'native S=2 combined': {
    scores: [-1.4543329430040277, 1.2860687332452798, 3.597415918640962, 32.81538090149445, 27.507660414000178, 27.112103801850594],
    threshold: 3.769984368353942,
    mapsSha256: '7ab7677dddbd188c1ef507d848f5ec982ec39c8f38ef949bf9112cfe3180db64',
  },
  'native S=3 combined': {
    scores: [-1.4543324415268661, 1.2860698346949424, 3.5974168744741903, 32.81536932951086, 27.50766118556798, 27.112102459107142],
    threshold: 3.7699847240626223,
    mapsSha256: 'e3dafe90217b18efbe66cc9a805f9301dfae1ebd3adbc78be52964fcb1feadd1',
  },
  'native S=2 latent-gaussian': {
    scores: [0.12329138294622234, 1.8765382489418423, -0.5865578662503173, 58.91272467112971, 63.09600784728301, 28.984564726546154],
    threshold: 1.747148293528492,
    mapsSha256: 'b7bdb0188a4697b76633be71d9c357a9653b97a6d3b80ab094e7db8fe1ce5016',
  },
  'native S=3 latent-gaussian': {
    scores: [0.12329147816059936, 1.8765407399176748, -0.5865583192320301, 58.91277016772683, 63.096064908744985, 28.984587110489034],
    threshold: 1.7471496428006987,
    mapsSha256: 'c37c5a115ed52bae3a2cf2024be7ba3c1b507ee67270fb3596db16234899f01d',
  },
  'onnxruntime-node S=2 sp': {
    scores: [-0.3819054651274323, 0.654310573976853, 1.5740566497080257, 32.65716696233369, 25.612855208955278, 24.271425006325163],
    threshold: 1.4754653858872238,
    mapsSha256: '7ab7677dddbd188c1ef507d848f5ec982ec39c8f38ef949bf9112cfe3180db64',
  },
  'onnxruntime-node S=3 sp': {
    scores: [-0.3819049257570567, 0.6543116345827683, 1.574057509627627, 32.6571556329669, 25.612855755742714, 24.271423592209974],
    threshold: 1.475465696609692,
    mapsSha256: 'e3dafe90217b18efbe66cc9a805f9301dfae1ebd3adbc78be52964fcb1feadd1',
  },
  'onnxruntime-node S=2 nll': {
    scores: [-1.0724274778765954, 0.6317581592684267, 2.0233592689329365, 0.1582139391607619, 1.8948052050448998, 2.8406787955254305],
    threshold: 2.3449172311541995,
    mapsSha256: '7ab7677dddbd188c1ef507d848f5ec982ec39c8f38ef949bf9112cfe3180db64',
  },
  'onnxruntime-node S=3 nll': {
    scores: [-1.0724275157698095, 0.6317582001121742, 2.0233593648465633, 0.15821369654396317, 1.8948054298252661, 2.8406788668971683],
    threshold: 2.3449173028069197,
    mapsSha256: 'e3dafe90217b18efbe66cc9a805f9301dfae1ebd3adbc78be52964fcb1feadd1',
  },
  'onnxruntime-node S=2 combined': {
    scores: [-1.4543329430040277, 1.2860687332452798, 3.597415918640962, 32.81538090149445, 27.507660414000178, 27.112103801850594],
    threshold: 3.769984368353942,
    mapsSha256: '7ab7677dddbd188c1ef507d848f5ec982ec39c8f38ef949bf9112cfe3180db64',
  },
  'onnxruntime-node S=3 combined': {
    scores: [-1.4543324415268661, 1.2860698346949424, 3.5974168744741903, 32.81536932951086, 27.50766118556798, 27.112102459107142],
    threshold: 3.7699847240626223,
    mapsSha256: 'e3dafe90217b18efbe66cc9a805f9301dfae1ebd3adbc78be52964fcb1feadd1',
  },
  'onnxruntime-node S=2 latent-gaussian': {
    scores: [0.12329138294622234, 1.8765382489418423, -0.5865578662503173, 58.91272467112971, 63.09600784728301, 28.984564726546154],
    threshold: 1.747148293528492,
    mapsSha256: 'b7bdb0188a4697b76633be71d9c357a9653b97a6d3b80ab094e7db8fe1ce5016',
  },
  'onnxruntime-node S=3 latent-gaussian': {
    scores: [0.12329147816059936, 1.8765407399176748, -0.5865583192320301, 58.91277016772683, 63.096064908744985, 28.984587110489034],
    threshold: 1.7471496428006987,
    mapsSha256: 'c37c5a115ed52bae3a2cf2024be7ba3c1b507ee67270fb3596db16234899f01d',
  },
};

test('demo-bundle scores and maps are bit-identical to the pinned record', async () => {
  const observed = await observe();
  if (process.env.INVAD_RECORD_PINS === '1') {
    process.stdout.write(`${JSON.stringify(observed, null, 2)}\n`);
    return;
  }
  // Every definition at every S on both engines, plus the bundle's calibration and statistics.
  expect(Object.keys(observed)).toHaveLength(2 + ENGINES.length * DEFINITIONS.length * STEPS.length);
  expect(observed).toEqual(PINNED);
});
