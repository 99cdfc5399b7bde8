import pytest
import torch
import torch.nn.functional as F

from train.presets import PRESETS
from train.unet import UNet, UNetConfig, Upsample, count_params, group_count


def _model(preset, c, **over):
    cfg = dict(PRESETS[preset]["model"])
    cfg.update(over)
    return UNet(UNetConfig(in_channels=c, **cfg)).eval()


@pytest.mark.parametrize(
    "preset,shape",
    [
        ("tiny", (6, 4, 4)),
        ("small", (152, 14, 14)),
        ("small", (8, 7, 7)),
        ("tiny", (5, 7, 7)),
        ("small", (4, 13, 9)),
        ("small", (3, 1, 1)),
        ("medium", (152, 14, 14)),
    ],
)
def test_output_shape(preset, shape):
    torch.manual_seed(0)
    m = _model(preset, shape[0])
    x = torch.randn(2, *shape)
    t = torch.tensor([0, 999])
    with torch.no_grad():
        y = m(x, t)
    assert y.shape == x.shape
    assert y.dtype == torch.float32
    # zero-initialised output conv: an untrained model predicts eps = 0
    assert float(y.abs().max()) == 0.0


def test_odd_sizes_deep_with_attention_everywhere():
    m = UNet(
        UNetConfig(
            in_channels=10,
            model_channels=32,
            channel_mult=(1, 1, 2, 2),
            num_res_blocks=2,
            attention_ds=(1, 2, 4, 8),
            num_heads=8,
        )
    ).eval()
    for p in m.parameters():  # make every layer matter (zero-init layers would hide shape bugs)
        torch.nn.init.normal_(p, std=0.02)
    for hw in [(7, 7), (14, 14), (5, 11), (16, 16)]:
        x = torch.randn(3, 10, *hw)
        with torch.no_grad():
            y = m(x, torch.tensor([1, 500, 999]))
        assert y.shape == x.shape and torch.isfinite(y).all()


def test_upsample_crop_equals_interpolate_to_skip_size():
    up = Upsample(4)
    torch.nn.init.dirac_(up.conv.weight)
    torch.nn.init.zeros_(up.conv.bias)
    for size in range(1, 34):
        small = (size + 1) // 2  # stride-2 conv with padding 1 gives ceil(size/2)
        x = torch.randn(1, 4, small, small)
        ref = F.interpolate(x, size=(size, size), mode="nearest")
        with torch.no_grad():
            got = up(x, (size, size))
        assert torch.equal(got, ref), size


def test_group_count_fallback():
    assert group_count(64) == 32
    assert group_count(96) == 32
    assert group_count(48) == 24
    assert group_count(6) == 6
    assert group_count(152) == 19


def test_gradients_flow_to_all_parameters():
    torch.manual_seed(0)
    m = _model("small", 8).train()
    x = torch.randn(2, 8, 7, 7)
    eps = m(x, torch.tensor([3, 700]))
    ((eps - x) ** 2).mean().backward()
    # with zero-init output convs only the last conv gets a gradient on the first step
    assert m.out[2].weight.grad.abs().sum() > 0


def test_param_counts_are_stable():
    assert count_params(_model("tiny", 6)) == 653926
    assert count_params(_model("small", 152)) == 6643992


def test_medium_preset_size():
    # README and presets.py quote 15.5M parameters for magnetic-tile's 152 channels
    assert round(count_params(_model("medium", 152)) / 1e6, 1) == 15.5
