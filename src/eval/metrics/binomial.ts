/**
 * Exact binomial confidence intervals (Clopper–Pearson), for rates measured on a few hundred
 * images at most: a false-alarm rate of 1 in 249 good parts, a recall of 3 out of 20.
 *
 * The interval inverts the binomial tail through the regularized incomplete beta function:
 * lower = B^-1(alpha/2; x, n - x + 1), upper = B^-1(1 - alpha/2; x + 1, n - x), with
 * lower = 0 at x = 0 and upper = 1 at x = n. The beta function is evaluated by its continued
 * fraction (modified Lentz) and inverted by Newton's method kept inside a bracket, to about
 * 1e-13 relative accuracy for the parameters an evaluation produces (a, b up to ~1e5).
 */
import { InvalidArgumentError } from '../../util/errors';
import { invalidArgument } from '../../util/validate';

/** Lanczos coefficients (g = 7, n = 9), double precision. */
const LANCZOS = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905, -0.13857109526572012,
  9.9843695780195716e-6, 1.5056327351493116e-7,
];

/** ln Gamma(z) for z > 0 (Lanczos approximation, relative error ~1e-15). */
function logGamma(z: number): number {
  if (z < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * z)) - logGamma(1 - z); // reflection
  const x = z - 1;
  let sum = LANCZOS[0];
  for (let i = 1; i < LANCZOS.length; i++) sum += LANCZOS[i] / (x + i);
  const t = x + 7.5;
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(sum);
}

/** ln B(a, b). */
function logBeta(a: number, b: number): number {
  return logGamma(a) + logGamma(b) - logGamma(a + b);
}

const TINY = 1e-300;
const EPS = 1e-16;

/** The continued fraction of I_x(a, b) (Numerical Recipes' betacf), by the modified Lentz method. */
function betaContinuedFraction(a: number, b: number, x: number): number {
  const qab = a + b;
  const qap = a + 1;
  const qam = a - 1;
  let c = 1;
  let d = 1 - (qab * x) / qap;
  if (Math.abs(d) < TINY) d = TINY;
  d = 1 / d;
  let h = d;
  // Converges in O(sqrt(max(a, b))) terms; the cap is far beyond what any count here needs.
  for (let m = 1; m <= 100_000; m++) {
    const m2 = 2 * m;
    let aa = (m * (b - m) * x) / ((qam + m2) * (a + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < TINY) d = TINY;
    c = 1 + aa / c;
    if (Math.abs(c) < TINY) c = TINY;
    d = 1 / d;
    h *= d * c;
    aa = (-(a + m) * (qab + m) * x) / ((a + m2) * (qap + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < TINY) d = TINY;
    c = 1 + aa / c;
    if (Math.abs(c) < TINY) c = TINY;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < EPS) return h;
  }
  return h; // not reached for finite a, b; the last convergent is the best there is
}

function checkShape(a: number, b: number): void {
  if (typeof a !== 'number' || !(a > 0) || !Number.isFinite(a)) throw invalidArgument('a', 'a finite number > 0', a);
  if (typeof b !== 'number' || !(b > 0) || !Number.isFinite(b)) throw invalidArgument('b', 'a finite number > 0', b);
}

/**
 * The regularized incomplete beta function I_x(a, b): the CDF at x of a Beta(a, b) variable,
 * as scipy's `betainc(a, b, x)`. 0 at x <= 0 and 1 at x >= 1.
 *
 * @throws InvalidArgumentError unless a and b are finite and > 0 and x is a number (not NaN)
 */
export function regularizedIncompleteBeta(x: number, a: number, b: number): number {
  checkShape(a, b);
  if (typeof x !== 'number' || Number.isNaN(x)) throw invalidArgument('x', 'a number', x);
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const front = Math.exp(a * Math.log(x) + b * Math.log1p(-x) - logBeta(a, b));
  // The fraction converges fast on this side of the mean; the other side uses I_x(a, b) = 1 - I_{1-x}(b, a).
  if (x < (a + 1) / (a + b + 2)) return (front * betaContinuedFraction(a, b, x)) / a;
  return 1 - (front * betaContinuedFraction(b, a, 1 - x)) / b;
}

/** A starting point for the inverse (Numerical Recipes' invbetai, after Abramowitz and Stegun 26.5.22). */
function initialGuess(p: number, a: number, b: number): number {
  if (a >= 1 && b >= 1) {
    const pp = p < 0.5 ? p : 1 - p;
    const t = Math.sqrt(-2 * Math.log(pp));
    let z = (2.30753 + t * 0.27061) / (1 + t * (0.99229 + t * 0.04481)) - t;
    if (p < 0.5) z = -z;
    const al = (z * z - 3) / 6;
    const h = 2 / (1 / (2 * a - 1) + 1 / (2 * b - 1));
    const w = (z * Math.sqrt(al + h)) / h - (1 / (2 * b - 1) - 1 / (2 * a - 1)) * (al + 5 / 6 - 2 / (3 * h));
    return a / (a + b * Math.exp(2 * w));
  }
  const lna = Math.log(a / (a + b));
  const lnb = Math.log(b / (a + b));
  const t = Math.exp(a * lna) / a;
  const u = Math.exp(b * lnb) / b;
  const w = t + u;
  return p < t / w ? (a * w * p) ** (1 / a) : 1 - (b * w * (1 - p)) ** (1 / b);
}

/**
 * The inverse of {@link regularizedIncompleteBeta} in x: the p-quantile of Beta(a, b), as scipy's
 * `betaincinv(a, b, p)`. 0 at p = 0 and 1 at p = 1.
 *
 * Newton steps on I_x(a, b) - p, whose derivative is the Beta density, inside a bracket that
 * every evaluation narrows; a step that would leave the bracket bisects it instead (geometrically
 * while the bracket spans orders of magnitude), so it converges for any shape.
 *
 * @throws InvalidArgumentError unless a and b are finite and > 0 and 0 <= p <= 1
 */
export function inverseRegularizedIncompleteBeta(p: number, a: number, b: number): number {
  checkShape(a, b);
  if (typeof p !== 'number' || !(p >= 0 && p <= 1)) throw invalidArgument('p', 'a probability in [0, 1]', p);
  if (p === 0) return 0;
  if (p === 1) return 1;
  const logNorm = logBeta(a, b);
  let lo = 0;
  let hi = 1;
  let x = Math.min(1 - 1e-12, Math.max(1e-300, initialGuess(p, a, b)));
  if (!(x > 0 && x < 1)) x = 0.5;
  for (let iter = 0; iter < 2000; iter++) {
    const f = regularizedIncompleteBeta(x, a, b) - p;
    if (f === 0) return x;
    if (f > 0) hi = x;
    else lo = x;
    const density = Math.exp((a - 1) * Math.log(x) + (b - 1) * Math.log1p(-x) - logNorm);
    let next = x - f / density;
    if (!(next > lo && next < hi)) {
      // Newton left the bracket (or the density under- or overflowed): bisect it.
      next = lo > 0 && hi / lo > 16 ? Math.sqrt(lo * hi) : lo === 0 && hi < 1e-3 ? hi / 16 : (lo + hi) / 2;
    }
    if (Math.abs(next - x) <= 1e-15 * x || hi - lo <= 1e-15 * hi) return next;
    x = next;
  }
  return x;
}

/** An exact two-sided confidence interval for a binomial proportion. */
export interface ProportionInterval {
  lower: number;
  upper: number;
}

/**
 * The Clopper–Pearson ("exact") interval for a binomial proportion after `successes` out of
 * `trials`: the set of p under which neither tail of the observed count has probability below
 * (1 - confidence)/2. Conservative: it covers the true p at least `confidence` of the time.
 * With no trials it is [0, 1].
 *
 * @example clopperPearson(0, 20) // { lower: 0, upper: 0.16843... }
 * @example clopperPearson(3, 20) // { lower: 0.03207..., upper: 0.37893... }
 * @throws InvalidArgumentError unless trials and successes are integers with
 *   0 <= successes <= trials, and 0 < confidence < 1
 */
export function clopperPearson(successes: number, trials: number, confidence = 0.95): ProportionInterval {
  if (!Number.isSafeInteger(trials) || trials < 0) throw invalidArgument('trials', 'an integer >= 0', trials);
  if (!Number.isSafeInteger(successes) || successes < 0) throw invalidArgument('successes', 'an integer >= 0', successes);
  if (successes > trials) throw new InvalidArgumentError('successes', `Expected successes to be at most trials (${trials}) but received ${successes}`);
  if (typeof confidence !== 'number' || !(confidence > 0 && confidence < 1)) throw invalidArgument('confidence', 'a number in (0, 1)', confidence);
  const tail = (1 - confidence) / 2;
  const x = successes;
  const n = trials;
  return {
    lower: x === 0 ? 0 : inverseRegularizedIncompleteBeta(tail, x, n - x + 1),
    upper: x === n ? 1 : inverseRegularizedIncompleteBeta(1 - tail, x + 1, n - x),
  };
}

/** A count out of a total, its rate and the rate's exact 95% interval. */
export interface Proportion extends ProportionInterval {
  count: number;
  total: number;
  /** count / total; NaN (null in JSON) when total is 0 */
  rate: number;
}

/**
 * `count` out of `total` with its 95% Clopper–Pearson interval ({@link clopperPearson}).
 *
 * @throws InvalidArgumentError as {@link clopperPearson}
 */
export function proportion(count: number, total: number): Proportion {
  const { lower, upper } = clopperPearson(count, total);
  return { count, total, rate: total > 0 ? count / total : NaN, lower, upper };
}
