import numpy as np
import pytest

from train.diffusion import alphas_cumprod, inversion_schedule, linear_betas, space_timesteps

from .helpers import run_cli


def rel_close(got, want, tol=1e-12):
    assert abs(got - want) <= tol * max(1.0, abs(want)), (got, want)


@pytest.mark.parametrize(
    "s,want", [(1, [0]), (2, [0, 999]), (3, [0, 500, 999]), (4, [0, 333, 666, 999]), (5, [0, 250, 500, 749, 999])]
)
def test_space_timesteps(s, want):
    assert space_timesteps(1000, [s]) == want
    assert space_timesteps(1000, str(s)) == want
    assert inversion_schedule(s)["timesteps"] == want


def test_space_timesteps_guided_diffusion_examples():
    # examples from guided-diffusion's respace.py docstring
    assert space_timesteps(300, [10, 15, 20])[:3] == [0, 11, 22]
    assert space_timesteps(300, [10, 15, 20])[10:13] == [100, 107, 114]
    assert space_timesteps(1000, "ddim10") == list(range(0, 1000, 100))
    assert len(space_timesteps(1000, [1000])) == 1000


def test_abar_values():
    b = linear_betas()
    assert b.dtype == np.float64 and len(b) == 1000 and b[0] == 1e-4 and b[-1] == 0.02
    abar = alphas_cumprod()
    rel_close(abar[0], 0.9999)
    rel_close(abar[500], 0.07779665836502386)
    rel_close(abar[999], 4.0358297653756754e-05)
    rel_close(abar[250], 0.5214230306185275)
    rel_close(abar[749], 0.003350550438936774)


# a/b values pinned by test/schedule.test.ts (computed independently in plain Python float64)
STEPS = {
    2: [(0, 0.006353135752299448, 0.999916289290047), (999, 0, 1)],
    3: [(0, 0.27893447045660164, 0.9575248443163901), (500, 0.022776445456524918, 0.9781072769002072), (999, 0, 1)],
    5: [
        (0, 0.7221323826947114, 0.6845712530206749),
        (250, 0.3862650078310142, 0.6930989239074719),
        (500, 0.20752843385083236, 0.7990308194989462),
        (749, 0.1097509629591105, 0.8904128750261906),
        (999, 0, 1),
    ],
}


@pytest.mark.parametrize("s", sorted(STEPS))
def test_inversion_coefficients(s):
    sched = inversion_schedule(s)
    for i, (t, a, b) in enumerate(STEPS[s]):
        assert sched["timesteps"][i] == t
        rel_close(sched["a"][i], a, 1e-10)
        rel_close(sched["b"][i], b, 1e-10)
    assert sched["abar_next"][-1] == 0.0


def test_schedule_cli():
    rc, events, err = run_cli("schedule", "--steps", 4)
    assert rc == 0, err
    assert len(events) == 1
    out = events[0]
    assert set(["timesteps", "abar", "a", "b"]) <= set(out)
    assert out["timesteps"] == [0, 333, 666, 999]
    rel_close(out["abar"][1], float(alphas_cumprod()[333]))
    assert out["a"][-1] == 0 and out["b"][-1] == 1
    rc, events, _ = run_cli("schedule", "--steps", 0)
    assert rc == 2 and events[0]["event"] == "error"
