"""PyTorch eager side of ``invad bench --compare torch``.

Run as ``/usr/bin/python3 -m train.bench_torch --preset small --out DIR`` with
cwd = the package root. It

1. builds the UNet of a preset (random weights from a fixed seed; the modules
   the trainer zero-initialises get PyTorch's default init instead, so every
   layer does real arithmetic and the output is not trivially 0), or loads the
   EMA weights of a training checkpoint (``--checkpoint``);
2. exports the same weights to DIR/unet.onnx with the trainer's exporter
   (``train.trainer.export_onnx``), so invad runs exactly these weights;
3. writes DIR/features.npy: float32 [max_batch, C, h, w], standard normal from
   the seed (timing does not depend on the feature values);
4. prints one JSON line {"event": "ready", ...} and then serves commands, one
   JSON object per stdin line, one JSON reply per stdout line:

   {"cmd": "run", "batch": 8, "steps": 3, "reps": 1}
       -> {"event": "run", "ms": [...], "sumSq": [...], "l2Min": [...], "l2Max": [...]}
       ``reps`` timed eager inversions of features[:batch] in S = steps UNet
       calls: x = x0; per step eps = unet(x, t), x = a*x + b*eps; then the
       channel-norm map l2 = sqrt(sum_c x^2) and its per-sample statistics.
       The statistics are those of the last rep, for a parity check against invad.
   {"cmd": "profile", "batch": 1, "steps": 3}
       -> {"event": "profile", "wallMs": ..., "ops": [{"op", "calls", "selfMs"}, ...]}
       one inversion under torch.profiler, self CPU time per operator (slower than a plain rep).
   {"cmd": "quit"} -> exits.

The unit of work is the one invad's engine runs after the backbone: clean
features -> S UNet evaluations with the DDIM update -> channel norm. Everything
runs under torch.no_grad() in eval mode with torch.set_num_threads(--threads).
stdout carries only JSON lines; PyTorch's own prints go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from typing import Any, Dict, List, Tuple

EXIT_USAGE = 2

DEFAULT_FEATURES = {"tiny": (6, 4, 4), "small": (152, 14, 14), "medium": (152, 14, 14), "paper": (272, 16, 16)}


def _parse_shape(s: str) -> Tuple[int, int, int]:
    parts = [int(p) for p in s.lower().split("x")]
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected CxHxW, e.g. 152x14x14, got {s!r}")
    return parts[0], parts[1], parts[2]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m train.bench_torch", description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(DEFAULT_FEATURES), default="small")
    p.add_argument("--checkpoint", default=None, help="use this training checkpoint's EMA weights and data shape")
    p.add_argument(
        "--features",
        type=_parse_shape,
        default=None,
        help="feature shape CxHxW (default: small 152x14x14, paper 272x16x16, tiny 6x4x4)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: os.cpu_count())")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-batch", type=int, default=8, help="samples in features.npy (the largest batch served)")
    p.add_argument("--out", required=True, help="folder for unet.onnx and features.npy")
    p.add_argument(
        "--no-export",
        action="store_true",
        help="reuse DIR/unet.onnx and DIR/features.npy when present (same preset, seed and shape)",
    )
    p.add_argument(
        "--conv",
        choices=["default", "onednn"],
        default="default",
        help="default: PyTorch's own convolution dispatch; onednn: every Conv1d/Conv2d calls "
        "torch.mkldnn_convolution (oneDNN), as PyTorch itself does for larger inputs",
    )
    return p


def _json_stdout():
    """The real stdout for JSON; fd 1 and sys.stdout point at stderr from now on."""
    from .__main__ import _json_stdout as redirect

    return redirect()


def _reinit_zeroed(model) -> int:
    """Default-initialise modules whose weights the trainer zeroed (timing with all-zero layers is unrepresentative)."""
    import torch.nn as nn

    n = 0
    for mod in model.modules():
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Linear)) and not bool(mod.weight.detach().any()):
            mod.reset_parameters()
            n += 1
    return n


def _onednn_conv2d(self, x):
    import torch

    return torch.mkldnn_convolution(
        x.contiguous(), self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups
    )


def _onednn_conv1d(self, x):
    import torch

    y = torch.mkldnn_convolution(
        x.unsqueeze(-1).contiguous(),
        self.weight.unsqueeze(-1),
        self.bias,
        (self.padding[0], 0),
        (self.stride[0], 1),
        (self.dilation[0], 1),
        self.groups,
    )
    return y.squeeze(-1)


def use_onednn_convs(model) -> int:
    """Route every convolution to oneDNN. PyTorch 1.13 sends small-batch 3x3 convolutions on small maps to
    its im2col + BLAS path (aten::_slow_conv2d_forward); with a reference (netlib) BLAS that path is far
    slower than an MKL/OpenBLAS build would be. oneDNN ships inside PyTorch, so this variant stands in for
    a PyTorch with a fast BLAS. Same arithmetic (checked by the parity numbers)."""
    import types

    import torch.nn as nn

    n = 0
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            mod.forward = types.MethodType(_onednn_conv2d, mod)
            n += 1
        elif isinstance(mod, nn.Conv1d):
            mod.forward = types.MethodType(_onednn_conv1d, mod)
            n += 1
    return n


def build_model(args) -> Tuple[Any, Tuple[int, int, int], Dict[str, Any]]:
    import torch

    from .presets import PRESETS
    from .unet import UNet, UNetConfig, count_params

    torch.manual_seed(args.seed)
    if args.checkpoint:
        from .trainer import model_from_checkpoint, torch_load

        ckpt = torch_load(args.checkpoint)
        model, shape = model_from_checkpoint(ckpt)
        source = {"weights": "checkpoint (EMA)", "checkpoint": os.path.abspath(args.checkpoint)}
    else:
        shape = args.features or DEFAULT_FEATURES[args.preset]
        cfg = UNetConfig(in_channels=shape[0], **PRESETS[args.preset]["model"])
        model = UNet(cfg)
        reinit = _reinit_zeroed(model)
        source = {"weights": f"random (seed {args.seed}; {reinit} zero-initialised layers re-initialised)"}
    model = model.to("cpu").float().eval()
    info = {"params": count_params(model), "config": model.config.to_dict(), **source}
    return model, tuple(shape), info  # type: ignore[return-value]


class Inverter:
    """One eager inversion: features -> x_T in S UNet calls, then the channel-norm map."""

    def __init__(self, model, features):
        self.model = model
        self.features = features
        self.sched: Dict[int, List[Tuple[Any, float, float]]] = {}

    def schedule(self, steps: int, batch: int):
        import torch

        from .diffusion import inversion_schedule

        key = steps * 100000 + batch
        if key not in self.sched:
            s = inversion_schedule(steps)
            self.sched[key] = [
                (torch.full((batch,), int(t), dtype=torch.int64), float(a), float(b))
                for t, a, b in zip(s["timesteps"], s["a"], s["b"], strict=True)
            ]
        return self.sched[key]

    def run(self, batch: int, steps: int):
        import torch

        sched = self.schedule(steps, batch)
        with torch.no_grad():
            x = self.features[:batch].clone()
            for t, a, b in sched:
                eps = self.model(x, t)
                x = a * x + b * eps
            sq = x * x
            l2 = sq.sum(dim=1).sqrt()  # [n, h, w]
            flat = l2.flatten(1)
            sum_sq = sq.double().flatten(1).sum(dim=1)
            return sum_sq, flat.min(dim=1).values, flat.max(dim=1).values


def _build_setting(cfg: str, key: str):
    m = re.search(rf"\b{key}=([^,\s]+)", cfg)
    return m.group(1) if m else None


def profile(inv: Inverter, batch: int, steps: int, top: int) -> Dict[str, Any]:
    """One inversion under torch.profiler: self CPU time by operator, biggest first."""
    import torch

    inv.run(batch, steps)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        inv.run(batch, steps)
        wall = (time.perf_counter() - t) * 1e3
    rows = [{"op": e.key, "calls": e.count, "selfMs": e.self_cpu_time_total / 1e3} for e in prof.key_averages()]
    rows.sort(key=lambda r: -r["selfMs"])
    total = sum(r["selfMs"] for r in rows)
    return {"wallMs": wall, "totalSelfMs": total, "ops": rows[:top]}


def machine(threads: int) -> Dict[str, Any]:
    import torch

    mkldnn = bool(torch.backends.mkldnn.is_available()) and bool(getattr(torch.backends.mkldnn, "enabled", True))
    cfg = torch.__config__.show()
    return {
        "python": platform.python_version(),
        "executable": sys.executable,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "requestedThreads": threads,
        "interopThreads": torch.get_num_interop_threads(),
        "mkldnn": mkldnn,
        "mkl": bool(torch.backends.mkl.is_available()),
        "openmp": bool(torch.backends.openmp.is_available()),
        "blas": _build_setting(cfg, "BLAS_INFO"),
        "buildType": _build_setting(cfg, "BUILD_TYPE"),
        "env": {
            k: os.environ[k]
            for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
            if k in os.environ
        },
    }


def main(argv=None) -> int:
    out = _json_stdout()

    def emit(obj: Dict[str, Any]) -> None:
        out.write(json.dumps(obj, allow_nan=True) + "\n")
        out.flush()

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        if e.code:
            emit({"event": "error", "code": "usage", "message": "invalid arguments (see stderr)"})
        return int(e.code or 0) and EXIT_USAGE
    try:
        import numpy as np
        import torch
    except ImportError as e:
        emit({"event": "error", "code": "missing_dependency", "message": f"{e} (python: {sys.executable})"})
        return 3

    threads = args.threads if args.threads > 0 else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model, shape, info = build_model(args)
    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, "unet.onnx")
    if not args.no_export or not os.path.isfile(onnx_path):
        from .trainer import export_onnx

        export_onnx(model, shape, onnx_path)
    rng = np.random.default_rng(args.seed)
    feats = rng.standard_normal((args.max_batch, *shape), dtype=np.float32)
    feats_path = os.path.join(args.out, "features.npy")
    if not args.no_export or not os.path.isfile(feats_path):
        np.save(feats_path, feats)
    if args.conv == "onednn":
        info["onednnConvs"] = use_onednn_convs(model)
    info["conv"] = args.conv
    inv = Inverter(model, torch.from_numpy(feats))
    emit(
        {
            "event": "ready",
            "onnx": os.path.abspath(onnx_path),
            "features": os.path.abspath(feats_path),
            "shape": list(shape),
            "maxBatch": args.max_batch,
            "preset": args.preset,
            "seed": args.seed,
            "setupS": time.perf_counter() - t0,
            "machine": machine(threads),
            **info,
        }
    )

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
            if cmd.get("cmd") == "quit":
                break
            if cmd.get("cmd") not in ("run", "profile"):
                raise ValueError(f"unknown command {cmd.get('cmd')!r}")
            batch, steps, reps = int(cmd["batch"]), int(cmd["steps"]), int(cmd.get("reps", 1))
            if not 1 <= batch <= args.max_batch:
                raise ValueError(f"batch must be 1..{args.max_batch}, got {batch}")
            if cmd["cmd"] == "profile":
                emit({"event": "profile", **profile(inv, batch, steps, int(cmd.get("top", 12)))})
                continue
            ms: List[float] = []
            cpu0 = time.process_time()
            for _ in range(reps):
                t = time.perf_counter()
                sum_sq, mn, mx = inv.run(batch, steps)
                ms.append((time.perf_counter() - t) * 1e3)
            emit(
                {
                    "event": "run",
                    "ms": ms,
                    "cpuMs": (time.process_time() - cpu0) * 1e3,
                    "sumSq": sum_sq.tolist(),
                    "l2Min": mn.tolist(),
                    "l2Max": mx.tolist(),
                }
            )
        except Exception as e:  # noqa: BLE001 - report and keep serving
            emit({"event": "error", "code": "invalid", "message": f"{type(e).__name__}: {e}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
