/**
 * The diffusion schedule and the DDIM inversion coefficients (docs/method.md, "Schedule",
 * "Timesteps" and "Inversion"). Everything is computed in float64 like numpy does, then handed
 * to the kernels as per-step scalars.
 */
import { InvalidArgumentError } from '../util/errors';

export interface LinearScheduleSpec {
  kind: 'linear';
  betaStart: number;
  betaEnd: number;
  trainSteps: number;
}

/**
 * The most inversion steps S a detector runs: S is the number of UNet calls per image, and the
 * native engine takes at most this many. Both engines enforce the same rule,
 * 1 <= S <= min(trainSteps, MAX_STEPS), so a bundle or a call never works on one and fails on the other.
 */
export const MAX_STEPS = 1000;

/** The largest S a schedule of `trainSteps` timesteps can run: min(trainSteps, MAX_STEPS). */
export function maxSteps(trainSteps: number): number {
  return Math.min(trainSteps, MAX_STEPS);
}

export const DEFAULT_SCHEDULE: LinearScheduleSpec = { kind: 'linear', betaStart: 1e-4, betaEnd: 0.02, trainSteps: 1000 };

/** Linear betas, numpy.linspace(betaStart, betaEnd, T) in float64. */
export function linearBetas(spec: LinearScheduleSpec = DEFAULT_SCHEDULE): Float64Array {
  const { betaStart, betaEnd, trainSteps: T } = spec;
  const betas = new Float64Array(T);
  if (T === 1) {
    betas[0] = betaStart;
    return betas;
  }
  const step = (betaEnd - betaStart) / (T - 1);
  for (let i = 0; i < T; i++) betas[i] = betaStart + i * step;
  betas[T - 1] = betaEnd; // linspace pins the end point exactly
  return betas;
}

/** abar_t = prod_{s<=t} (1 - beta_s). */
export function alphasCumprod(spec: LinearScheduleSpec = DEFAULT_SCHEDULE): Float64Array {
  const betas = linearBetas(spec);
  const abar = new Float64Array(betas.length);
  let acc = 1;
  for (let i = 0; i < betas.length; i++) {
    acc *= 1 - betas[i];
    abar[i] = acc;
  }
  return abar;
}

/**
 * Why a schedule cannot be inverted, or null when it can. The DDIM coefficients divide by
 * sqrt(abar_t); with betas near 1 the product abar_t underflows to 0 (betaStart 0.999 does by
 * t = 108) and a coefficient becomes 0/0 = NaN. Every abar_t being a positive normal number keeps
 * them finite for every S: the inversion's |a| <= 1 and |b| <= 2 then.
 */
export function scheduleProblem(spec: LinearScheduleSpec): string | null {
  const abar = alphasCumprod(spec);
  for (let t = 0; t < abar.length; t++) {
    if (!(abar[t] >= MIN_NORMAL && abar[t] <= 1)) {
      return `the cumulative product of alphas (1 - beta) is ${abar[t]} at t = ${t} of ${spec.trainSteps}, so the DDIM coefficients are not finite; use smaller betas or fewer trainSteps`;
    }
  }
  return null;
}

/** The smallest positive normal double (2^-1022). */
const MIN_NORMAL = 2 ** -1022;

/** Python's round(): halves go to the even neighbour, which space_timesteps relies on. */
function roundHalfEven(v: number): number {
  const floor = Math.floor(v);
  const diff = v - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * guided-diffusion's `space_timesteps(T, "S")` for a single section: S timesteps
 * evenly spaced over [0, T-1], rounded half-to-even. S=3 of 1000 gives [0, 500, 999].
 */
export function spaceTimesteps(trainSteps: number, steps: number): number[] {
  const max = maxSteps(trainSteps);
  if (!Number.isInteger(steps) || steps < 1 || steps > max) {
    throw new InvalidArgumentError('steps', `Expected an integer from 1 to ${max} for steps but received ${String(steps)}`);
  }
  const stride = steps === 1 ? 1 : (trainSteps - 1) / (steps - 1);
  const out: number[] = [];
  let cur = 0;
  for (let i = 0; i < steps; i++) {
    out.push(roundHalfEven(cur));
    cur += stride;
  }
  return out;
}

/** One inversion step: x_next = a*x + b*eps_theta(x, t). */
export interface InversionStep {
  /** the original timestep index handed to the UNet */
  t: number;
  abar: number;
  abarNext: number;
  a: number;
  b: number;
}

/**
 * The S Euler steps of the deterministic DDIM inversion from the clean features
 * (state at the first timestep) to x_T. After the last timestep abar_next = 0, so
 * the last step has a = 0, b = 1 and the final state is the last eps.
 */
export function inversionSteps(steps: number, spec: LinearScheduleSpec = DEFAULT_SCHEDULE): InversionStep[] {
  const abar = alphasCumprod(spec);
  const ts = spaceTimesteps(spec.trainSteps, steps);
  return ts.map((t, i) => {
    const abarT = abar[t];
    const abarNext = i + 1 < ts.length ? abar[ts[i + 1]] : 0;
    const a = Math.sqrt(abarNext) / Math.sqrt(abarT);
    const b = Math.sqrt(1 - abarNext) - (Math.sqrt(abarNext) * Math.sqrt(1 - abarT)) / Math.sqrt(abarT);
    return { t, abar: abarT, abarNext, a, b };
  });
}
