"""Guided-diffusion style UNet for backbone feature maps (epsilon prediction).

Follows openai/guided-diffusion's UNetModel (unconditional, no dropout, additive
timestep embedding) with two changes needed for feature maps of arbitrary size:

* downsampling is a stride-2 3x3 conv with padding 1 (output ceil(h/2)), so odd
  sizes such as 7 or 14 -> 7 -> 4 work;
* upsampling is nearest-neighbour x2 followed by a crop to the skip tensor's size.
  For nearest sampling this is exactly ``F.interpolate(x, size=skip.shape[-2:])``
  when ``skip`` is ``ceil(size/2)`` of the upsampled tensor (proved in the tests),
  but it exports to ONNX as a Resize with integer scales plus a Slice, with no
  float index rounding that could differ between PyTorch and onnxruntime.

Attention is plain matmul + softmax (no fused kernels) so it exports to any opset.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class UNetConfig:
    in_channels: int
    model_channels: int = 64
    channel_mult: Tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_ds: Tuple[int, ...] = (4,)
    num_heads: int = 4
    out_channels: Optional[int] = None
    max_groups: int = 32

    def __post_init__(self) -> None:
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        self.attention_ds = tuple(int(d) for d in self.attention_ds)
        if self.out_channels is None:
            self.out_channels = self.in_channels
        if self.in_channels < 1 or self.model_channels < 1 or self.num_res_blocks < 1:
            raise ValueError(f"invalid UNet config {self}")
        if not self.channel_mult:
            raise ValueError("channel_mult must not be empty")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["attention_ds"] = list(self.attention_ds)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        return cls(**d)


def group_count(channels: int, max_groups: int = 32) -> int:
    """32 groups when possible, otherwise the largest divisor of ``channels`` <= 32."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def normalization(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    return nn.GroupNorm(group_count(channels, max_groups), channels)


def zero_module(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """guided-diffusion's sinusoidal embedding: [cos(t*f), sin(t*f)], f = max_period^(-i/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class ResBlock(nn.Module):
    def __init__(self, channels: int, emb_channels: int, out_channels: int, max_groups: int = 32):
        super().__init__()
        self.in_layers = nn.Sequential(
            normalization(channels, max_groups), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            normalization(out_channels, max_groups),
            nn.SiLU(),
            zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        self.skip = nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb)[:, :, None, None]
        h = self.out_layers(h)
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over spatial positions (guided-diffusion's legacy layout)."""

    def __init__(self, channels: int, num_heads: int, max_groups: int = 32):
        super().__init__()
        heads = max(1, int(num_heads))
        while channels % heads:
            heads -= 1
        self.num_heads = heads
        self.norm = normalization(channels, max_groups)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w)
        qkv = self.qkv(self.norm(flat))  # [b, 3c, L]
        ch = c // self.num_heads
        qkv = qkv.reshape(b * self.num_heads, 3 * ch, h * w)
        q, k, v = qkv[:, :ch], qkv[:, ch : 2 * ch], qkv[:, 2 * ch :]
        scale = 1.0 / math.sqrt(math.sqrt(ch))
        weight = torch.matmul((q * scale).transpose(1, 2), k * scale)  # [bh, L, L]
        weight = torch.softmax(weight.float(), dim=-1).to(weight.dtype)
        a = torch.matmul(v, weight.transpose(1, 2))  # [bh, ch, L]
        a = a.reshape(b, c, h * w)
        return (flat + self.proj_out(a)).reshape(b, c, h, w)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest x2 then crop to the skip size (== interpolate(size=skip size), see module doc)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = x[:, :, : size[0], : size[1]]
        return self.conv(x)


class TimestepSequential(nn.ModuleList):
    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            if isinstance(layer, (ResBlock, AttentionBlock)):
                x = layer(x, emb)
            else:
                x = layer(x)
        return x


class UNet(nn.Module):
    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        mc = config.model_channels
        g = config.max_groups
        emb_dim = mc * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        ch = mc * config.channel_mult[0]
        self.input_conv = nn.Conv2d(config.in_channels, ch, 3, padding=1)
        skip_chans: List[int] = [ch]
        self.down_blocks = nn.ModuleList()
        ds = 1
        n_levels = len(config.channel_mult)
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers: List[nn.Module] = [ResBlock(ch, emb_dim, mult * mc, g)]
                ch = mult * mc
                if ds in config.attention_ds:
                    layers.append(AttentionBlock(ch, config.num_heads, g))
                self.down_blocks.append(TimestepSequential(layers))
                skip_chans.append(ch)
            if level != n_levels - 1:
                self.down_blocks.append(TimestepSequential([Downsample(ch)]))
                skip_chans.append(ch)
                ds *= 2

        self.middle = TimestepSequential(
            [ResBlock(ch, emb_dim, ch, g), AttentionBlock(ch, config.num_heads, g), ResBlock(ch, emb_dim, ch, g)]
        )

        self.up_blocks = nn.ModuleList()
        self.up_samplers = nn.ModuleList()  # Upsample or Identity per up block
        for level, mult in list(enumerate(config.channel_mult))[::-1]:
            for i in range(config.num_res_blocks + 1):
                skip = skip_chans.pop()
                layers = [ResBlock(ch + skip, emb_dim, mc * mult, g)]
                ch = mc * mult
                if ds in config.attention_ds:
                    layers.append(AttentionBlock(ch, config.num_heads, g))
                self.up_blocks.append(TimestepSequential(layers))
                if level and i == config.num_res_blocks:
                    self.up_samplers.append(Upsample(ch))
                    ds //= 2
                else:
                    self.up_samplers.append(nn.Identity())
        assert not skip_chans

        self.out = nn.Sequential(
            normalization(ch, g), nn.SiLU(), zero_module(nn.Conv2d(ch, config.out_channels, 3, padding=1))
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels))
        h = self.input_conv(x)
        hs = [h]
        for block in self.down_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle(h, emb)
        for block, up in zip(self.up_blocks, self.up_samplers, strict=True):
            h = torch.cat([h, hs.pop()], dim=1)
            h = block(h, emb)
            if isinstance(up, Upsample):
                h = up(h, hs[-1].shape[-2:])
        return self.out(h)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
