"""Model and optimisation presets (no torch import here)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

PRESETS: Dict[str, Dict[str, Any]] = {
    # Paper configuration (docs/method.md, "Training"): 16x16 maps -> attention on 8x8, 4x4, 2x2.
    "paper": {
        "model": {
            "model_channels": 256,
            "channel_mult": [1, 1, 2, 2],
            "num_res_blocks": 2,
            "attention_ds": [2, 4, 8],
            "num_heads": 8,
        },
        "epochs": 1000,
        "lr": 5e-5,
        "batch_size": 8,
    },
    # A few hundred 152x14x14 samples on 2 CPU cores in about 20 minutes.
    "small": {
        # 6.6M params, 0.32 GMAC/sample forward at 152x14x14: ~7.5 s/epoch for 500 samples on
        # 2 AVX-512 cores (torch 1.13 CPU), so the default 150 epochs take ~19 min (README.md).
        "model": {
            "model_channels": 64,
            "channel_mult": [1, 2, 2],
            "num_res_blocks": 2,
            "attention_ds": [4],
            "num_heads": 4,
        },
        "epochs": 150,
        "lr": 2e-4,
        "batch_size": 16,
    },
    # magnetic-tile's real-data target (issue 4): a 2.3x wider UNet than small, with attention
    # also on the 7x7 map. 15.5M params; ~23 s/epoch for 633 samples of 152x14x14 at batch 8 on
    # 2 AVX-512 cores (torch 1.13 CPU), so the default 80 epochs take ~30 min.
    "medium": {
        "model": {
            "model_channels": 96,
            "channel_mult": [1, 2, 2],
            "num_res_blocks": 2,
            "attention_ds": [2, 4],
            "num_heads": 4,
        },
        "epochs": 80,
        "lr": 1.5e-4,
        "batch_size": 8,
    },
    # Tests: 6x4x4 toy data trains in seconds.
    "tiny": {
        "model": {
            "model_channels": 32,
            "channel_mult": [1, 2],
            "num_res_blocks": 1,
            "attention_ds": [],
            "num_heads": 1,
        },
        "epochs": 10,
        "lr": 1e-3,
        "batch_size": 16,
    },
}

# The most positions one attention block may attend over: its weights are [positions x positions]
# per head and sample (64 x 64 maps: 4096 positions, 64 MiB per head at batch 1).
MAX_ATTENTION_POSITIONS = 64 * 64


def level_sizes(levels: int, h: int, w: int) -> List[Tuple[int, int]]:
    """The UNet's map size at ds = 1, 2, 4, ...: each stride-2 conv gives ceil(size / 2) (unet.py)."""
    sizes = [(h, w)]
    for _ in range(levels - 1):
        h, w = -(-h // 2), -(-w // 2)
        sizes.append((h, w))
    return sizes


def grid_problem(name: str, h: int, w: int) -> Optional[str]:
    """Why preset ``name`` cannot take an h x w feature grid, or None when it can.

    The sizes need not divide: down-sampling gives ceil(size / 2) and up-sampling crops back to
    the skip tensor (unet.py), so 14 -> 7 -> 4 and 28 -> 14 -> 7 -> 4 both work. Refused: an
    attention level the UNet never reaches (a preset error), a deepest map under 2 x 2 (the last
    down-samplings would have nothing left to reduce), and an attention block (the attention_ds
    levels and the middle block, at the deepest level) over MAX_ATTENTION_POSITIONS positions.
    """
    model = PRESETS[name]["model"]
    levels = len(model["channel_mult"])
    sizes = level_sizes(levels, h, w)
    reached = [2**k for k in range(levels)]
    for ds in model["attention_ds"]:
        if ds not in reached:
            return (
                f"preset {name!r} puts attention at down-sampling {ds}, which its {levels}-level UNet never "
                f"reaches (levels {reached})"
            )
    deepest = sizes[-1]
    if min(deepest) < 2:
        return (
            f"a {h} x {w} feature grid is too small for preset {name!r}: its {levels - 1} down-samplings "
            f"take it to {deepest[0]} x {deepest[1]} (at least 2 x 2 needed); use a larger grid or a preset "
            f"with fewer levels"
        )
    for ds in sorted(set(model["attention_ds"]) | {reached[-1]}):
        sh, sw = sizes[reached.index(ds)]
        if sh * sw > MAX_ATTENTION_POSITIONS:
            return (
                f"a {h} x {w} feature grid is too large for preset {name!r}: attention at down-sampling {ds} "
                f"would run over {sh} x {sw} = {sh * sw} positions (at most {MAX_ATTENTION_POSITIONS})"
            )
    return None


EMA_DECAY = 0.999
GRAD_CLIP = 1.0
LR_MIN = 1e-6
BETAS = (0.9, 0.999)
WEIGHT_DECAY = 0.0


def default_warmup_epochs(epochs: int) -> float:
    """min(40, 10% of the epochs); fractional values are fine (lr is set per step)."""
    return min(40.0, 0.1 * float(epochs))
