"""Model and optimisation presets (no torch import here)."""
from __future__ import annotations

from typing import Any, Dict

PRESETS: Dict[str, Dict[str, Any]] = {
    # Paper configuration (docs/method.md, "Training"): 16x16 maps -> attention on 8x8, 4x4, 2x2.
    "paper": {
        "model": {"model_channels": 256, "channel_mult": [1, 1, 2, 2], "num_res_blocks": 2,
                  "attention_ds": [2, 4, 8], "num_heads": 8},
        "epochs": 1000, "lr": 5e-5, "batch_size": 8,
    },
    # A few hundred 152x14x14 samples on 2 CPU cores in about 20 minutes.
    "small": {
        # 6.6M params, 0.32 GMAC/sample forward at 152x14x14: ~7.5 s/epoch for 500 samples on
        # 2 AVX-512 cores (torch 1.13 CPU), so the default 150 epochs take ~19 min (README.md).
        "model": {"model_channels": 64, "channel_mult": [1, 2, 2], "num_res_blocks": 2,
                  "attention_ds": [4], "num_heads": 4},
        "epochs": 150, "lr": 2e-4, "batch_size": 16,
    },
    # magnetic-tile's real-data target (issue 4): a 2.3x wider UNet than small, with attention
    # also on the 7x7 map. 15.5M params; ~23 s/epoch for 633 samples of 152x14x14 at batch 8 on
    # 2 AVX-512 cores (torch 1.13 CPU), so the default 80 epochs take ~30 min.
    "medium": {
        "model": {"model_channels": 96, "channel_mult": [1, 2, 2], "num_res_blocks": 2,
                  "attention_ds": [2, 4], "num_heads": 4},
        "epochs": 80, "lr": 1.5e-4, "batch_size": 8,
    },
    # Tests: 6x4x4 toy data trains in seconds.
    "tiny": {
        "model": {"model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
                  "attention_ds": [], "num_heads": 1},
        "epochs": 10, "lr": 1e-3, "batch_size": 16,
    },
}

EMA_DECAY = 0.999
GRAD_CLIP = 1.0
LR_MIN = 1e-6
BETAS = (0.9, 0.999)
WEIGHT_DECAY = 0.0


def default_warmup_epochs(epochs: int) -> float:
    """min(40, 10% of the epochs); fractional values are fine (lr is set per step)."""
    return min(40.0, 0.1 * float(epochs))
