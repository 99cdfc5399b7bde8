"""Shared helpers for the trainer tests."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]  # the invad package root (cwd for `python3 -m train`)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PYTHON = sys.executable


def run_cli(*args, env_extra=None, timeout=120):
    """Run `python3 -m train ARGS` from the package root; return (rc, events, stderr)."""
    env = dict(os.environ)
    if env_extra:
        env.update(env_extra)
    p = subprocess.run(
        [PYTHON, "-m", "train", *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
    )
    events = []
    for line in p.stdout.splitlines():
        events.append(json.loads(line))  # stdout must be JSON lines only
    return p.returncode, events, p.stderr


def toy_features(n, seed, c=6, h=4, w=4):
    """Low-rank structured toy 'features' (what a normal class looks like) plus a little noise."""
    base = np.random.default_rng(123).standard_normal((3, c, h, w)).astype(np.float32)
    r = np.random.default_rng(seed)
    z = r.standard_normal((n, 3)).astype(np.float32)
    x = np.einsum("nk,kchw->nchw", z, base) * 0.6 + 0.1 * r.standard_normal((n, c, h, w))
    return x.astype(np.float32)
