/** Writes an evaluation report as report.json (the data) and report.html (the rendering). */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { renderReportHtml } from './html';
import type { EvalReport } from './types';

async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
  await writeFile(tmp, text, 'utf8');
  await rename(tmp, path);
}

/** Creates `dir` if needed and writes report.json and report.html into it; returns their absolute paths. */
export async function writeReport(dir: string, report: EvalReport): Promise<{ json: string; html: string }> {
  const root = resolve(dir);
  await mkdir(root, { recursive: true });
  const json = join(root, 'report.json');
  const html = join(root, 'report.html');
  // Render first, so a report that cannot be rendered leaves no half-written pair behind.
  const page = renderReportHtml(report);
  await writeAtomic(json, `${JSON.stringify(report, null, 2)}\n`);
  await writeAtomic(html, page);
  return { json, html };
}
