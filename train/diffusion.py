"""Diffusion schedule (float64 numpy, then cast) and the epsilon-prediction loss.

Must match src/runtime/schedule.ts: linear betas numpy.linspace(1e-4, 0.02, 1000),
abar = cumprod(1 - beta), guided-diffusion's space_timesteps(T, "S") for one
section (Python round(), half-to-even) and the DDIM inversion coefficients
a = sqrt(abar_next)/sqrt(abar_t),
b = sqrt(1-abar_next) - sqrt(abar_next)*sqrt(1-abar_t)/sqrt(abar_t),
with abar_next = 0 after the last timestep.
Importable without torch (the `schedule` subcommand only needs numpy).
"""

from __future__ import annotations

import math
from typing import Dict, List

import numpy as np

BETA_START = 1e-4
BETA_END = 0.02
TRAIN_STEPS = 1000


def linear_betas(beta_start: float = BETA_START, beta_end: float = BETA_END, T: int = TRAIN_STEPS) -> np.ndarray:
    return np.linspace(beta_start, beta_end, T, dtype=np.float64)


def alphas_cumprod(beta_start: float = BETA_START, beta_end: float = BETA_END, T: int = TRAIN_STEPS) -> np.ndarray:
    return np.cumprod(1.0 - linear_betas(beta_start, beta_end, T), axis=0)


def space_timesteps(num_timesteps: int, section_counts) -> List[int]:
    """guided-diffusion's space_timesteps (respace.py), sorted list form.

    ``section_counts`` is an int, a list of ints or a comma-separated string
    (the "ddimN" form is also accepted).
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim") :])
            for i in range(1, num_timesteps):
                if len(range(0, num_timesteps, i)) == desired:
                    return sorted(set(range(0, num_timesteps, i)))
            raise ValueError(f"cannot create exactly {desired} steps with an integer stride")
        section_counts = [int(x) for x in section_counts.split(",")]
    elif isinstance(section_counts, int):
        section_counts = [section_counts]
    size_per = num_timesteps // len(section_counts)
    extra = num_timesteps % len(section_counts)
    start_idx = 0
    all_steps: List[int] = []
    for i, section_count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < section_count or section_count < 1:
            raise ValueError(f"cannot divide section of {size} steps into {section_count}")
        frac_stride = 1 if section_count <= 1 else (size - 1) / (section_count - 1)
        cur_idx = 0.0
        taken = []
        for _ in range(section_count):
            taken.append(start_idx + round(cur_idx))
            cur_idx += frac_stride
        all_steps += taken
        start_idx += size
    return sorted(set(all_steps))


def inversion_schedule(steps: int, T: int = TRAIN_STEPS) -> Dict[str, list]:
    """Timesteps, abar_t, abar_next and the a/b coefficients of x_next = a*x + b*eps."""
    if not isinstance(steps, int) or steps < 1 or steps > T:
        raise ValueError(f"steps must be an integer from 1 to {T}, got {steps!r}")
    abar = alphas_cumprod(T=T)
    ts = space_timesteps(T, [steps])
    out: Dict[str, list] = {"timesteps": [], "abar": [], "abar_next": [], "a": [], "b": []}
    for i, t in enumerate(ts):
        at = float(abar[t])
        an = float(abar[ts[i + 1]]) if i + 1 < len(ts) else 0.0
        a = math.sqrt(an) / math.sqrt(at)
        b = math.sqrt(1.0 - an) - math.sqrt(an) * math.sqrt(1.0 - at) / math.sqrt(at)
        out["timesteps"].append(int(t))
        out["abar"].append(at)
        out["abar_next"].append(an)
        out["a"].append(a)
        out["b"].append(b)
    return out


class Diffusion:
    """Forward process q(x_t | x_0) and the epsilon-MSE objective (torch)."""

    def __init__(self, device="cpu", T: int = TRAIN_STEPS):
        import torch

        self.T = T
        abar = alphas_cumprod(T=T)
        self.sqrt_abar = torch.tensor(np.sqrt(abar), dtype=torch.float32, device=device)
        self.sqrt_1m_abar = torch.tensor(np.sqrt(1.0 - abar), dtype=torch.float32, device=device)

    def q_sample(self, x0, t, noise):
        return self.sqrt_abar[t][:, None, None, None] * x0 + self.sqrt_1m_abar[t][:, None, None, None] * noise

    def loss(self, model, x0, t, noise, reduce: bool = True):
        eps = model(self.q_sample(x0, t, noise), t)
        err = (eps.float() - noise) ** 2
        if reduce:
            return err.mean()
        return err.flatten(1).mean(dim=1)
