import { alphasCumprod, inversionSteps, linearBetas, spaceTimesteps } from '../src/runtime/schedule';
import { InvalidArgumentError } from '../src/util/errors';

// Reference values computed independently in plain Python float64:
// betas = 1e-4 + (0.02 - 1e-4) * i / 999, abar = running product of (1 - beta),
// timesteps by guided-diffusion's space_timesteps (Python round, half to even).
const ABAR: Record<number, number> = {
  0: 0.9999,
  250: 0.5214230306185275,
  333: 0.31862485496644566,
  500: 0.07779665836502386,
  666: 0.010984230178593665,
  749: 0.003350550438936774,
  999: 4.0358297653756754e-5,
};

const STEPS: Record<number, Array<[t: number, a: number, b: number]>> = {
  2: [
    [0, 0.006353135752299448, 0.999916289290047],
    [999, 0, 1],
  ],
  3: [
    [0, 0.27893447045660164, 0.9575248443163901],
    [500, 0.022776445456524918, 0.9781072769002072],
    [999, 0, 1],
  ],
  4: [
    [0, 0.5644968738961356, 0.8198095394161246],
    [333, 0.1856713893430838, 0.8412294344746746],
    [666, 0.06061520900337282, 0.9396984365819332],
    [999, 0, 1],
  ],
  5: [
    [0, 0.7221323826947114, 0.6845712530206749],
    [250, 0.3862650078310142, 0.6930989239074719],
    [500, 0.20752843385083236, 0.7990308194989462],
    [749, 0.1097509629591105, 0.8904128750261906],
    [999, 0, 1],
  ],
};

const relClose = (got: number, want: number) => expect(Math.abs(got - want)).toBeLessThanOrEqual(1e-12 * Math.max(1, Math.abs(want)));

describe('schedule', () => {
  test('linear betas run from 1e-4 to 0.02 over T = 1000', () => {
    const b = linearBetas();
    expect(b).toHaveLength(1000);
    expect(b[0]).toBe(1e-4);
    expect(b[999]).toBe(0.02);
    relClose(b[500], 1e-4 + (0.02 - 1e-4) * (500 / 999));
  });

  test('abar matches the hand-computed values', () => {
    const abar = alphasCumprod();
    for (const [t, v] of Object.entries(ABAR)) relClose(abar[Number(t)], v);
  });

  test.each([
    [2, [0, 999]],
    [3, [0, 500, 999]],
    [4, [0, 333, 666, 999]],
    [5, [0, 250, 500, 749, 999]],
  ])('space_timesteps(1000, %i)', (s, want) => {
    expect(spaceTimesteps(1000, s)).toEqual(want);
  });

  test('rounding is Python round (half to even), as in guided-diffusion', () => {
    // 99/2 = 49.5 -> 50 (even neighbour)
    expect(spaceTimesteps(100, 3)).toEqual([0, 50, 99]);
    expect(spaceTimesteps(8, 3)).toEqual([0, 4, 7]); // 3.5 -> 4
    expect(spaceTimesteps(6, 3)).toEqual([0, 2, 5]); // 2.5 -> 2
  });

  test.each([2, 3, 4, 5])('inversion coefficients for S = %i', (s) => {
    const steps = inversionSteps(s);
    expect(steps.map((x) => x.t)).toEqual(STEPS[s].map((x) => x[0]));
    steps.forEach((st, i) => {
      relClose(st.a, STEPS[s][i][1]);
      relClose(st.b, STEPS[s][i][2]);
      relClose(st.abar, ABAR[st.t]);
    });
    // After the last timestep the next abar is 0: the final state is the last eps.
    expect(steps[s - 1].abarNext).toBe(0);
    expect(steps[s - 1].a).toBe(0);
    expect(steps[s - 1].b).toBe(1);
    // The clean features are the state at the first timestep.
    expect(steps[0].t).toBe(0);
  });

  test('rejects a step count out of range with a typed error', () => {
    for (const bad of [0, -1, 1.5, 1001, NaN]) {
      expect(() => spaceTimesteps(1000, bad)).toThrow(InvalidArgumentError);
    }
  });
});
