/**
 * Target `selftest`: checks the harness, not invad. Case seed s gives, by s % 5: ok, a typed
 * error, an untyped error, a crash (abort) and a hang, so a test can see that each is
 * classified, pinned to its seed and survived. Seeds from 1000 on are slow cases instead: each
 * asks for more time (ctx.allow) and then takes longer than the target's timeout, and must end
 * ok. Only run when named (`--target selftest`).
 */
import { InvalidArgumentError } from '../../src/util/errors';
import type { FuzzTarget } from '../protocol';

const TIMEOUT_MS = 1500;
export const SELFTEST_SLOW_FROM = 1000;

export const selftestTarget: FuzzTarget<null> = {
  name: 'selftest',
  description: 'the harness itself: one of each outcome, by seed',
  timeoutMs: TIMEOUT_MS,
  setup() {
    return Promise.resolve(null);
  },
  async run(_state, ctx) {
    const kind = ctx.seed >= SELFTEST_SLOW_FROM ? 'slow' : ['ok', 'typed', 'untyped', 'crash', 'hang'][ctx.seed % 5];
    ctx.note(`selftest ${kind}`);
    if (kind === 'slow') ctx.allow(4 * TIMEOUT_MS, 'selftest slow');
    await ctx.call(kind, async () => {
      if (kind === 'typed') throw new InvalidArgumentError('x', 'a typed error');
      if (kind === 'untyped') throw new Error('an untyped error');
      if (kind === 'crash') process.abort();
      if (kind === 'hang') await new Promise(() => setInterval(() => undefined, 1000));
      if (kind === 'slow') await new Promise((resolve) => setTimeout(resolve, 2 * TIMEOUT_MS));
    });
  },
};
