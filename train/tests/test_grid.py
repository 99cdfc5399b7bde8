"""Feature grids (issue 17, item 1): every UNet preset at 14 x 14 and 28 x 28, and the grids refused."""

import numpy as np
import pytest
import torch

from train.presets import MAX_ATTENTION_POSITIONS, PRESETS, grid_problem, level_sizes
from train.unet import AttentionBlock, Downsample, UNet, UNetConfig

from .helpers import run_cli, toy_features


def _randomize(m):
    """Random weights everywhere (the zero-initialised output convs would hide shape bugs)."""
    torch.manual_seed(0)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.02)
    return m


def _sizes_seen(m, x, t):
    """The spatial sizes seen by each attention block and each down-sampling, in forward order."""
    seen = []

    def record(mod, inp, out):
        seen.append((type(mod).__name__, tuple(inp[0].shape[-2:])))

    hooks = [mod.register_forward_hook(record) for mod in m.modules() if isinstance(mod, (AttentionBlock, Downsample))]
    try:
        with torch.no_grad():
            y = m(x, t)
    finally:
        for h in hooks:
            h.remove()
    return y, seen


@pytest.mark.parametrize("grid", [14, 28])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_takes_14_and_28(preset, grid):
    assert grid_problem(preset, grid, grid) is None
    model = dict(PRESETS[preset]["model"])
    levels = len(model["channel_mult"])
    sizes = level_sizes(levels, grid, grid)
    if preset == "paper":
        # 121M parameters: not built at full width here. The spatial path depends only on
        # channel_mult, num_res_blocks and attention_ds, so check those at a narrow width.
        model["model_channels"] = 16
        c = 8
    else:
        c = 152
    m = _randomize(UNet(UNetConfig(in_channels=c, **model)).eval())
    x = torch.randn(1, c, grid, grid)
    y, seen = _sizes_seen(m, x, torch.tensor([500]))
    assert y.shape == x.shape and torch.isfinite(y).all()
    # Down-sampling goes through every level, ceil(size / 2) each time.
    assert [s for k, s in seen if k == "Downsample"] == sizes[:-1]
    # Attention sits on the levels the preset asks for, plus the middle block at the deepest.
    want = {sizes[[2**k for k in range(levels)].index(ds)] for ds in model["attention_ds"]} | {sizes[-1]}
    assert {s for k, s in seen if k == "AttentionBlock"} == want
    if grid == 28:
        assert sizes[-1] == {1: (28, 28), 2: (14, 14), 3: (7, 7), 4: (4, 4)}[levels]


def test_grids_a_preset_cannot_take():
    # paper: 3 down-samplings take 8 to 1; 9 still ends at 2 x 2.
    assert "too small for preset 'paper'" in grid_problem("paper", 8, 8)
    assert grid_problem("paper", 9, 9) is None
    assert "too small" in grid_problem("tiny", 2, 2)
    assert grid_problem("tiny", 3, 3) is None
    assert "too small" in grid_problem("small", 28, 4)  # either side
    # The middle block attends over the deepest map: tiny (one down-sampling) at 130 is 65 x 65.
    problem = grid_problem("tiny", 130, 130)
    assert "too large" in problem and str(MAX_ATTENTION_POSITIONS) in problem
    assert grid_problem("tiny", 128, 128) is None
    # A preset that asks for attention on a level its UNet never reaches is a preset error.
    saved = PRESETS["tiny"]["model"]["attention_ds"]
    try:
        PRESETS["tiny"]["model"]["attention_ds"] = [4]
        assert "never reaches" in grid_problem("tiny", 14, 14)
    finally:
        PRESETS["tiny"]["model"]["attention_ds"] = saved


def test_trainer_refuses_a_grid_its_preset_cannot_take(tmp_path):
    data = tmp_path / "f.npy"
    np.save(data, toy_features(6, 0, c=4, h=2, w=2))
    rc, ev, err = run_cli(
        "fit", "--train", data, "--val", data, "--out", tmp_path / "o", "--preset", "tiny", "--epochs", 1
    )
    assert rc == 1 and ev[-1]["event"] == "error", err
    assert "2 x 2 feature grid is too small for preset 'tiny'" in ev[-1]["message"]
    assert not (tmp_path / "o" / "checkpoint.pt").exists()
