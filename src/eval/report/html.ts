/**
 * Renders an EvalReport as one self-contained HTML5 file: inline CSS, charts
 * as inline SVG built here, gallery overlays as data: URLs, no scripts and no
 * external resources (a Content-Security-Policy meta tag enforces the latter).
 * Every piece of text from the report is escaped.
 */
import type { CurvePoints, DecisionOutcome, EvalReport, EvalRow, GalleryItem, MetricSet, RocSeries, ScoreHistogram } from './types';
import { downsampleCurve, MAX_CURVE_POINTS } from './types';
import { defectTypes, formatPercent, formatProportion, formatThreshold } from './decision-text';

/** Escapes text for HTML element content and double- or single-quoted attribute values (also inside inline SVG). */
export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);
}

const DASH = '\u2014';

function isNum(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}

/** Metric values (0..1) with 3 decimals; null, NaN and missing as a dash. */
function fmtMetric(v: number | null | undefined): string {
  return isNum(v) ? v.toFixed(3) : DASH;
}

/** A score on any scale, to 4 significant digits. */
function fmtScore(v: number): string {
  if (!isNum(v)) return DASH;
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
  return String(Number(v.toPrecision(4)));
}

function fmtMs(v: number): string {
  if (!isNum(v)) return DASH;
  return v.toFixed(Math.abs(v) < 10 ? 2 : 1);
}

function fmtCoord(v: number): string {
  return (Math.round(v * 100) / 100).toString();
}

function seriesKey(scoreDefinition: string, steps: number): string {
  return `${scoreDefinition}\u0000${steps}`;
}

function seriesLabel(scoreDefinition: string, steps: number): string {
  return `${scoreDefinition} \u00b7 S=${steps}`;
}

// Colour-blind friendly categorical palette (Okabe-Ito, plus two greys-free extras).
const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#D55E00', '#56B4E9', '#7F6000', '#000000', '#8C564B', '#17BECF'];
const DASHES = ['', '6 3', '2 3', '8 3 2 3'];

interface SeriesStyle {
  color: string;
  dash: string;
}

/** One colour and dash pattern per (score definition, S), shared by every chart. */
function seriesStyles(report: EvalReport): Map<string, SeriesStyle> {
  const styles = new Map<string, SeriesStyle>();
  const add = (d: string, s: number) => {
    const key = seriesKey(d, s);
    if (styles.has(key)) return;
    const i = styles.size;
    styles.set(key, { color: PALETTE[i % PALETTE.length], dash: DASHES[Math.floor(i / PALETTE.length) % DASHES.length] });
  };
  for (const r of report.rows ?? []) add(r.scoreDefinition, r.steps);
  for (const r of report.rocImage ?? []) add(r.scoreDefinition, r.steps);
  for (const r of report.rocPixel ?? []) add(r.scoreDefinition, r.steps);
  for (const h of report.histograms ?? []) add(h.scoreDefinition, h.steps);
  return styles;
}

/** Round tick values covering [lo, hi], about `count` of them. */
export function niceTicks(lo: number, hi: number, count = 6): { ticks: number[]; step: number } {
  if (!isNum(lo) || !isNum(hi)) return { ticks: [], step: 1 };
  if (hi < lo) [lo, hi] = [hi, lo];
  if (hi === lo) {
    const pad = Math.abs(lo) > 0 ? Math.abs(lo) * 0.5 : 1;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / Math.max(1, count - 1);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  const step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * mag;
  const ticks: number[] = [];
  const first = Math.ceil(lo / step - 1e-9);
  const last = Math.floor(hi / step + 1e-9);
  for (let k = first; k <= last && ticks.length < 50; k++) ticks.push(k * step + 0); // + 0: no -0
  return { ticks, step };
}

function fmtTick(v: number, step: number): string {
  if (Math.max(Math.abs(v), step) >= 1e6 || step < 1e-4) return v.toExponential(1);
  let decimals = 0;
  while (decimals < 8 && Math.abs(Math.round(step * 10 ** decimals) - step * 10 ** decimals) > 1e-6) decimals++;
  const s = v.toFixed(decimals);
  return /^-0(\.0*)?$/.test(s) ? s.slice(1) : s;
}

// ---------------------------------------------------------------- charts

const ROC = { left: 52, top: 14, size: 340, right: 18 };

/** A threshold's point on a ROC curve: the bundle's own (filled circle) or an operating point's (open diamond). */
interface RocMarker {
  fpr: number;
  tpr: number;
  kind: 'bundle' | 'operating';
  label: string;
}

/** The decision block's points on the image ROC curves, by series. */
function decisionMarkers(report: EvalReport): Map<string, RocMarker[]> {
  const markers = new Map<string, RocMarker[]>();
  const point = (o: DecisionOutcome, kind: RocMarker['kind'], what: string): RocMarker => ({
    fpr: o.falseAlarms?.rate,
    tpr: o.recall?.rate,
    kind,
    label: `${what}: threshold ${formatThreshold(o.threshold)}, false alarms ${formatProportion(o.falseAlarms, true)}, recall ${formatProportion(o.recall, true)}`,
  });
  for (const r of report.decisions?.rows ?? []) {
    const list: RocMarker[] = [];
    if (r.bundle) list.push(point(r.bundle, 'bundle', `bundle threshold (target ${formatPercent(r.bundle.targetFalseAlarmRate)})`));
    for (const op of r.operatingPoints ?? [])
      if (op.outcome) list.push(point(op.outcome, 'operating', `calibrated for ${formatPercent(op.targetFalseAlarmRate)}`));
    markers.set(
      seriesKey(r.scoreDefinition, r.steps),
      list.filter((m) => isNum(m.fpr) && isNum(m.tpr)),
    );
  }
  return markers;
}

function rocChart(
  title: string,
  series: RocSeries[],
  styles: Map<string, SeriesStyle>,
  auroc: Map<string, number | null>,
  markers = new Map<string, RocMarker[]>(),
): string {
  const { left, top, size, right } = ROC;
  const width = left + size + right;
  const legendTop = top + size + 46;
  const height = legendTop + series.length * 18 + 6;
  const x = (v: number) => Math.round((left + Math.min(1, Math.max(0, v)) * size) * 100) / 100;
  const y = (v: number) => Math.round((top + (1 - Math.min(1, Math.max(0, v))) * size) * 100) / 100;
  const parts: string[] = [];
  parts.push(
    `<svg class="chart roc" xmlns="http://www.w3.org/2000/svg" role="img" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<title>${escapeHtml(title)}</title>`,
    `<rect x="${left}" y="${top}" width="${size}" height="${size}" class="plot-bg"/>`,
  );
  for (let k = 0; k <= 10; k += 2) {
    const v = k / 10;
    parts.push(
      `<line class="grid" x1="${x(v)}" y1="${top}" x2="${x(v)}" y2="${top + size}"/>`,
      `<line class="grid" x1="${left}" y1="${y(v)}" x2="${left + size}" y2="${y(v)}"/>`,
      `<line class="axis" x1="${x(v)}" y1="${top + size}" x2="${x(v)}" y2="${top + size + 5}"/>`,
      `<line class="axis" x1="${left - 5}" y1="${y(v)}" x2="${left}" y2="${y(v)}"/>`,
      `<text class="tick" x="${x(v)}" y="${top + size + 18}" text-anchor="middle">${v.toFixed(1)}</text>`,
      `<text class="tick" x="${left - 8}" y="${y(v) + 4}" text-anchor="end">${v.toFixed(1)}</text>`,
    );
  }
  parts.push(
    `<line class="diagonal" x1="${x(0)}" y1="${y(0)}" x2="${x(1)}" y2="${y(1)}"/>`,
    `<rect x="${left}" y="${top}" width="${size}" height="${size}" class="frame"/>`,
    `<text class="axis-label" x="${left + size / 2}" y="${top + size + 36}" text-anchor="middle">false positive rate</text>`,
    `<text class="axis-label" transform="translate(14 ${top + size / 2}) rotate(-90)" text-anchor="middle">true positive rate</text>`,
  );
  series.forEach((s, i) => {
    const key = seriesKey(s.scoreDefinition, s.steps);
    const style = styles.get(key) ?? { color: PALETTE[0], dash: '' };
    const dash = style.dash ? ` stroke-dasharray="${style.dash}"` : '';
    const pts = curvePoints(s.curve)
      .map(([f, t]) => `${fmtCoord(x(f))},${fmtCoord(y(t))}`)
      .join(' ');
    const label = seriesLabel(s.scoreDefinition, s.steps);
    if (pts) {
      parts.push(`<polyline class="curve" points="${pts}" stroke="${style.color}"${dash}><title>${escapeHtml(label)}</title></polyline>`);
    }
    for (const m of markers.get(key) ?? []) {
      const [cx, cy] = [fmtCoord(x(m.fpr)), fmtCoord(y(m.tpr))];
      const tip = `<title>${escapeHtml(`${label}, ${m.label}`)}</title>`;
      parts.push(
        m.kind === 'bundle'
          ? `<circle class="marker bundle" cx="${cx}" cy="${cy}" r="5" fill="${style.color}">${tip}</circle>`
          : `<rect class="marker operating" x="${fmtCoord(x(m.fpr) - 3.5)}" y="${fmtCoord(y(m.tpr) - 3.5)}" width="7" height="7" transform="rotate(45 ${cx} ${cy})" stroke="${style.color}">${tip}</rect>`,
      );
    }
    const ly = legendTop + i * 18;
    const a = auroc.get(key);
    const suffix = isNum(a) ? ` (AUROC ${a.toFixed(3)})` : '';
    parts.push(
      `<line class="legend-line" x1="${left}" y1="${ly}" x2="${left + 26}" y2="${ly}" stroke="${style.color}"${dash}/>`,
      `<text class="legend" x="${left + 34}" y="${ly + 4}">${escapeHtml(label + suffix)}${pts ? '' : ' \u2014 no finite points'}</text>`,
    );
  });
  parts.push('</svg>');
  return parts.join('');
}

/** The curve's finite points, downsampled if the report carries more than it should. */
function curvePoints(curve: CurvePoints | undefined): Array<[number, number]> {
  if (!curve || !Array.isArray(curve.fpr) || !Array.isArray(curve.tpr)) return [];
  const n = Math.min(curve.fpr.length, curve.tpr.length);
  let fpr = curve.fpr.slice(0, n);
  let tpr = curve.tpr.slice(0, n);
  const out: Array<[number, number]> = [];
  if (n > MAX_CURVE_POINTS) ({ fpr, tpr } = downsampleCurve(fpr, tpr));
  for (let i = 0; i < fpr.length; i++) if (isNum(fpr[i]) && isNum(tpr[i])) out.push([fpr[i], tpr[i]]);
  return out;
}

const HIST = { left: 56, top: 12, width: 340, height: 190, right: 20 };
const NORMAL_COLOR = '#0072B2';
const ANOMALOUS_COLOR = '#D55E00';

function sum(a: number[]): number {
  let s = 0;
  for (const v of a) if (isNum(v)) s += v;
  return s;
}

function histogramChart(h: ScoreHistogram): string {
  const label = seriesLabel(h.scoreDefinition, h.steps);
  const bins = Array.isArray(h.normal) ? h.normal.length : -1;
  if (
    !Array.isArray(h.edges) ||
    !Array.isArray(h.anomalous) ||
    bins < 1 ||
    h.anomalous.length !== bins ||
    h.edges.length !== bins + 1 ||
    !h.edges.every(isNum)
  ) {
    return `<p class="warn">Histogram ${escapeHtml(label)} is malformed (needs edges.length = normal.length + 1 = anomalous.length + 1, finite edges).</p>`;
  }
  const { left, top, width: w, height: ht, right } = HIST;
  const width = left + w + right;
  const legendTop = top + ht + 58;
  const height = legendTop + 12;
  const nNormal = sum(h.normal);
  const nAnom = sum(h.anomalous);
  const share = (c: number[], total: number) => c.map((v) => (total > 0 && isNum(v) ? v / total : 0));
  const sNormal = share(h.normal, nNormal);
  const sAnom = share(h.anomalous, nAnom);
  let lo = h.edges[0];
  let hi = h.edges[bins];
  if (hi < lo) [lo, hi] = [hi, lo];
  const span = hi > lo ? hi - lo : 1;
  const x = (v: number) => left + ((v - lo) / span) * w;
  const yMaxData = Math.max(1e-9, ...sNormal, ...sAnom);
  const yStep = niceTicks(0, yMaxData, 5).step;
  const yMax = Math.max(yStep, Math.ceil(yMaxData / yStep - 1e-9) * yStep); // top grid line on the frame
  const yt = { step: yStep, ticks: Array.from({ length: Math.round(yMax / yStep) + 1 }, (_, k) => k * yStep) };
  const y = (v: number) => top + ht - (v / yMax) * ht;
  const parts: string[] = [
    `<svg class="chart hist" xmlns="http://www.w3.org/2000/svg" role="img" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<title>${escapeHtml(`Image scores, ${label}`)}</title>`,
    `<rect x="${left}" y="${top}" width="${w}" height="${ht}" class="plot-bg"/>`,
  ];
  for (const t of yt.ticks) {
    parts.push(
      `<line class="grid" x1="${left}" y1="${fmtCoord(y(t))}" x2="${left + w}" y2="${fmtCoord(y(t))}"/>`,
      `<line class="axis" x1="${left - 5}" y1="${fmtCoord(y(t))}" x2="${left}" y2="${fmtCoord(y(t))}"/>`,
      `<text class="tick" x="${left - 8}" y="${fmtCoord(y(t) + 4)}" text-anchor="end">${escapeHtml(fmtTick(t, yt.step))}</text>`,
    );
  }
  const bars = (shares: number[], counts: number[], color: string, cls: string) => {
    for (let i = 0; i < bins; i++) {
      if (!(shares[i] > 0)) continue;
      const x0 = x(Math.min(h.edges[i], h.edges[i + 1]));
      const x1 = x(Math.max(h.edges[i], h.edges[i + 1]));
      const y0 = y(shares[i]);
      parts.push(
        `<rect class="bar ${cls}" x="${fmtCoord(x0)}" y="${fmtCoord(y0)}" width="${fmtCoord(Math.max(0.5, x1 - x0))}" height="${fmtCoord(top + ht - y0)}" fill="${color}">` +
          `<title>${escapeHtml(`${cls} [${fmtScore(h.edges[i])}, ${fmtScore(h.edges[i + 1])}): ${counts[i]}`)}</title></rect>`,
      );
    }
  };
  bars(sNormal, h.normal, NORMAL_COLOR, 'normal');
  bars(sAnom, h.anomalous, ANOMALOUS_COLOR, 'anomalous');
  const xt = niceTicks(lo, hi, 6);
  for (const t of xt.ticks) {
    if (t < lo - 1e-9 * span || t > hi + 1e-9 * span) continue;
    parts.push(
      `<line class="axis" x1="${fmtCoord(x(t))}" y1="${top + ht}" x2="${fmtCoord(x(t))}" y2="${top + ht + 5}"/>`,
      `<text class="tick" x="${fmtCoord(x(t))}" y="${top + ht + 18}" text-anchor="middle">${escapeHtml(fmtTick(t, xt.step))}</text>`,
    );
  }
  parts.push(
    `<rect x="${left}" y="${top}" width="${w}" height="${ht}" class="frame"/>`,
    `<text class="axis-label" x="${left + w / 2}" y="${top + ht + 36}" text-anchor="middle">image score</text>`,
    `<text class="axis-label" transform="translate(14 ${top + ht / 2}) rotate(-90)" text-anchor="middle">share of class</text>`,
    `<rect x="${left}" y="${legendTop - 9}" width="12" height="12" fill="${NORMAL_COLOR}" class="legend-swatch"/>`,
    `<text class="legend" x="${left + 18}" y="${legendTop + 1}">normal (n=${escapeHtml(nNormal)})</text>`,
    `<rect x="${left + 150}" y="${legendTop - 9}" width="12" height="12" fill="${ANOMALOUS_COLOR}" class="legend-swatch"/>`,
    `<text class="legend" x="${left + 168}" y="${legendTop + 1}">anomalous (n=${escapeHtml(nAnom)})</text>`,
    '</svg>',
  );
  return parts.join('');
}

// ---------------------------------------------------------------- sections

function settingValue(v: unknown): string {
  if (typeof v === 'string') return escapeHtml(v);
  let s: string | undefined;
  try {
    s = JSON.stringify(v);
  } catch {
    s = undefined;
  }
  return `<code>${escapeHtml(s ?? String(v))}</code>`;
}

function header(report: EvalReport): string {
  const m = report.machine ?? { cpu: '', cores: 0, node: '', providers: [] };
  const settings = Object.entries(report.settings ?? {});
  return [
    `<header><h1>invad evaluation report</h1>`,
    `<table class="kv"><tbody>`,
    `<tr><th scope="row">Dataset</th><td>${escapeHtml(report.dataset)}</td></tr>`,
    `<tr><th scope="row">Model</th><td>${escapeHtml(report.model)}</td></tr>`,
    `<tr><th scope="row">Created</th><td>${escapeHtml(report.createdAt)}</td></tr>`,
    `<tr><th scope="row">Machine</th><td>${escapeHtml(m.cpu)} \u00b7 ${escapeHtml(m.cores)} cores \u00b7 Node ${escapeHtml(m.node)} \u00b7 providers: ${escapeHtml((m.providers ?? []).join(', ') || DASH)}</td></tr>`,
    `</tbody></table>`,
    settings.length
      ? `<details open><summary>Settings</summary><table class="kv settings"><tbody>${settings
          .map(([k, v]) => `<tr><th scope="row">${escapeHtml(k)}</th><td>${settingValue(v)}</td></tr>`)
          .join('')}</tbody></table></details>`
      : '',
    `<nav><a href="#metrics">Metrics</a>${report.decisions?.rows?.length ? ' <a href="#decisions">Decisions</a>' : ''} <a href="#roc">ROC curves</a> <a href="#histograms">Score histograms</a> <a href="#latency">Latency</a> <a href="#gallery">Gallery</a>${
      report.notes?.length ? ' <a href="#notes">Notes</a>' : ''
    }</nav>`,
    `</header>`,
  ].join('');
}

const METRIC_COLUMNS: Array<{ key: keyof MetricSet; title: string }> = [
  { key: 'imageAuroc', title: 'Image AUROC' },
  { key: 'imageAp', title: 'Image AP' },
  { key: 'imageF1Max', title: 'Image F1-max' },
  { key: 'pixelAuroc', title: 'Pixel AUROC' },
  { key: 'pixelAp', title: 'Pixel AP' },
  { key: 'aupro', title: 'AUPRO' },
];

/** Rows grouped by (score definition in first-seen order, S ascending); 'all' first, then defect types A-Z. */
function groupRows(rows: EvalRow[]): Array<{ scoreDefinition: string; steps: number; rows: EvalRow[] }> {
  const defOrder = new Map<string, number>();
  for (const r of rows) if (!defOrder.has(r.scoreDefinition)) defOrder.set(r.scoreDefinition, defOrder.size);
  const groups = new Map<string, { scoreDefinition: string; steps: number; rows: EvalRow[] }>();
  for (const r of rows) {
    const key = seriesKey(r.scoreDefinition, r.steps);
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { scoreDefinition: r.scoreDefinition, steps: r.steps, rows: [] }));
    g.rows.push(r);
  }
  const out = [...groups.values()];
  out.sort((a, b) => (defOrder.get(a.scoreDefinition) ?? 0) - (defOrder.get(b.scoreDefinition) ?? 0) || a.steps - b.steps);
  for (const g of out) {
    g.rows.sort((a, b) => (a.subset === 'all' ? -1 : b.subset === 'all' ? 1 : a.subset < b.subset ? -1 : a.subset > b.subset ? 1 : 0));
  }
  return out;
}

function metricsTable(report: EvalReport): string {
  const rows = report.rows ?? [];
  if (!rows.length) return `<section id="metrics"><h2>Metrics</h2><p class="empty">No metrics.</p></section>`;
  const columns = METRIC_COLUMNS.filter((c) => rows.some((r) => isNum(r.metrics?.[c.key])));
  // best value of each metric among the 'all' rows, to highlight (higher is better for all of them)
  const best = new Map<keyof MetricSet, number>();
  for (const c of columns) {
    const vals = rows
      .filter((r) => r.subset === 'all')
      .map((r) => r.metrics?.[c.key])
      .filter(isNum);
    if (vals.length > 1) best.set(c.key, Math.max(...vals));
  }
  const head = `<thead><tr><th scope="col">Subset</th>${columns.map((c) => `<th scope="col">${c.title}</th>`).join('')}</tr></thead>`;
  const body = groupRows(rows)
    .map((g) => {
      const title = `<tr class="group"><th scope="rowgroup" colspan="${columns.length + 1}">${escapeHtml(seriesLabel(g.scoreDefinition, g.steps))}</th></tr>`;
      const lines = g.rows.map((r) => {
        const cells = columns.map((c) => {
          const v = r.metrics?.[c.key];
          const isBest = r.subset === 'all' && isNum(v) && best.get(c.key) === v;
          return `<td class="num${isBest ? ' best' : ''}">${fmtMetric(v)}</td>`;
        });
        return `<tr class="${r.subset === 'all' ? 'subset-all' : 'subset-defect'}"><th scope="row">${escapeHtml(r.subset)}</th>${cells.join('')}</tr>`;
      });
      return `<tbody>${title}${lines.join('')}</tbody>`;
    })
    .join('');
  const hidden = METRIC_COLUMNS.filter((c) => !columns.includes(c)).map((c) => c.title);
  const note = hidden.length ? `<p class="small">Not available (no values): ${hidden.join(', ')}.</p>` : '';
  return `<section id="metrics"><h2>Metrics</h2><table class="metrics">${head}${body}</table><p class="small">Bold: best of the \u201call\u201d rows.</p>${note}</section>`;
}

/**
 * The decision block: per score definition and S, the bundle's threshold and each operating
 * point on the test set (false alarms on good images with the 95% interval, recall overall and
 * per defect type). Absent from older reports and in the reconstruction ablation.
 */
function decisionSection(report: EvalReport): string {
  const d = report.decisions;
  if (!d?.rows?.length) return '';
  const types = defectTypes(d.rows);
  const head = [
    'Threshold set by',
    'Threshold',
    'Normals (needed)',
    'False alarms (good)',
    'Recall (defective)',
    ...types.map((t) => `Recall: ${t}`),
    'Best recall on the ROC',
  ];
  const line = (what: string, o: DecisionOutcome | null, normals: string, best: number | null, cls: string, note?: string) => {
    const byType = new Map((o?.recallByType ?? []).map((t) => [t.type, t.recall]));
    const cells = [
      `<th scope="row">${escapeHtml(what)}${note ? ` <span class="small">(${escapeHtml(note)})</span>` : ''}</th>`,
      `<td class="num">${escapeHtml(formatThreshold(o?.threshold))}</td>`,
      `<td class="num">${escapeHtml(normals)}</td>`,
      `<td class="num">${escapeHtml(formatProportion(o?.falseAlarms))}</td>`,
      `<td class="num">${escapeHtml(formatProportion(o?.recall))}</td>`,
      ...types.map((t) => `<td class="num">${escapeHtml(formatProportion(byType.get(t), true))}</td>`),
      `<td class="num">${escapeHtml(formatPercent(best))}</td>`,
    ];
    return `<tr class="${cls}">${cells.join('')}</tr>`;
  };
  const body = d.rows
    .map((r) => {
      const title = `<tr class="group"><th scope="rowgroup" colspan="${head.length}">${escapeHtml(seriesLabel(r.scoreDefinition, r.steps))}</th></tr>`;
      const b = r.bundle;
      const bundle = b
        ? line(`bundle (${b.method ?? DASH}, target ${formatPercent(b.targetFalseAlarmRate)})`, b, DASH, null, 'decision-bundle')
        : line('bundle', null, DASH, null, 'decision-bundle', 'no threshold at this S');
      const ops = (r.operatingPoints ?? []).map((op) =>
        line(
          `calibrated for ${formatPercent(op.targetFalseAlarmRate)}`,
          op.outcome,
          `${op.normals} (${op.normalsNeeded})`,
          op.bestRecall,
          'decision-operating',
          op.note,
        ),
      );
      return `<tbody>${title}${bundle}${ops.join('')}</tbody>`;
    })
    .join('');
  return [
    `<section id="decisions"><h2>Decisions</h2>`,
    `<p class="small">Each threshold applied to the test set: an image is flagged when its score is above it. False alarms: good images flagged; recall: defective images flagged; intervals at 95% (Clopper\u2013Pearson). `,
    `Operating points: the threshold calibration sets for the target rate from ${escapeHtml(d.normals?.description ?? DASH)}; \u201cneeded\u201d is the fewest normals that carry the rate (n + 1 \u2265 1/rate). `,
    `Best recall: the highest recall on the test ROC at that rate, with a threshold picked on the test set itself (a bound, not a setting).</p>`,
    `<table class="decisions"><thead><tr>${head.map((h) => `<th scope="col">${escapeHtml(h)}</th>`).join('')}</tr></thead>${body}</table></section>`,
  ].join('');
}

function rocSection(report: EvalReport, styles: Map<string, SeriesStyle>): string {
  const imageAuroc = new Map<string, number | null>();
  const pixelAuroc = new Map<string, number | null>();
  for (const r of report.rows ?? []) {
    if (r.subset !== 'all') continue;
    imageAuroc.set(seriesKey(r.scoreDefinition, r.steps), r.metrics?.imageAuroc ?? null);
    pixelAuroc.set(seriesKey(r.scoreDefinition, r.steps), r.metrics?.pixelAuroc ?? null);
  }
  const figure = (title: string, series: RocSeries[] | undefined, auroc: Map<string, number | null>, empty: string, markers?: Map<string, RocMarker[]>) =>
    `<figure class="chart-box"><figcaption>${escapeHtml(title)}</figcaption>${
      series?.length ? rocChart(title, series, styles, auroc, markers) : `<p class="empty">${escapeHtml(empty)}</p>`
    }</figure>`;
  return [
    `<section id="roc"><h2>ROC curves</h2>`,
    report.decisions?.rows?.length
      ? `<p class="small">On the image curves: \u25cf the bundle's threshold, \u25c7 the thresholds calibrated from normals for false-alarm rates of ${escapeHtml((report.decisions.rates ?? []).map(formatPercent).join(', '))} (see <a href="#decisions">Decisions</a>).</p>`
      : '',
    `<div class="charts">`,
    figure('Image-level ROC', report.rocImage, imageAuroc, 'No image ROC curves.', decisionMarkers(report)),
    figure('Pixel-level ROC', report.rocPixel, pixelAuroc, 'No pixel ROC curves (no ground-truth masks).'),
    `</div></section>`,
  ].join('');
}

function histogramSection(report: EvalReport): string {
  const hs = report.histograms ?? [];
  if (!hs.length) return `<section id="histograms"><h2>Score histograms</h2><p class="empty">No histograms.</p></section>`;
  const byDef = new Map<string, ScoreHistogram[]>();
  for (const h of hs) {
    const list = byDef.get(h.scoreDefinition) ?? [];
    list.push(h);
    byDef.set(h.scoreDefinition, list);
  }
  const parts = [
    `<section id="histograms"><h2>Score histograms</h2><p class="small">Image scores of normal and anomalous test images; each class's bars sum to 1.</p>`,
  ];
  for (const [def, list] of byDef) {
    parts.push(`<h3>${escapeHtml(def)}</h3><div class="charts">`);
    for (const h of [...list].sort((a, b) => a.steps - b.steps)) {
      parts.push(`<figure class="chart-box"><figcaption>S=${escapeHtml(h.steps)}</figcaption>${histogramChart(h)}</figure>`);
    }
    parts.push('</div>');
  }
  parts.push('</section>');
  return parts.join('');
}

function latencySection(report: EvalReport): string {
  const rows = [...(report.latency ?? [])].sort((a, b) => a.steps - b.steps || a.batchSize - b.batchSize);
  if (!rows.length) return `<section id="latency"><h2>Latency</h2><p class="empty">No latency measurements.</p></section>`;
  const body = rows
    .map((r) => {
      const cells = [r.steps, r.batchSize, r.samples].map((v) => `<td class="num">${escapeHtml(v)}</td>`);
      const ms = [r.meanMsPerImage, r.latencyMs?.median, r.latencyMs?.p90, r.latencyMs?.p99].map((v) => `<td class="num">${fmtMs(v)}</td>`);
      return `<tr>${cells.join('')}${ms.join('')}</tr>`;
    })
    .join('');
  const head = ['S', 'Batch size', 'Images', 'Mean ms/image', 'Latency median ms', 'Latency p90 ms', 'Latency p99 ms']
    .map((h) => `<th scope="col">${h}</th>`)
    .join('');
  const note =
    '<p class="small">Mean ms/image is the run\'s wall time over its images (1 / throughput). Latency is each image\'s time from the start of its decoding to its result; in a batch it includes waiting for the batch. Percentiles are nearest-rank over the images timed.</p>';
  return `<section id="latency"><h2>Latency</h2>${note}<table class="latency"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table></section>`;
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** Width and height from a base64 PNG's IHDR chunk, or null if it is not a PNG. */
function pngSize(b64: string): { width: number; height: number } | null {
  const head = Buffer.from(b64.slice(0, 32), 'base64');
  if (head.length < 24 || head.readUInt32BE(0) !== 0x89504e47 || head.toString('latin1', 12, 16) !== 'IHDR') return null;
  const width = head.readUInt32BE(16);
  const height = head.readUInt32BE(20);
  return width > 0 && height > 0 ? { width, height } : null;
}

function galleryFigure(item: GalleryItem): string {
  const b64 = typeof item.overlayPng === 'string' ? item.overlayPng : '';
  const size = b64.length % 4 === 0 && BASE64.test(b64) ? pngSize(b64) : null;
  const rel = !isNum(item.score) || !isNum(item.threshold) ? '?' : item.score > item.threshold ? '&gt;' : item.score < item.threshold ? '&lt;' : '=';
  const kind = item.kind === 'false-positive' ? 'false positive' : item.kind === 'false-negative' ? 'false negative' : String(item.kind);
  const img = size
    ? `<img src="data:image/png;base64,${b64}" width="${size.width}" height="${size.height}" alt="${escapeHtml(`${kind}: ${item.file}`)}">`
    : `<p class="warn">Overlay is not a base64 PNG.</p>`;
  return [
    `<figure class="gallery-item ${item.kind === 'false-negative' ? 'fn' : 'fp'}">`,
    img,
    `<figcaption><span class="file">${escapeHtml(item.file)}</span><br>`,
    `<span class="badge">${escapeHtml(kind)}</span> label: ${escapeHtml(item.label)}<br>`,
    `score ${escapeHtml(fmtScore(item.score))} ${rel} threshold ${escapeHtml(fmtScore(item.threshold))}</figcaption>`,
    `</figure>`,
  ].join('');
}

function gallerySection(report: EvalReport): string {
  const items = report.gallery ?? [];
  if (!items.length) return `<section id="gallery"><h2>Gallery</h2><p class="empty">No misclassified images.</p></section>`;
  const parts = [`<section id="gallery"><h2>Gallery</h2><p class="small">Heat-map overlays; magenta outline: ground-truth defect mask.</p>`];
  for (const [kind, title] of [
    ['false-positive', 'False positives (normal images scored above the threshold)'],
    ['false-negative', 'False negatives (defective images scored below the threshold)'],
  ] as const) {
    const list = items.filter((g) => g.kind === kind);
    if (!list.length) continue;
    parts.push(`<h3>${title}</h3><div class="gallery">${list.map(galleryFigure).join('')}</div>`);
  }
  const other = items.filter((g) => g.kind !== 'false-positive' && g.kind !== 'false-negative');
  if (other.length) parts.push(`<h3>Other</h3><div class="gallery">${other.map(galleryFigure).join('')}</div>`);
  parts.push('</section>');
  return parts.join('');
}

function notesSection(report: EvalReport): string {
  const notes = report.notes ?? [];
  if (!notes.length) return '';
  return `<section id="notes"><h2>Notes</h2><ul>${notes.map((n) => `<li>${escapeHtml(n)}</li>`).join('')}</ul></section>`;
}

const CSS = `
:root{color-scheme:light}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0 auto;padding:16px 24px 48px;max-width:1280px;color:#1b1b1b;background:#fff}
h1{font-size:22px;margin:0 0 10px}h2{font-size:18px;margin:28px 0 10px;border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:15px;margin:16px 0 8px}
table{border-collapse:collapse;margin:6px 0}th,td{padding:3px 10px;border-bottom:1px solid #e6e6e6;text-align:left;vertical-align:top}
thead th{background:#f3f3f3;border-bottom:2px solid #ccc}
table.kv th{color:#555;font-weight:600;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.best{font-weight:700}
tr.group th{background:#eef3f8;font-weight:600;border-top:2px solid #c9d6e3}
tr.subset-defect th{font-weight:400;padding-left:24px;color:#444}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
nav a{margin-right:12px}
details summary{cursor:pointer;color:#555;margin:6px 0}
.small{font-size:12px;color:#666}.empty{color:#777;font-style:italic}.warn{color:#a40000}
.charts{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0}.chart-box figcaption{font-weight:600;margin-bottom:4px}
svg.chart{max-width:100%;height:auto;display:block}
svg .plot-bg{fill:#fafafa}svg .frame{fill:none;stroke:#888}
svg .grid{stroke:#e3e3e3;stroke-width:1}svg .axis{stroke:#888}
svg .diagonal{stroke:#999;stroke-dasharray:4 4}
svg .curve{fill:none;stroke-width:2;stroke-linejoin:round}
svg .legend-line{stroke-width:2.5}
svg .marker.bundle{stroke:#fff;stroke-width:1.5}svg .marker.operating{fill:#fff;stroke-width:1.5}
tr.decision-operating th{font-weight:400;padding-left:24px;color:#444}
table.decisions{font-size:13px}table.decisions td.num{white-space:nowrap}
svg text{font-family:inherit;fill:#333}svg .tick{font-size:11px}svg .axis-label{font-size:12px;fill:#555}svg .legend{font-size:12px}
svg .bar{fill-opacity:.55;stroke:none}svg .legend-swatch{fill-opacity:.7}
.gallery{display:flex;flex-wrap:wrap;gap:14px}
.gallery-item{border:1px solid #ddd;border-radius:4px;padding:6px;max-width:280px;background:#fcfcfc}
.gallery-item img{display:block;max-width:100%;height:auto;image-rendering:auto}
.gallery-item figcaption{font-size:12px;margin-top:4px}
.gallery-item .file{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
.badge{display:inline-block;padding:0 6px;border-radius:8px;color:#fff;font-size:11px}
.fp .badge{background:#b35900}.fn .badge{background:#00609c}
footer{margin-top:32px;font-size:12px;color:#888}
`;

/** The whole report as one self-contained HTML5 document. */
export function renderReportHtml(report: EvalReport): string {
  const styles = seriesStyles(report);
  const title = `invad evaluation \u2014 ${report.dataset} \u2014 ${report.model}`;
  return [
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
    // Self-contained on purpose: the page may load nothing but its own inline styles and data: images.
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">\n`,
    '<link rel="icon" href="data:,">\n',
    `<title>${escapeHtml(title)}</title>\n<style>${CSS}</style>\n</head>\n<body>\n`,
    header(report),
    '\n<main>\n',
    metricsTable(report),
    '\n',
    decisionSection(report),
    '\n',
    rocSection(report, styles),
    '\n',
    histogramSection(report),
    '\n',
    latencySection(report),
    '\n',
    gallerySection(report),
    '\n',
    notesSection(report),
    '\n</main>\n',
    `<footer>Generated by invad at ${escapeHtml(report.createdAt)}.</footer>\n</body>\n</html>\n`,
  ].join('');
}
