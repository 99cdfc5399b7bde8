/** A progress bar on stderr when it is a terminal; silent otherwise, so piped output stays clean. */
import { SingleBar, Presets } from 'cli-progress';

export interface Progress {
  update(done: number): void;
  stop(): void;
}

export function makeProgress(total: number, label: string): Progress {
  if (!process.stderr.isTTY) return { update: () => undefined, stop: () => undefined };
  const bar = new SingleBar(
    { format: `${label} [{bar}] {value}/{total} {percentage}% eta {eta_formatted}`, stream: process.stderr, hideCursor: true },
    Presets.shades_classic,
  );
  bar.start(total, 0);
  return { update: (done) => bar.update(done), stop: () => bar.stop() };
}
