/**
 * The decision block (report.decisions) as text: the number formats the HTML table shares, and
 * Markdown tables that `invad eval` and `invad calibrate --validation` print, ready for a README.
 */
import type { DecisionReport, DecisionRow, Proportion } from './types';

const DASH = '\u2014';

function finite(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}

/** A rate in percent: two significant digits below 1%, one decimal above ('0.40%', '2.2%', '100%'). */
export function formatPercent(v: number | null | undefined): string {
  if (!finite(v)) return DASH;
  const p = v * 100;
  if (p === 0) return '0%';
  const text = p < 1 ? String(Number(p.toPrecision(2))) : p.toFixed(1).replace(/\.0$/, '');
  return `${text}%`;
}

/** A threshold on any score scale, to 4 significant digits. */
export function formatThreshold(v: number | null | undefined): string {
  if (!finite(v)) return DASH;
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : String(Number(v.toPrecision(4)));
}

/** 'count/total = rate [lower, upper]', the interval at 95% (Clopper–Pearson); short: no interval. */
export function formatProportion(p: Proportion | null | undefined, short = false): string {
  if (!p || !finite(p.total)) return DASH;
  const head = `${p.count}/${p.total} = ${formatPercent(p.rate)}`;
  return short || p.total === 0 ? head : `${head} [${formatPercent(p.lower)}, ${formatPercent(p.upper)}]`;
}

/** The defect types of the rows' per-type recall, A-Z. */
export function defectTypes(rows: readonly DecisionRow[]): string[] {
  const types = new Set<string>();
  for (const r of rows) for (const t of r.bundle?.recallByType ?? []) types.add(t.type);
  return [...types].sort();
}

/** Markdown cells: '|' would end a cell, and a line break a row. */
function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/[\r\n]+/g, ' ');
}

function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]) => `| ${cells.map(cell).join(' | ')} |`;
  return [line(head), line(head.map(() => '---')), ...rows.map(line)].join('\n');
}

/**
 * Two Markdown tables: the bundle's own thresholds on the test set (false alarms on good images
 * with the 95% interval, recall overall and per defect type), and the operating points (the
 * threshold calibration from normals sets for each target rate, and what it gives).
 *
 * @param imageSet - what the images are, for the captions: 'the test set', 'the validation images'
 */
export function decisionMarkdown(report: DecisionReport, imageSet = 'the test set'): string {
  const types = defectTypes(report.rows);
  const withBundle = report.rows.filter((r) => r.bundle);
  const parts: string[] = [];
  if (withBundle.length) {
    parts.push(
      `The bundle's thresholds on ${imageSet} (flagged: score > threshold; 95% Clopper\u2013Pearson intervals):`,
      '',
      table(
        ['score', 'S', 'target rate', 'method', 'threshold', 'false alarms (good)', 'recall (defective)', ...types],
        withBundle.map((r) => {
          const b = r.bundle!;
          const byType = new Map(b.recallByType.map((t) => [t.type, t.recall]));
          return [
            r.scoreDefinition,
            String(r.steps),
            formatPercent(b.targetFalseAlarmRate),
            b.method ?? DASH,
            formatThreshold(b.threshold),
            formatProportion(b.falseAlarms),
            formatProportion(b.recall),
            ...types.map((t) => formatProportion(byType.get(t), true)),
          ];
        }),
      ),
      '',
    );
  } else {
    parts.push('The bundle has no thresholds at these S (uncalibrated).', '');
  }
  parts.push(
    `Operating points: thresholds calibrated from ${report.normals.description}. Best recall: the highest recall on the ROC of ${imageSet} at that false-alarm rate (a threshold picked on those very images; a bound, not a setting).`,
    '',
    table(
      ['score', 'S', 'target rate', 'normals (needed)', 'threshold', 'false alarms (good)', 'recall (defective)', 'best recall'],
      report.rows.flatMap((r) =>
        r.operatingPoints.map((op) => [
          r.scoreDefinition,
          String(r.steps),
          formatPercent(op.targetFalseAlarmRate),
          `${op.normals} (${op.normalsNeeded})`,
          formatThreshold(op.outcome?.threshold),
          op.outcome ? formatProportion(op.outcome.falseAlarms) : DASH,
          op.outcome ? formatProportion(op.outcome.recall) : DASH,
          formatPercent(op.bestRecall),
        ]),
      ),
    ),
  );
  return parts.join('\n') + '\n';
}
