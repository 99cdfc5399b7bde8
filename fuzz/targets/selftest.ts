/**
 * Target `selftest`: checks the harness, not invad. Case seed s gives, by s % 5: ok, a typed
 * error, an untyped error, a crash (abort) and a hang, so a test can see that each is
 * classified, pinned to its seed and survived. Only run when named (`--target selftest`).
 */
import { InvalidArgumentError } from '../../src/util/errors';
import type { FuzzTarget } from '../protocol';

export const selftestTarget: FuzzTarget<null> = {
  name: 'selftest',
  description: 'the harness itself: one of each outcome, by seed',
  timeoutMs: 1500,
  setup() {
    return Promise.resolve(null);
  },
  async run(_state, ctx) {
    const kind = ['ok', 'typed', 'untyped', 'crash', 'hang'][ctx.seed % 5];
    ctx.note(`selftest ${kind}`);
    await ctx.call(kind, async () => {
      if (kind === 'typed') throw new InvalidArgumentError('x', 'a typed error');
      if (kind === 'untyped') throw new Error('an untyped error');
      if (kind === 'crash') process.abort();
      if (kind === 'hang') await new Promise(() => setInterval(() => undefined, 1000));
    });
  },
};
