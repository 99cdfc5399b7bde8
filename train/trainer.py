"""Training loop, checkpointing, ONNX export and parity files."""

from __future__ import annotations

import copy
import inspect
import json
import math
import os
import random
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from . import presets as P
from .diffusion import TRAIN_STEPS, Diffusion
from .unet import UNet, UNetConfig, count_params

CHECKPOINT_FORMAT = 1
PARITY_T = (0, 500, 999)
VAL_SEED_OFFSET = 1_000_003
PARITY_SEED = 20240601


class TrainError(Exception):
    """A user-facing error (bad data, bad resume, bad device)."""


def log(msg: str) -> None:
    print(f"[train] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- data


def load_features(path: str, what: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise TrainError(f"{what} file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise TrainError(f"cannot read {what} file {path} as .npy: {e}") from e
    if arr.ndim != 4:
        raise TrainError(f"{what} must be a float32 array [N,C,h,w], got shape {list(arr.shape)}")
    if arr.shape[0] < 1 or min(arr.shape[1:]) < 1:
        raise TrainError(f"{what} is empty: shape {list(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TrainError(f"{what} must be float32, got {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise TrainError(f"{what} contains NaN or Inf values")
    return arr


# ----------------------------------------------------------------------------- helpers


def resolve_device(name: str) -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise TrainError("--device cuda requested but CUDA is not available to this PyTorch build")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise TrainError(f"unknown device {name!r} (use auto, cpu or cuda)")


def set_threads(threads: Optional[int]) -> int:
    n = int(threads) if threads else (os.cpu_count() or 1)
    n = max(1, n)
    torch.set_num_threads(n)
    return n


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def lr_at(epoch_f: float, base_lr: float, epochs: int, warmup: float, lr_min: float = P.LR_MIN) -> float:
    """Linear warm-up lr_min -> base_lr over `warmup` epochs, then cosine to lr_min at `epochs`."""
    if warmup > 0 and epoch_f < warmup:
        return lr_min + (base_lr - lr_min) * (epoch_f / warmup)
    span = max(1e-12, epochs - warmup)
    p = min(1.0, max(0.0, (epoch_f - warmup) / span))
    return lr_min + 0.5 * (base_lr - lr_min) * (1.0 + math.cos(math.pi * p))


def ema_decay(step: int, max_decay: float = P.EMA_DECAY) -> float:
    return min(max_decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    pe = list(ema.parameters())
    pm = [p.detach() for p in model.parameters()]
    if hasattr(torch, "_foreach_mul_") and hasattr(torch, "_foreach_add_"):
        torch._foreach_mul_(pe, decay)
        torch._foreach_add_(pe, pm, alpha=1.0 - decay)
    else:  # pragma: no cover
        for a, b in zip(pe, pm, strict=True):
            a.mul_(decay).add_(b, alpha=1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(bm)


_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_bytes(path: str, writer: Callable[[str], None]) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_json(path: str, obj: Any) -> None:
    def w(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    atomic_write_bytes(path, w)


def torch_load(path: str) -> Dict[str, Any]:
    # PyTorch >= 2.6 defaults to weights_only=True, which refuses the numpy RNG state.
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except TypeError:
            return torch.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - pickle.UnpicklingError and friends
        raise TrainError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e


def _autocast(device: torch.device, enabled: bool):
    return (
        torch.autocast(device_type="cuda", dtype=torch.float16, enabled=enabled)
        if device.type == "cuda"
        else torch.autocast(device_type="cpu", enabled=False)
    )


def _grad_scaler(enabled: bool):
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        try:
            return torch.amp.GradScaler("cuda", enabled=enabled)
        except TypeError:
            pass
    return torch.cuda.amp.GradScaler(enabled=enabled)


def rng_state() -> Dict[str, Any]:
    st: Dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: Dict[str, Any]) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(st["cuda"])
        except Exception:  # noqa: BLE001 - different GPU count
            pass


# ----------------------------------------------------------------------------- export


def export_onnx(model: nn.Module, shape: Tuple[int, int, int], path: str, opset: int = 17) -> None:
    """Export `model` (already eval, CPU, float32) with inputs x [N,C,h,w] f32, t [N] i64 -> eps."""
    C, h, w = shape
    x = torch.randn(2, C, h, w, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 900], dtype=torch.int64)
    kwargs: Dict[str, Any] = dict(
        input_names=["x", "t"],
        output_names=["eps"],
        dynamic_axes={"x": {0: "N"}, "t": {0: "N"}, "eps": {0: "N"}},
        opset_version=opset,
        do_constant_folding=True,
    )
    params = inspect.signature(torch.onnx.export).parameters
    if "dynamo" in params:  # torch >= 2.5: keep the TorchScript exporter (no onnxscript needed)
        kwargs["dynamo"] = False
    if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        for k in ("do_constant_folding",):  # optional niceties that a future signature may drop
            if k not in params:
                kwargs.pop(k)

    def w(tmp: str) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.no_grad():
                torch.onnx.export(model, (x, t), tmp, **kwargs)

    atomic_write_bytes(path, w)
    try:
        import onnx
    except ImportError:
        log("python package 'onnx' not installed: skipping onnx.checker")
        return
    onnx.checker.check_model(path)


def write_parity(model: nn.Module, shape: Tuple[int, int, int], out_dir: str) -> Dict[str, str]:
    """parity_x.npy [3,C,h,w] f32, parity_t.npy [3] i64, parity_eps.npy = model(x,t) (CPU f32 eval)."""
    C, h, w = shape
    g = torch.Generator().manual_seed(PARITY_SEED)
    x = torch.randn(3, C, h, w, generator=g, dtype=torch.float32)
    t = torch.tensor(PARITY_T, dtype=torch.int64)
    with torch.no_grad():
        eps = model(x, t).float()
    paths = {k: os.path.join(out_dir, f"parity_{k}.npy") for k in ("x", "t", "eps")}
    arrays = {"x": x.numpy(), "t": t.numpy(), "eps": eps.numpy()}
    for k, p in paths.items():

        def wa(tmp: str, a: np.ndarray = arrays[k]) -> None:
            with open(tmp, "wb") as f:
                np.save(f, a)

        atomic_write_bytes(p, wa)
    npz = os.path.join(out_dir, "parity.npz")

    def wz(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write_bytes(npz, wz)
    paths["npz"] = npz
    return paths


def export_from_ema(ema: nn.Module, shape: Tuple[int, int, int], onnx_path: str, parity_dir: str) -> Dict[str, Any]:
    m = copy.deepcopy(ema).to("cpu").float().eval()
    export_onnx(m, shape, onnx_path)
    paths = write_parity(m, shape, parity_dir)
    return {
        "onnx": os.path.abspath(onnx_path),
        "parity": os.path.abspath(paths["npz"]),
        "parity_files": {k: os.path.abspath(v) for k, v in paths.items() if k != "npz"},
    }


def model_from_checkpoint(ckpt: Dict[str, Any], which: str = "ema") -> Tuple[UNet, Tuple[int, int, int]]:
    cfg = UNetConfig.from_dict(ckpt["config"]["model"])
    model = UNet(cfg)
    model.load_state_dict(ckpt[which])
    return model, tuple(ckpt["config"]["data_shape"])  # type: ignore[return-value]


def export_checkpoint(checkpoint: str, out: str, emit: Callable[[Dict[str, Any]], None]) -> Dict[str, Any]:
    if not os.path.isfile(checkpoint):
        raise TrainError(f"checkpoint not found: {checkpoint}")
    ckpt = torch_load(checkpoint)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{checkpoint} is not an invad training checkpoint")
    model, shape = model_from_checkpoint(ckpt)
    out_dir = os.path.dirname(os.path.abspath(out))
    os.makedirs(out_dir, exist_ok=True)
    res = export_from_ema(model, shape, out, out_dir)
    ev = {"event": "done", "epochs": ckpt["epoch"], **res}
    emit(ev)
    return ev


# ----------------------------------------------------------------------------- fit


def _load_resume_checkpoint(args: Any, ckpt_path: str, shape: Tuple[int, ...]) -> Optional[Dict[str, Any]]:
    """The checkpoint to continue from with --resume, checked against this run; None to start fresh."""
    if not args.resume:
        return None
    if not os.path.isfile(ckpt_path):
        log(f"--resume: no checkpoint at {ckpt_path}, starting from scratch")
        return None
    ckpt = torch_load(ckpt_path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{ckpt_path} is not an invad training checkpoint; cannot --resume")
    old = ckpt["config"]
    if old["preset"] != args.preset:
        raise TrainError(f"cannot --resume: checkpoint was trained with preset {old['preset']!r}, not {args.preset!r}")
    if tuple(old["data_shape"]) != shape:
        raise TrainError(
            f"cannot --resume: checkpoint data shape {old['data_shape']} differs from --train shape {list(shape)}"
        )
    return ckpt


def _run_config(
    args: Any,
    preset: Dict[str, Any],
    ckpt: Optional[Dict[str, Any]],
    shape: Tuple[int, ...],
    use_amp: bool,
    threads: int,
) -> Dict[str, Any]:
    """The run's configuration: the CLI's values, else the checkpoint's, else the preset's; validated."""
    prev = ckpt["config"] if ckpt else {}

    def pick(name: str, cli_val: Any) -> Any:
        if cli_val is not None:
            return cli_val
        if name in prev:
            return prev[name]
        return preset[name]

    epochs = int(pick("epochs", args.epochs))
    lr = float(pick("lr", args.lr))
    batch_size = int(pick("batch_size", args.batch_size))
    seed = int(args.seed if args.seed is not None else prev.get("seed", 0))
    if epochs < 1:
        raise TrainError("--epochs must be >= 1")
    if batch_size < 1:
        raise TrainError("--batch-size must be >= 1")
    if not (lr > 0):
        raise TrainError("--lr must be > 0")
    if getattr(args, "warmup_epochs", None) is not None:
        warmup, warmup_explicit = float(args.warmup_epochs), True
    elif prev.get("warmup_explicit"):
        warmup, warmup_explicit = float(prev["warmup_epochs"]), True
    else:
        warmup, warmup_explicit = P.default_warmup_epochs(epochs), False
    if warmup < 0:
        raise TrainError("--warmup-epochs must be >= 0")

    model_cfg = UNetConfig(in_channels=shape[0], **preset["model"]) if not ckpt else UNetConfig.from_dict(prev["model"])
    return {
        "preset": args.preset,
        "model": model_cfg.to_dict(),
        "data_shape": list(shape),
        "epochs": epochs,
        "lr": lr,
        "lr_min": P.LR_MIN,
        "warmup_epochs": warmup,
        "warmup_explicit": warmup_explicit,
        "batch_size": batch_size,
        "seed": seed,
        "ema_decay": P.EMA_DECAY,
        "grad_clip": P.GRAD_CLIP,
        "betas": list(P.BETAS),
        "weight_decay": P.WEIGHT_DECAY,
        "schedule": {"kind": "linear", "beta_start": 1e-4, "beta_end": 0.02, "train_steps": TRAIN_STEPS},
        "objective": "eps",
        "amp": use_amp,
        "threads": threads,
        "train_file": os.path.abspath(args.train),
        "val_file": os.path.abspath(args.val),
    }


class _Run:
    """The model, its EMA, the optimizer and the progress counters of one training run."""

    def __init__(self, config: Dict[str, Any], device: torch.device, use_amp: bool):
        seed_everything(config["seed"])
        self.model = UNet(UNetConfig.from_dict(config["model"])).to(device)
        self.ema = copy.deepcopy(self.model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=config["lr"], betas=P.BETAS, weight_decay=P.WEIGHT_DECAY
        )
        self.scaler = _grad_scaler(use_amp)
        self.use_amp = use_amp
        self.start_epoch = 0
        self.step = 0
        self.history: List[Dict[str, Any]] = []
        self.prior_wall = 0.0

    def restore(self, ckpt: Dict[str, Any], ckpt_path: str) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.opt.load_state_dict(ckpt["optimizer"])
        if self.use_amp and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch = int(ckpt["epoch"])
        self.step = int(ckpt["step"])
        self.history = list(ckpt.get("history", []))
        self.prior_wall = float(ckpt.get("wall_s", 0.0))
        set_rng_state(ckpt["rng"])
        log(f"resumed from {ckpt_path} at epoch {self.start_epoch} (step {self.step})")

    def checkpoint(self, config: Dict[str, Any], epoch: int, cur_lr: float, wall_s: float) -> Dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": config,
            "epoch": epoch,
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict() if self.use_amp else None,
            "scheduler": {"kind": "warmup_cosine", "epoch": epoch, "step": self.step, "lr": cur_lr},
            "rng": rng_state(),
            "history": self.history,
            "wall_s": wall_s,
            "torch_version": torch.__version__,
        }


def _validator(
    run: _Run,
    diffusion: Diffusion,
    val_x: torch.Tensor,
    shape: Tuple[int, ...],
    seed: int,
    batch_size: int,
    device: torch.device,
) -> Callable[[], float]:
    """The EMA model's validation loss on fixed draws: the same (sample, t, noise) triples every epoch."""
    n_val = val_x.shape[0]
    val_reps = max(1, min(32, math.ceil(256 / n_val)))
    vg = torch.Generator().manual_seed(seed + VAL_SEED_OFFSET)
    val_idx = torch.arange(n_val).repeat(val_reps)
    val_t = torch.randint(0, TRAIN_STEPS, (val_idx.numel(),), generator=vg)
    val_noise = torch.randn((val_idx.numel(),) + shape, generator=vg)
    val_bs = max(batch_size, 32)

    @torch.no_grad()
    def validate() -> float:
        run.ema.eval()
        total = 0.0
        for i in range(0, val_idx.numel(), val_bs):
            idx = val_idx[i : i + val_bs]
            x0 = val_x[idx.to(device)]
            t = val_t[i : i + val_bs].to(device)
            nz = val_noise[i : i + val_bs].to(device)
            total += float(diffusion.loss(run.ema, x0, t, nz, reduce=False).sum())
        return total / val_idx.numel()

    return validate


def _train_epoch(
    run: _Run,
    diffusion: Diffusion,
    train_x: torch.Tensor,
    epoch: int,
    config: Dict[str, Any],
    device: torch.device,
    emit: Callable[[Dict[str, Any]], None],
    t_start: float,
) -> Tuple[float, float]:
    """One pass over the training features; returns (mean loss, last learning rate)."""
    lr, epochs, warmup, batch_size = config["lr"], config["epochs"], config["warmup_epochs"], config["batch_size"]
    n_train = train_x.shape[0]
    steps_per_epoch = max(1, math.ceil(n_train / batch_size))
    run.model.train()
    t_ep = time.time()
    last_step_emit = t_ep
    perm = torch.randperm(n_train).to(device)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    cur_lr = lr
    for bi in range(steps_per_epoch):
        idx = perm[bi * batch_size : (bi + 1) * batch_size]
        x0 = train_x[idx]
        cur_lr = lr_at((epoch - 1) + bi / steps_per_epoch, lr, epochs, warmup)
        for g in run.opt.param_groups:
            g["lr"] = cur_lr
        t = torch.randint(0, TRAIN_STEPS, (x0.shape[0],), device=device)
        noise = torch.randn_like(x0)
        with _autocast(device, run.use_amp):
            loss = diffusion.loss(run.model, x0, t, noise)
        run.opt.zero_grad(set_to_none=True)
        if run.use_amp:
            run.scaler.scale(loss).backward()
            run.scaler.unscale_(run.opt)
            nn.utils.clip_grad_norm_(run.model.parameters(), P.GRAD_CLIP)
            run.scaler.step(run.opt)
            run.scaler.update()
        else:
            loss.backward()
            nn.utils.clip_grad_norm_(run.model.parameters(), P.GRAD_CLIP)
            run.opt.step()
        ema_update(run.ema, run.model, ema_decay(run.step))
        run.step += 1
        loss_sum += loss.detach().double() * x0.shape[0]
        now = time.time()
        if now - last_step_emit >= 2.0 and bi + 1 < steps_per_epoch:
            last_step_emit = now
            done_n = min(n_train, (bi + 1) * batch_size)
            emit(
                {
                    "event": "step",
                    "epoch": epoch,
                    "epochs": epochs,
                    "batch": bi + 1,
                    "batches": steps_per_epoch,
                    "loss": float(loss.detach()),
                    "lr": cur_lr,
                    "images_per_s": done_n / max(1e-9, now - t_ep),
                    "elapsed_s": now - t_start,
                }
            )
    train_loss = float(loss_sum) / n_train
    if not math.isfinite(train_loss):
        raise TrainError(f"training diverged at epoch {epoch} (loss {train_loss}); try a lower --lr")
    return train_loss, cur_lr


def fit(args: Any, emit: Callable[[Dict[str, Any]], None]) -> Dict[str, Any]:
    t_start = time.time()
    if args.preset not in P.PRESETS:
        raise TrainError(f"unknown preset {args.preset!r} (choose from {', '.join(P.PRESETS)})")
    preset = P.PRESETS[args.preset]
    threads = set_threads(args.threads)
    device = resolve_device(args.device)
    use_amp = device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_flush_denormal(True)  # tiny Adam/EMA values must not hit the slow denormal path

    train_np = load_features(args.train, "--train")
    val_np = load_features(args.val, "--val")
    shape = tuple(int(s) for s in train_np.shape[1:])
    if tuple(val_np.shape[1:]) != shape:
        raise TrainError(f"--val sample shape {list(val_np.shape[1:])} differs from --train {list(shape)}")
    grid_problem = P.grid_problem(args.preset, shape[1], shape[2])
    if grid_problem:
        raise TrainError(grid_problem)

    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    ckpt_path = os.path.join(out_dir, "checkpoint.pt")
    ckpt = _load_resume_checkpoint(args, ckpt_path, shape)
    config = _run_config(args, preset, ckpt, shape, use_amp, threads)
    epochs, lr, batch_size = config["epochs"], config["lr"], config["batch_size"]

    run = _Run(config, device, use_amp)
    diffusion = Diffusion(device)
    if ckpt:
        run.restore(ckpt, ckpt_path)

    train_x = torch.from_numpy(train_np).to(device)
    val_x = torch.from_numpy(val_np).to(device)
    n_train, n_val = train_x.shape[0], val_x.shape[0]
    validate = _validator(run, diffusion, val_x, shape, config["seed"], batch_size, device)

    n_params = count_params(run.model)
    emit(
        {
            "event": "start",
            "params": n_params,
            "config": config,
            "device": str(device.type),
            "epochs": epochs,
            "train": int(n_train),
            "val": int(n_val),
            "resumed_from_epoch": run.start_epoch,
            "threads": threads,
            "steps_per_epoch": max(1, math.ceil(n_train / batch_size)),
        }
    )
    log(
        f"{n_params:,} params, data {list(shape)}, train {n_train}, val {n_val}, device {device}, "
        f"threads {threads}, epochs {run.start_epoch}->{epochs}, batch {batch_size}, lr {lr:g}"
    )

    budget_s = float(args.max_minutes) * 60.0 if args.max_minutes else None
    stopped_early = False
    train_loss = run.history[-1]["loss"] if run.history else float("nan")
    val_loss = run.history[-1]["val_loss"] if run.history else float("nan")

    for epoch in range(run.start_epoch + 1, epochs + 1):
        t_ep = time.time()
        train_loss, cur_lr = _train_epoch(run, diffusion, train_x, epoch, config, device, emit, t_start)
        if device.type == "cuda":
            torch.cuda.synchronize()
        ep_train_s = time.time() - t_ep
        val_loss = validate()
        rec = {
            "epoch": epoch,
            "loss": train_loss,
            "val_loss": val_loss,
            "lr": cur_lr,
            "images_per_s": n_train / max(1e-9, ep_train_s),
            "epoch_s": time.time() - t_ep,
        }
        run.history.append(rec)
        state = run.checkpoint(config, epoch, cur_lr, run.prior_wall + (time.time() - t_start))
        atomic_write_bytes(ckpt_path, lambda tmp, state=state: torch.save(state, tmp))
        emit(
            {
                "event": "epoch",
                "epoch": epoch,
                "epochs": epochs,
                "loss": train_loss,
                "val_loss": val_loss,
                "lr": cur_lr,
                "images_per_s": rec["images_per_s"],
                "elapsed_s": time.time() - t_start,
            }
        )
        if budget_s is not None and time.time() - t_start >= budget_s and epoch < epochs:
            log(f"--max-minutes {args.max_minutes} spent after epoch {epoch}; stopping")
            stopped_early = True
            break

    return _finish(
        run, config, shape, out_dir, ckpt_path, device, train_loss, val_loss, n_params, stopped_early, t_start, emit
    )


def _finish(
    run: _Run,
    config: Dict[str, Any],
    shape: Tuple[int, ...],
    out_dir: str,
    ckpt_path: str,
    device: torch.device,
    train_loss: float,
    val_loss: float,
    n_params: int,
    stopped_early: bool,
    t_start: float,
    emit: Callable[[Dict[str, Any]], None],
) -> Dict[str, Any]:
    """Exports the EMA model, writes summary.json and emits the "done" event."""
    finished = run.history[-1]["epoch"] if run.history else run.start_epoch
    if device.type != "cuda":
        torch.set_flush_denormal(False)
    onnx_path = os.path.join(out_dir, "unet.onnx")
    res = export_from_ema(run.ema, shape, onnx_path, out_dir)
    wall = time.time() - t_start
    done = {
        "event": "done",
        "epochs": int(finished),
        "train_loss": train_loss,
        "val_loss": val_loss,
        "wall_s": wall,
        **res,
        "checkpoint": ckpt_path,
        "params": n_params,
        "stopped_early": stopped_early,
        "target_epochs": config["epochs"],
    }
    summary = dict(done)
    summary["config"] = config
    summary["history"] = run.history
    summary["device"] = device.type
    summary["total_wall_s"] = run.prior_wall + wall
    atomic_write_json(os.path.join(out_dir, "summary.json"), summary)
    emit(done)
    return done
