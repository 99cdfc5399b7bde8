/**
 * The JSON fields one scored image gives, in `invad score`'s output lines and in `invad serve`'s
 * `POST /v1/score` answers: one function, so the two never drift apart.
 */
import type { ScoreResult } from '../../runtime/detector';

/** The fields of a ScoreResult that `invad score` prints (everything but the maps). */
export type ScoreFields = Pick<ScoreResult, 'score' | 'isAnomalous' | 'threshold' | 'components' | 'steps' | 'width' | 'height' | 'timings'>;

/** The printable fields of a result, in a fixed order; the maps are left out (they are large). */
export function scoreFields(r: ScoreResult): ScoreFields {
  return {
    score: r.score,
    isAnomalous: r.isAnomalous,
    threshold: r.threshold,
    components: r.components,
    steps: r.steps,
    width: r.width,
    height: r.height,
    timings: r.timings,
  };
}
