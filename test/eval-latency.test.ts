/** invad eval's latency rows: a mean that says so, and real percentiles (issue 12, finding 13). */
import { latencyRow } from '../src/eval/evaluate';
import { renderReportHtml } from '../src/eval/report/html';
import type { EvalReport } from '../src/eval/report/types';

test('latencyRow: mean cost per image from the wall time, nearest-rank percentiles of per-image times', () => {
  // 100 images, 1..100 ms each, sharing a 400 ms batched run: the percentiles are not the mean.
  const times = Array.from({ length: 100 }, (_, i) => 100 - i);
  const row = latencyRow(3, 8, 400, times);
  expect(row).toEqual({ steps: 3, batchSize: 8, samples: 100, meanMsPerImage: 4, latencyMs: { median: 50, p90: 90, p99: 99 } });
  // Few samples: p99 is the largest, the median the lower middle one.
  expect(latencyRow(2, 1, 30, [5, 20, 10]).latencyMs).toEqual({ median: 10, p90: 20, p99: 20 });
  expect(latencyRow(2, 1, 0, []).samples).toBe(0);
});

test('the report labels the mean as a mean and shows the percentiles apart', () => {
  const report: EvalReport = {
    createdAt: 'now',
    dataset: 'd',
    model: 'm',
    machine: { cpu: 'c', cores: 1, node: 'v20', providers: [] },
    settings: {},
    rows: [],
    rocImage: [],
    rocPixel: [],
    histograms: [],
    latency: [
      latencyRow(
        3,
        8,
        400,
        Array.from({ length: 100 }, (_, i) => i + 1),
      ),
    ],
    gallery: [],
    notes: [],
  };
  const html = renderReportHtml(report);
  const section = html.slice(html.indexOf('<section id="latency">'));
  expect(section).toContain('Mean ms/image');
  expect(section).toContain('Latency p99 ms');
  // mean 4.00, median 50.0, p90 90.0, p99 99.0: four different numbers in the row
  expect(section).toMatch(/<td class="num">4\.00<\/td><td class="num">50\.0<\/td><td class="num">90\.0<\/td><td class="num">99\.0<\/td>/);
});
