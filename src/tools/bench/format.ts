/** Plain-text reports of the benchmarks (the JSON report has every number). */
import type { CompareResult } from './compare';
import type { LineResult } from './line';
import { type MachineInfo, machineLine, type CpuLoad } from './machine';
import type { SoakResult } from './soak';
import type { SharedStage, StageBenchRow } from './stages';
import type { Summary } from './stats';

const ms = (v: number) => (Number.isFinite(v) ? (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) : '-');
const pct = (v: number) => `${(v * 100).toFixed(0)}%`;

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

const tri = (s: Summary) => [ms(s.median), ms(s.p90), ms(s.p99)];

export function cpuLine(c: CpuLoad): string {
  return `machine busy ${pct(c.machineBusy)} (this benchmark ${pct(c.benchmark)}, other processes ${pct(c.others)}, steal ${pct(c.steal)}), load average ${c.loadAverage.join(' ')}`;
}

export function formatMachine(m: MachineInfo): string {
  return `machine: ${machineLine(m)}; onnxruntime backends: ${m.ortBackends.join(', ')}; load average at start ${m.loadAverage.join(' ')}`;
}

export function formatStageRow(r: StageBenchRow): string {
  const s = r.stages;
  const sharedRow = (label: string, st: SharedStage): string[] => [label, ...tri(st.perImage), ...tri(st.perBatch)];
  const imageRow = (label: string, st: Summary): string[] => [label, ...tri(st), '', '', ''];
  const rows = [
    imageRow('decode', s.decode),
    imageRow('preprocess', s.preprocess),
    imageRow('queue', s.queue),
    sharedRow('backbone', s.backbone),
    ...s.unet.map((u, i) => sharedRow(`unet call ${i + 1}`, u)),
    sharedRow('unet total', s.unetTotal),
    sharedRow('fused kernels', s.kernels),
    sharedRow('resize+postprocess', s.resize),
    imageRow('other', s.other),
    imageRow('end to end', s.endToEnd),
    ['call (wall)', '', '', '', ...tri(s.call)],
  ];
  const head = `${r.input} inputs, batch ${r.batch}${r.modelBatch !== r.batch ? ` (model runs of ${r.modelBatch})` : ''}, S=${r.steps}: ${r.runs} runs, ${r.images} images, ${r.imagesPerSecond.toFixed(1)} images/s, peak RSS ${r.peakRssMiB.toFixed(0)} MiB`;
  return `${head}\n${table(['stage (ms)', 'median', 'p90', 'p99', 'batch med', 'p90', 'p99'], rows)}\n${cpuLine(r.cpu)}`;
}

export function formatStages(rows: StageBenchRow[]): string {
  const summary = table(
    ['input', 'batch', 'S', 'images/s', 'e2e med', 'e2e p90', 'e2e p99', 'call med', 'unet/img', 'others'],
    rows.map((r) => [
      r.input,
      String(r.batch),
      String(r.steps),
      r.imagesPerSecond.toFixed(1),
      ...tri(r.stages.endToEnd),
      ms(r.stages.call.median),
      ms(r.stages.unetTotal.perImage.median),
      pct(r.cpu.others),
    ]),
  );
  return `${rows.map(formatStageRow).join('\n\n')}\n\nsummary (ms; "others" = CPU share of other processes during the row)\n${summary}`;
}

export function formatLine(r: LineResult): string {
  const lines = [
    `line scenario: ${r.concurrency} producers, ${r.fpsMode === 'each' ? `${r.fps} fps each (triggered together)` : `${r.fps} fps shared round-robin`}, offered ${r.offeredFps.toFixed(1)} frames/s for ${(r.durationMs / 1000).toFixed(1)} s; deadline ${ms(r.deadlineMs)} ms (one frame period)`,
    `frames: ${r.frames.offered} offered, ${r.frames.completed} completed, ${r.frames.failed} failed, ${r.frames.dropped} dropped (in-flight cap)`,
    `latency (arrival -> result) ms: median ${ms(r.latency.median)}, p90 ${ms(r.latency.p90)}, p99 ${ms(r.latency.p99)}, max ${ms(r.latency.max)}`,
    `deadline misses: ${r.misses} (${(r.missRate * 100).toFixed(2)}%), misses + drops ${(r.missOrDropRate * 100).toFixed(2)}%`,
    `timer lag ms: median ${ms(r.dispatchLag.median)}, p99 ${ms(r.dispatchLag.p99)}; images per model run: median ${r.batchSize.median}, max ${r.batchSize.max}`,
    `queue depth (in flight, sampled every ${r.queueDepth.sampleMs} ms): max ${r.queueDepth.max}, mean ${r.queueDepth.mean.toFixed(2)}`,
  ];
  if (r.perSecond.length) {
    lines.push(
      table(
        ['second', 'arrived', 'misses', 'dropped', 'p99 ms', 'max depth'],
        r.perSecond.map((s) => [String(s.t), String(s.arrived), String(s.misses), String(s.dropped), ms(s.p99Ms), String(s.maxInFlight)]),
      ),
    );
  }
  if (r.saturation) {
    const s = r.saturation;
    lines.push(
      `saturation (${s.concurrency} closed loops, ${(s.durationMs / 1000).toFixed(1)} s): ${s.imagesPerSecond.toFixed(1)} images/s, latency median ${ms(s.latency.median)} p90 ${ms(s.latency.p90)} p99 ${ms(s.latency.p99)} ms, images per model run median ${s.batchSize.median}`,
    );
  }
  lines.push(`peak RSS ${r.peakRssMiB.toFixed(0)} MiB; ${cpuLine(r.cpu)}`);
  return lines.join('\n');
}

export function formatSoak(r: SoakResult): string {
  const rows = [r.start, ...r.samples].map((s) => [
    String(s.images),
    s.elapsedS.toFixed(1),
    s.rssMiB.toFixed(1),
    s.heapUsedMiB.toFixed(1),
    s.externalMiB.toFixed(1),
    String(s.fds ?? '-'),
    Object.entries(s.resources)
      .map(([k, v]) => `${k}:${v}`)
      .join(' ') || '-',
  ]);
  const g = r.growth;
  const res =
    Object.entries(g.resources)
      .map(([k, v]) => `${k} ${v > 0 ? '+' : ''}${v}`)
      .join(', ') || 'none';
  return [
    `soak: ${r.images} images in sequence (${r.input} inputs), ${r.imagesPerSecond.toFixed(1)} images/s, latency median ${ms(r.latency.median)} p99 ${ms(r.latency.p99)} ms${r.gc ? '; full GC before each sample' : ''}`,
    table(['images', 's', 'RSS MiB', 'heap MiB', 'external', 'fds', 'active handles'], rows),
    `RSS growth ${g.from} -> ${g.to} images: ${g.rssFromMiB.toFixed(1)} -> ${g.rssToMiB.toFixed(1)} MiB (${g.rssPct >= 0 ? '+' : ''}${g.rssPct.toFixed(2)}%, limit ${g.limitPct}%); heap ${g.heapPct >= 0 ? '+' : ''}${g.heapPct.toFixed(1)}%; fd growth ${g.fds ?? 'n/a'}; handle growth ${res}`,
    `verdict: ${g.pass ? 'PASS' : 'FAIL'}; peak RSS ${r.peakRssMiB.toFixed(0)} MiB; ${cpuLine(r.cpu)}`,
  ].join('\n');
}

export function formatCompare(r: CompareResult): string {
  const t = r.torch as { torch?: string; threads?: number; mkldnn?: boolean; blas?: string; buildType?: string };
  const head = [
    `compare: ${r.preset} preset (${r.params.toLocaleString('en-US')} parameters, ${r.weights}), ${r.unit}`,
    `invad: ${r.engines.join(' and ')} engines, ${r.providers.join(',')}, ${r.threads} intra-op threads, thread spinning ${r.threadSpinning}; PyTorch ${t.torch} eager (no_grad, eval), ${t.threads} threads, MKL-DNN ${t.mkldnn ? 'on' : 'off'}, BLAS ${t.blas ?? '?'}, build ${t.buildType ?? '?'}`,
    `PyTorch variants: ${r.torchVariants.map((v) => (v === 'default' ? "default (PyTorch's own convolution dispatch)" : 'onednn (every convolution on oneDNN)')).join('; ')}`,
  ];
  const rows = r.rows.flatMap((x) => {
    const head = (i: number) => (i === 0 ? [String(x.batch), String(x.steps)] : ['', '']);
    const engineRows = x.engines.map((e, i) => [
      ...head(i),
      `invad/${e.engine}`,
      ms(e.time.median),
      ms(e.time.p90),
      ...r.torchVariants.map((v) => {
        const q = x.ratios.find((y) => y.engine === e.engine && y.variant === v);
        return q ? `${q.speedup.toFixed(2)}x (${q.pairSpeedup.median.toFixed(2)}x)` : '-';
      }),
      e.engine === x.targetEngine && x.target !== null ? `${x.target}x ${x.met ? 'met' : 'MISSED'}` : '',
      `${ms(e.backboneMs)} | ${e.unetCallsMs.map(ms).join('+')} | ${ms(e.kernelMs)}`,
      e.parityRelDiff.toExponential(1),
      i === 0 ? pct(x.cpu.others) : '',
    ]);
    const torchRows = x.references.map((ref) => [
      '',
      '',
      `PyTorch/${ref.variant}`,
      ms(ref.torch.median),
      ms(ref.torch.p90),
      ...r.torchVariants.map(() => ''),
      '',
      '',
      '',
      '',
    ]);
    return [...engineRows, ...torchRows];
  });
  const out = [
    ...head,
    table(
      [
        'batch',
        'S',
        'stack',
        'median',
        'p90',
        ...r.torchVariants.map((v) => `vs ${v} (per rep)`),
        'target',
        'stand-in | UNet calls | kernels',
        'parity',
        'others',
      ],
      rows,
    ),
    `(ms per inversion of the whole batch; vs X = PyTorch/X median / invad median, in parentheses the median of the ratios within each rep; the stand-in backbone only copies the features; the target is checked for invad/${r.rows[0]?.targetEngine ?? '?'} (the Detector's default engine) against the faster PyTorch variant; parity = max relative difference of sum(x_T^2) against PyTorch/${r.torchVariants[0]}; others = CPU share of other processes)`,
  ];
  for (const e of r.engineErrors) out.push(`invad/${e.engine} not timed: ${e.error}`);
  if (r.profile) {
    const p = r.profile;
    const list = (ops: Array<{ op: string; calls: number; selfMs: number }>) =>
      ops
        .slice(0, 8)
        .map((o) => `${o.op} ${ms(o.selfMs)} ms (${o.calls})`)
        .join(', ');
    for (const tp of p.torch) out.push(`profile (batch ${p.batch}, S=${p.steps}): PyTorch/${tp.variant} ${ms(tp.wallMs)} ms wall: ${list(tp.ops)}`);
    out.push(`profile (batch ${p.batch}, S=${p.steps}): invad/ORT ${ms(p.invad.wallMs)} ms wall: ${list(p.invad.ops)}`);
  }
  for (const e2e of r.endToEnd ?? []) {
    out.push(
      `invad end to end, ${e2e.engine} engine (Detector, raw frames, one-Conv stride-16 backbone), ms:`,
      table(
        ['batch', 'S', 'call med', 'call p90', 'per image', 'images/s', 'backbone', 'unet', 'kernels', 'resize', 'queue'],
        e2e.rows.map((e) => [
          String(e.batch),
          String(e.steps),
          ms(e.stages.call.median),
          ms(e.stages.call.p90),
          ms(e.stages.call.median / e.batch),
          e.imagesPerSecond.toFixed(1),
          ms(e.stages.backbone.perBatch.median),
          ms(e.stages.unetTotal.perBatch.median),
          ms(e.stages.kernels.perBatch.median),
          ms(e.stages.resize.perBatch.median),
          ms(e.stages.queue.median),
        ]),
      ),
    );
  }
  out.push(`peak RSS ${r.peakRssMiB.toFixed(0)} MiB`);
  return out.join('\n');
}

/** The markdown table the README carries: the Detector's default engine against each PyTorch variant. */
export function compareMarkdown(results: CompareResult[]): string {
  const variants = [...new Set(results.flatMap((r) => r.torchVariants))];
  const head = `| preset | threads | batch | S | invad engine | invad ms | ${variants.map((v) => `PyTorch ${v} ms | speed-up`).join(' | ')} | target |`;
  const rule = `|${' --- |'.repeat(6 + 2 * variants.length + 1)}`;
  const rows = results.flatMap((r) =>
    r.rows.flatMap((x) =>
      x.engines.map((e) => {
        const cells = variants.map((v) => {
          const ref = x.references.find((y) => y.variant === v);
          const q = x.ratios.find((y) => y.engine === e.engine && y.variant === v);
          return ref && q ? `${ms(ref.torch.median)} | ${q.speedup.toFixed(2)}x` : '- | -';
        });
        const target = e.engine !== x.targetEngine || x.target === null ? '' : `${x.target}x ${x.met ? 'met' : 'missed'}`;
        return `| ${r.preset} | ${r.threads} | ${x.batch} | ${x.steps} | ${e.engine} | ${ms(e.time.median)} | ${cells.join(' | ')} | ${target} |`;
      }),
    ),
  );
  return [head, rule, ...rows].join('\n');
}
