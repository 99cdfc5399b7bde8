"""Argument parsing and the three subcommands (fit, export, schedule)."""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from typing import Any, Callable, Dict, List

from .presets import PRESETS

Emit = Callable[[Dict[str, Any]], None]

EXIT_ERROR = 1
EXIT_USAGE = 2


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {s}")
    return v


def _positive_float(s: str) -> float:
    v = float(s)
    if not (v > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {s}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python3 -m train", description="invad diffusion UNet trainer (JSON events on stdout)")
    sub = p.add_subparsers(dest="cmd", parser_class=_Parser)
    sub.required = True

    f = sub.add_parser("fit", help="train the UNet on feature maps (.npy, raw or standardized)")
    f.add_argument("--train", required=True, help="float32 .npy [N,C,h,w]")
    f.add_argument("--val", required=True, help="float32 .npy [M,C,h,w]")
    f.add_argument("--out", required=True, help="work directory (checkpoint.pt, unet.onnx, parity_*.npy, summary.json)")
    f.add_argument("--preset", required=True, choices=sorted(PRESETS))
    f.add_argument("--epochs", type=_positive_int, default=None)
    f.add_argument("--batch-size", type=_positive_int, default=None)
    f.add_argument("--lr", type=_positive_float, default=None)
    f.add_argument("--warmup-epochs", type=float, default=None, help="default min(40, 10%% of epochs)")
    f.add_argument("--seed", type=int, default=None, help="default 0 (or the checkpoint's on --resume)")
    f.add_argument("--resume", action="store_true", help="continue from WORKDIR/checkpoint.pt")
    f.add_argument("--device", default="auto", help="auto|cpu|cuda")
    f.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (default os.cpu_count())")
    f.add_argument(
        "--max-minutes",
        type=_positive_float,
        default=None,
        help="stop after the epoch during which this budget is spent (still exports)",
    )

    e = sub.add_parser("export", help="re-export unet.onnx + parity files from a checkpoint's EMA weights")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--threads", type=_positive_int, default=None)

    s = sub.add_parser("schedule", help="print the inversion schedule for S steps as JSON")
    s.add_argument("--steps", type=int, required=True)
    s.add_argument("--full", action="store_true", help="also print the full 1000-step abar table")
    return p


def run(argv: List[str], emit: Emit) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        print(str(e), file=sys.stderr, flush=True)
        emit({"event": "error", "code": "usage", "message": str(e)})
        return EXIT_USAGE
    except SystemExit as e:  # --help
        return int(e.code or 0)

    if args.cmd == "schedule":
        from .diffusion import alphas_cumprod, inversion_schedule

        try:
            sched = inversion_schedule(args.steps)
        except ValueError as e:
            emit({"event": "error", "code": "usage", "message": str(e)})
            return EXIT_USAGE
        if args.full:
            sched["abar_full"] = [float(v) for v in alphas_cumprod()]
        emit(sched)
        return 0

    from .trainer import TrainError, export_checkpoint, fit, set_threads

    def _on_term(signum, frame):  # the caller cancelled: finish like Ctrl-C (checkpoint writes are atomic)
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, _on_term)
    except (ValueError, AttributeError):  # not the main thread / no SIGTERM
        pass

    try:
        if args.cmd == "fit":
            fit(args, emit)
        else:
            set_threads(args.threads)
            export_checkpoint(args.checkpoint, args.out, emit)
        return 0
    except TrainError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        emit({"event": "error", "code": "invalid", "message": str(e)})
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        emit(
            {
                "event": "error",
                "code": "interrupted",
                "message": "interrupted (the last finished epoch is in checkpoint.pt; use --resume)",
            }
        )
        return 130
    except Exception as e:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        emit({"event": "error", "code": "internal", "message": f"{type(e).__name__}: {e}"})
        return EXIT_ERROR
