"""Entry point: ``python3 -m train {fit,export,schedule}``.

stdout carries only JSON lines (one object per line, flushed); everything else,
including stray prints from PyTorch/ONNX, is redirected to stderr.
"""

import json
import os
import sys

EXIT_MISSING_DEPS = 3

INSTALL_HINT = (
    "sudo apt-get install -y --no-install-recommends python3-torch python3-numpy python3-onnx"
    "   (Debian/Ubuntu system python)  or  pip install torch numpy onnx"
)


def _json_stdout():
    """Keep the real stdout for JSON events; point fd 1 (and sys.stdout) at stderr."""
    try:
        sys.stdout.flush()
        fd = os.dup(1)
        os.dup2(2, 1)
        stream = os.fdopen(fd, "w", buffering=1)
    except OSError:  # pragma: no cover - no real fds (embedded)
        stream = sys.stdout
    sys.stdout = sys.stderr
    return stream


class _BlockTorch:
    """Test hook (INVAD_FAKE_NO_TORCH=1): make ``import torch`` fail like a missing install."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

    find_module = None


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out = _json_stdout()

    def emit(obj):
        out.write(json.dumps(obj, allow_nan=True) + "\n")
        out.flush()

    if os.environ.get("INVAD_FAKE_NO_TORCH") == "1":
        sys.meta_path.insert(0, _BlockTorch())

    needs_torch = not (argv and argv[0] == "schedule")
    try:
        import numpy  # noqa: F401

        if needs_torch:
            import torch  # noqa: F401
    except ImportError as e:
        missing = getattr(e, "name", None) or str(e)
        msg = (
            f"invad trainer: Python package {missing!r} is not importable by {sys.executable} ({e}). "
            f"The trainer needs PyTorch, numpy and onnx. Install them with: {INSTALL_HINT}"
        )
        print(msg, file=sys.stderr, flush=True)
        emit({"event": "error", "code": "missing_dependency", "missing": missing, "message": msg})
        return EXIT_MISSING_DEPS

    from .cli import run

    return run(argv, emit)


if __name__ == "__main__":
    sys.exit(main())
