import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { chromium } from 'playwright-core';
import { mulberry32 } from '../src/util/prng';
import { galleryItem, maskOutline, OUTLINE_RGB } from '../src/eval/report/gallery';
import { escapeHtml, niceTicks, renderReportHtml } from '../src/eval/report/html';
import { downsampleCurve, MAX_CURVE_POINTS, type EvalReport, type EvalRow, type GalleryItem, type ScoreHistogram } from '../src/eval/report/types';
import { writeReport } from '../src/eval/report/write';
import { proportion } from '../src/eval/metrics/binomial';

const CHROMIUM = '/usr/bin/chromium';
const EVIL_NAME = 'a<b>&"c".png';

// Kept after the run (it is small) so a developer can open report.html and the screenshot.
const outDir = mkdtempSync(join(tmpdir(), 'invad-report-test-'));

/** Binormal ROC curve with separation d, sampled at n thresholds. */
function binormalRoc(d: number, n: number): { fpr: number[]; tpr: number[] } {
  // Phi via erf approximation (Abramowitz-Stegun 7.1.26), enough for a plausible curve
  const erf = (x: number) => {
    const s = Math.sign(x);
    const a = Math.abs(x);
    const t = 1 / (1 + 0.3275911 * a);
    const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-a * a);
    return s * y;
  };
  const phi = (x: number) => 0.5 * (1 + erf(x / Math.SQRT2));
  const fpr: number[] = [];
  const tpr: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = 6 - (12 * i) / (n - 1); // threshold from high to low
    fpr.push(1 - phi(t));
    tpr.push(1 - phi(t - d));
  }
  fpr[0] = 0;
  tpr[0] = 0;
  fpr[n - 1] = 1;
  tpr[n - 1] = 1;
  return { fpr, tpr };
}

function gaussianHistogram(def: string, steps: number, shift: number, seed: number): ScoreHistogram {
  const rand = mulberry32(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  const bins = 30;
  const lo = -3;
  const hi = 3 + shift + 3;
  const edges = Array.from({ length: bins + 1 }, (_, i) => lo + ((hi - lo) * i) / bins);
  const normal = new Array<number>(bins).fill(0);
  const anomalous = new Array<number>(bins).fill(0);
  const put = (counts: number[], v: number) => (counts[Math.min(bins - 1, Math.max(0, Math.floor(((v - lo) / (hi - lo)) * bins)))] += 1);
  for (let i = 0; i < 200; i++) put(normal, gauss());
  for (let i = 0; i < 120; i++) put(anomalous, shift + 1.3 * gauss());
  return { scoreDefinition: def, steps, edges, normal, anomalous };
}

/** A w x h test image (gradient plus a dark blob) and its defect mask (a filled rectangle). */
async function writeImageAndMask(path: string, w: number, h: number, rect: { x: number; y: number; w: number; h: number }) {
  const rgb = Buffer.alloc(w * h * 3);
  const mask = new Uint8Array(w * h);
  const map = new Float32Array(w * h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = y * w + x;
      const inside = x >= rect.x && x < rect.x + rect.w && y >= rect.y && y < rect.y + rect.h;
      rgb[3 * i] = Math.round((200 * x) / w) + 30;
      rgb[3 * i + 1] = Math.round((200 * y) / h) + 30;
      rgb[3 * i + 2] = inside ? 20 : 160;
      mask[i] = inside ? 1 : 0;
      const dx = x - (rect.x + rect.w / 2);
      const dy = y - (rect.y + rect.h / 2);
      map[i] = Math.exp(-(dx * dx + dy * dy) / (2 * (rect.w * rect.w)));
    }
  }
  await sharp(rgb, { raw: { width: w, height: h, channels: 3 } })
    .png()
    .toFile(path);
  return { mask, map };
}

async function decodePng(b64: string) {
  const { data, info } = await sharp(Buffer.from(b64, 'base64')).raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: info.channels };
}

let report: EvalReport;
let gallery: GalleryItem[];

beforeAll(async () => {
  const imgDir = join(outDir, 'images');
  mkdirSync(imgDir, { recursive: true });
  const goodPath = join(imgDir, EVIL_NAME);
  const badPath = join(imgDir, 'scratch_007.png');
  const good = await writeImageAndMask(goodPath, 96, 64, { x: 20, y: 10, w: 20, h: 20 });
  const bad = await writeImageAndMask(badPath, 300, 200, { x: 150, y: 60, w: 60, h: 40 });
  gallery = [
    // a normal image flagged anomalous: no mask
    await galleryItem(goodPath, good.map, null, { kind: 'false-positive', score: 0.8123, threshold: 0.7, label: 'good', range: [0, 1] }),
    // a defect missed; larger than maxSide so it gets shrunk, with its mask outlined
    await galleryItem(badPath, bad.map, bad.mask, { kind: 'false-negative', score: 0.6531, threshold: 0.7, label: 'scratch', range: [0, 1], maxSide: 150 }),
  ];

  const defs = ['nll', 'mahalanobis'];
  const stepsList = [5, 10];
  const rows: EvalRow[] = [];
  defs.forEach((def, di) =>
    stepsList.forEach((steps, si) => {
      for (const subset of ['all', 'scratch', 'hole']) {
        const base = 0.9 + 0.02 * di + 0.015 * si - (subset === 'hole' ? 0.05 : 0);
        rows.push({
          scoreDefinition: def,
          steps,
          subset,
          metrics: {
            imageAuroc: base,
            imageAp: base - 0.01,
            imageF1Max: base - 0.06,
            pixelAuroc: 0.95 + 0.01 * si,
            pixelAp: di === 0 ? 0.41 + 0.02 * si : null,
            aupro: subset === 'all' ? 0.87 + 0.01 * di : null,
          },
        });
      }
    }),
  );
  const roc = (pixel: boolean) =>
    defs.flatMap((def, di) =>
      stepsList.map((steps, si) => {
        const c = binormalRoc(1.5 + di + 0.5 * si + (pixel ? 1 : 0), 2000);
        return { scoreDefinition: def, steps, curve: downsampleCurve(c.fpr, c.tpr) };
      }),
    );
  report = {
    createdAt: '2025-01-02T03:04:05.000Z',
    dataset: 'mvtec/<bottle> & "friends"',
    model: 'tiny-resnet <S=auto>',
    machine: { cpu: 'Test CPU @ 2.0GHz', cores: 2, node: process.version, providers: ['cpu'] },
    settings: { inputSize: 256, stepsList, seed: 7, note: '<script>alert(1)</script>', nested: { a: [1, 2] } },
    rows,
    rocImage: roc(false),
    rocPixel: roc(true),
    histograms: defs.flatMap((def, di) => stepsList.map((steps, si) => gaussianHistogram(def, steps, 2 + di + si, 100 + 10 * di + si))),
    latency: stepsList.flatMap((steps) =>
      [1, 8].map((batchSize) => ({
        steps,
        batchSize,
        samples: 20,
        meanMsPerImage: (3 * steps) / batchSize + 1,
        latencyMs: { median: (3.1 * steps) / batchSize + 1, p90: (4 * steps) / batchSize + 1.5, p99: (5 * steps) / batchSize + 2 },
      })),
    ),
    gallery,
    notes: ['Pixel AP for "mahalanobis" was not computed.', 'Threshold < chosen at F1-max & on validation set.'],
    // The bundle's threshold at every (definition, S) but mahalanobis S=10; operating points at 1% and 5%.
    decisions: {
      rates: [0.01, 0.05],
      normals: { source: 'bundle', description: "the bundle's calibration sample <calibration.json>" },
      rows: defs.flatMap((def, di) =>
        stepsList.map((steps, si) => {
          const outcome = (k: number) => ({
            threshold: 1.5 - 0.1 * k,
            falseAlarms: proportion(k + di, 200),
            recall: proportion(60 + 10 * k + si, 120),
            recallByType: [
              { type: 'hole', recall: proportion(20 + k, 40) },
              { type: 'scratch', recall: proportion(40 + 4 * k + si, 80) },
            ],
          });
          return {
            scoreDefinition: def,
            steps,
            bundle: di === 1 && si === 1 ? null : { ...outcome(2), method: 'conformal', targetFalseAlarmRate: 0.01 },
            operatingPoints: [
              { targetFalseAlarmRate: 0.01, normals: 21, normalsNeeded: 99, outcome: outcome(2), note: '21 normals are too few for 0.01', bestRecall: 0.7 },
              { targetFalseAlarmRate: 0.05, normals: 21, normalsNeeded: 19, outcome: outcome(5), bestRecall: 0.9 },
            ],
          };
        }),
      ),
    },
  };
});

describe('report helpers', () => {
  test('downsampleCurve keeps <= 512 points, the ends, and monotone order', () => {
    const c = binormalRoc(2, 5000);
    const d = downsampleCurve(c.fpr, c.tpr);
    expect(d.fpr.length).toBeLessThanOrEqual(MAX_CURVE_POINTS);
    expect(d.fpr.length).toBeGreaterThan(400);
    expect(d.fpr.length).toBe(d.tpr.length);
    expect([d.fpr[0], d.tpr[0], d.fpr[d.fpr.length - 1], d.tpr[d.tpr.length - 1]]).toEqual([0, 0, 1, 1]);
    for (let i = 1; i < d.fpr.length; i++) expect(d.fpr[i]).toBeGreaterThanOrEqual(d.fpr[i - 1]);
    expect(downsampleCurve([0, 1], [0, 1])).toEqual({ fpr: [0, 1], tpr: [0, 1] });
  });

  test('escapeHtml and niceTicks', () => {
    expect(escapeHtml(EVIL_NAME)).toBe('a&lt;b&gt;&amp;&quot;c&quot;.png');
    expect(escapeHtml("it's")).toBe('it&#39;s');
    expect(niceTicks(0, 1, 6).ticks).toEqual([0, 0.2, 0.4, 0.6000000000000001, 0.8, 1]);
    expect(niceTicks(-3, 9, 6).ticks).toEqual([-2.5, 0, 2.5, 5, 7.5]);
    expect(niceTicks(0, 0.37, 5)).toEqual({ ticks: [0, 0.1, 0.2, 0.30000000000000004], step: 0.1 });
  });

  test('maskOutline marks mask pixels with a background 4-neighbour', () => {
    // 5x4, a 3x2 block at x 1..3, y 1..2: every block pixel touches background
    const m = new Uint8Array(20);
    for (const y of [1, 2]) for (const x of [1, 2, 3]) m[y * 5 + x] = 1;
    expect(Array.from(maskOutline(m, 5, 4))).toEqual(Array.from(m));
    // a 3x3 block in a 5x5 image: the centre is interior
    const m2 = new Uint8Array(25);
    for (let y = 1; y <= 3; y++) for (let x = 1; x <= 3; x++) m2[y * 5 + x] = 1;
    const o2 = maskOutline(m2, 5, 5);
    expect(o2[12]).toBe(0);
    expect(o2.reduce((a, b) => a + b, 0)).toBe(8);
  });

  test('galleryItem: PNG size, outline colour, caption fields', async () => {
    const [fp, fn] = gallery;
    expect(fp).toMatchObject({ kind: 'false-positive', label: 'good', score: 0.8123, threshold: 0.7 });
    expect(fp.file.endsWith(EVIL_NAME)).toBe(true);
    const a = await decodePng(fp.overlayPng);
    expect([a.width, a.height, a.channels]).toEqual([96, 64, 3]); // smaller than maxSide: kept at its size
    const isOutline = (img: { data: Buffer; width: number; channels: number }, x: number, y: number) => {
      const i = (y * img.width + x) * img.channels;
      return img.data[i] === OUTLINE_RGB[0] && img.data[i + 1] === OUTLINE_RGB[1] && img.data[i + 2] === OUTLINE_RGB[2];
    };
    let magenta = 0;
    for (let y = 0; y < a.height; y++) for (let x = 0; x < a.width; x++) if (isOutline(a, x, y)) magenta++;
    expect(magenta).toBe(0); // no mask, no outline

    const b = await decodePng(fn.overlayPng);
    expect([b.width, b.height]).toEqual([150, 100]); // 300x200 shrunk to maxSide 150
    // mask x 150..209, y 60..99 at full size -> x 75..104, y 30..49 at half size
    expect(isOutline(b, 75, 40)).toBe(true); // left edge
    expect(isOutline(b, 104, 40)).toBe(true); // right edge
    expect(isOutline(b, 90, 30)).toBe(true); // top edge
    expect(isOutline(b, 90, 49)).toBe(true); // bottom edge
    expect(isOutline(b, 90, 40)).toBe(false); // interior
    expect(isOutline(b, 74, 40)).toBe(false); // outside
  });

  test('galleryItem rejects a map or mask of the wrong size', async () => {
    const p = join(outDir, 'images', 'scratch_007.png');
    await expect(galleryItem(p, new Float32Array(10), null, { kind: 'false-positive', score: 1, threshold: 0, label: 'good' })).rejects.toThrow(
      /map has 10 values/,
    );
    await expect(
      galleryItem(p, new Float32Array(300 * 200), new Uint8Array(5), { kind: 'false-positive', score: 1, threshold: 0, label: 'good' }),
    ).rejects.toThrow(/mask has 5 values/);
  });
});

describe('renderReportHtml on sparse or odd data', () => {
  test('empty sections, NaN/null metrics, malformed histogram, bad overlay and long curves do not throw', () => {
    const long = binormalRoc(1, 3000); // more points than a report should carry: downsampled when drawn
    const html = renderReportHtml({
      createdAt: 'now',
      dataset: 'd',
      model: 'm',
      machine: { cpu: 'c', cores: 1, node: 'v20', providers: [] },
      settings: {},
      rows: [
        {
          scoreDefinition: 'x',
          steps: 1,
          subset: 'all',
          metrics: { imageAuroc: NaN, imageAp: 0.5, imageF1Max: 0.5, pixelAuroc: null, pixelAp: null, aupro: null },
        },
      ],
      rocImage: [{ scoreDefinition: 'x', steps: 1, curve: long }],
      rocPixel: [],
      histograms: [{ scoreDefinition: 'x', steps: 1, edges: [0, 1], normal: [1, 2], anomalous: [3] }],
      latency: [],
      gallery: [{ file: 'f.png', kind: 'false-negative', score: 1, threshold: 2, label: 'hole', overlayPng: '"><script>' }],
      notes: [],
    });
    expect(html).toContain('No pixel ROC curves');
    expect(html).toContain('is malformed');
    expect(html).toContain('Overlay is not a base64 PNG');
    expect(html).toContain('No latency measurements');
    expect(html).toContain('Not available (no values): Image AUROC, Pixel AUROC, Pixel AP, AUPRO.');
    expect(html).not.toContain('<script');
    const pts = /<polyline class="curve" points="([^"]*)"/.exec(html)?.[1].split(' ') ?? [];
    expect(pts.length).toBeLessThanOrEqual(MAX_CURVE_POINTS);
    expect(pts.length).toBeGreaterThan(100);
  });
});

describe('writeReport', () => {
  let paths: { json: string; html: string };
  let html: string;

  beforeAll(async () => {
    paths = await writeReport(join(outDir, 'nested', 'report-dir'), report);
    html = readFileSync(paths.html, 'utf8');
  });

  test('report.json round-trips', () => {
    expect(paths.json).toBe(join(outDir, 'nested', 'report-dir', 'report.json'));
    expect(JSON.parse(readFileSync(paths.json, 'utf8'))).toEqual(report);
    expect(renderReportHtml(JSON.parse(readFileSync(paths.json, 'utf8')) as EvalReport)).toBe(html);
  });

  test('HTML is one self-contained, escaped document with the metrics', () => {
    expect(html.startsWith('<!DOCTYPE html>')).toBe(true);
    expect(html).toContain('<meta charset="utf-8">');
    // every metric value of the table is there
    for (const r of report.rows) {
      expect(html).toContain(`>${r.metrics.imageAuroc.toFixed(3)}</td>`);
      if (r.metrics.aupro !== null) expect(html).toContain(`>${r.metrics.aupro.toFixed(3)}</td>`);
    }
    expect(html).toContain('nll \u00b7 S=5');
    expect(html).toContain('mahalanobis \u00b7 S=10');
    expect(html).toContain('>scratch</th>');
    expect(html).toContain('>hole</th>');
    const bestAuroc = Math.max(...report.rows.filter((r) => r.subset === 'all').map((r) => r.metrics.imageAuroc));
    expect(html).toContain(`<td class="num best">${bestAuroc.toFixed(3)}</td>`); // best image AUROC (mahalanobis S=10)
    // escaping
    expect(html).toContain('a&lt;b&gt;&amp;&quot;c&quot;.png');
    expect(html).not.toContain(EVIL_NAME);
    expect(html).not.toContain('<script');
    expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    expect(html).toContain('mvtec/&lt;bottle&gt; &amp; &quot;friends&quot;');
    // self-contained: no external references
    expect(html).not.toMatch(/(src|href)="(?!data:|#)/);
    expect(html).not.toMatch(/https?:\/\/(?!www\.w3\.org\/2000\/svg")/);
    expect(html.match(/<img src="data:image\/png;base64,/g)).toHaveLength(2);
    expect(html.match(/<svg /g)).toHaveLength(2 + report.histograms.length);
    expect(html.match(/<polyline /g)).toHaveLength(report.rocImage.length + report.rocPixel.length);
  });

  test('the decision table and its markers on the image ROC curves', () => {
    const section = html.slice(html.indexOf('<section id="decisions">'), html.indexOf('<section id="roc">'));
    expect(section).toContain('<h2>Decisions</h2>');
    expect(html).toContain('<a href="#decisions">Decisions</a>');
    // one group per (definition, S): the bundle row and one row per operating point
    expect(section.match(/<tr class="group">/g)).toHaveLength(4);
    expect(section.match(/<tr class="decision-operating">/g)).toHaveLength(8);
    expect(section).toContain('>bundle (conformal, target 1%)</th>');
    expect(section).toContain('no threshold at this S'); // mahalanobis S=10
    // false alarms with the 95% interval, recall overall and per defect type, best recall
    expect(section).toContain(`>2/200 = 1% [0.12%, 3.6%]</td>`);
    expect(section).toContain('>80/120 = 66.7% [57.5%, 75%]</td>');
    expect(section).toContain('>22/40 = 55%</td>');
    expect(section).toContain('<th scope="col">Recall: scratch</th>');
    expect(section).toContain('>21 (99)</td>');
    expect(section).toContain('21 normals are too few for 0.01');
    expect(section).toContain('the bundle&#39;s calibration sample &lt;calibration.json&gt;');
    // markers: a filled circle per bundle threshold, an open diamond per operating point, on the image ROC only
    const rocs = html.slice(html.indexOf('<section id="roc">'), html.indexOf('<section id="histograms">'));
    const [image, pixel] = rocs.split('<figcaption>Pixel-level ROC</figcaption>');
    expect(image.match(/<circle class="marker bundle"/g)).toHaveLength(3);
    expect(image.match(/<rect class="marker operating"/g)).toHaveLength(8);
    expect(pixel).not.toContain('class="marker');
    // at its (false-alarm rate, recall): nll S=5's bundle point is (2/200, 80/120) on the 340-pixel plot
    expect(image).toContain(
      `<circle class="marker bundle" cx="${Math.round((52 + 0.01 * 340) * 100) / 100}" cy="${Math.round((14 + (1 - 80 / 120) * 340) * 100) / 100}" r="5"`,
    );
    expect(image).toContain('<title>nll \u00b7 S=5, bundle threshold (target 1%): threshold 1.3, false alarms 2/200 = 1%, recall 80/120 = 66.7%</title>');
  });

  test('renders in headless Chromium with no console errors or failed requests', async () => {
    if (!existsSync(CHROMIUM)) {
      const msg = `${CHROMIUM} not found: install the Debian package "chromium" to run the report rendering check`;
      if (process.env.CI) throw new Error(msg);
      console.warn(`SKIPPED report rendering check: ${msg}`);
      return;
    }
    const userDataDir = mkdtempSync(join(tmpdir(), 'invad-chromium-profile-'));
    const context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      viewport: { width: 1280, height: 900 },
    });
    try {
      const page = await context.newPage();
      const consoleErrors: string[] = [];
      const pageErrors: string[] = [];
      const failed: string[] = [];
      const foreign: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error') consoleErrors.push(m.text());
      });
      page.on('pageerror', (e) => pageErrors.push(String(e)));
      page.on('requestfailed', (r) => failed.push(`${r.url().slice(0, 100)}: ${r.failure()?.errorText ?? '?'}`));
      page.on('request', (r) => {
        if (!/^(file|data):/.test(r.url())) foreign.push(r.url());
      });
      const url = pathToFileURL(paths.html).href;
      const res = await page.goto(url, { waitUntil: 'load' });
      expect(res === null || res.ok()).toBe(true);

      const info = await page.evaluate(() => {
        const box = (e: Element) => {
          const r = e.getBoundingClientRect();
          return { w: r.width, h: r.height };
        };
        return {
          title: document.title,
          charset: document.characterSet,
          svgs: Array.from(document.querySelectorAll('svg.chart')).map((s) => ({ cls: s.getAttribute('class'), ...box(s) })),
          polylines: Array.from(document.querySelectorAll('svg.roc polyline')).map((p) => {
            const b = (p as SVGGraphicsElement).getBBox();
            return { w: b.width, h: b.height, n: (p as SVGPolylineElement).points.numberOfItems };
          }),
          bars: document.querySelectorAll('svg.hist rect.bar').length,
          imgs: Array.from(document.querySelectorAll('#gallery img')).map((i) => ({
            complete: (i as HTMLImageElement).complete,
            nw: (i as HTMLImageElement).naturalWidth,
            nh: (i as HTMLImageElement).naturalHeight,
            ...box(i),
          })),
          captions: Array.from(document.querySelectorAll('#gallery figcaption .file')).map((e) => e.textContent),
          metricRows: document.querySelectorAll('table.metrics tbody tr').length,
        };
      });
      const shot = join(outDir, 'report-screenshot.png');
      await page.screenshot({ path: shot, fullPage: true });
      console.log(`report: ${paths.html}\nscreenshot: ${shot}`);

      expect(consoleErrors).toEqual([]);
      expect(pageErrors).toEqual([]);
      expect(failed).toEqual([]);
      expect(foreign).toEqual([]);
      expect(info.charset).toBe('UTF-8');
      expect(info.title).toContain('mvtec/<bottle>');
      expect(info.svgs).toHaveLength(2 + report.histograms.length);
      for (const s of info.svgs) {
        expect(s.w).toBeGreaterThan(100);
        expect(s.h).toBeGreaterThan(100);
      }
      expect(info.polylines).toHaveLength(8);
      for (const p of info.polylines) {
        expect(p.n).toBeGreaterThan(100);
        expect(p.w).toBeGreaterThan(50);
        expect(p.h).toBeGreaterThan(50);
      }
      expect(info.bars).toBeGreaterThan(40);
      expect(info.imgs).toEqual([
        { complete: true, nw: 96, nh: 64, w: 96, h: 64 },
        { complete: true, nw: 150, nh: 100, w: 150, h: 100 },
      ]);
      expect(info.captions.some((c) => c?.endsWith(EVIL_NAME))).toBe(true);
      expect(info.metricRows).toBe(4 * (1 + 3)); // 4 groups: a title row + 3 subsets each
    } finally {
      await context.close();
      rmSync(userDataDir, { recursive: true, force: true });
    }
  });
});
