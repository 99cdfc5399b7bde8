import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from train.trainer import export_from_ema
from train.unet import UNet, UNetConfig

from .helpers import ROOT, run_cli


def _check_graph(path, shape):
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    assert any(o.domain in ("", "ai.onnx") and o.version == 17 for o in m.opset_import)
    ins = {i.name: i for i in m.graph.input}
    outs = {o.name: o for o in m.graph.output}
    assert list(ins) == ["x", "t"] and list(outs) == ["eps"]
    assert ins["x"].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert ins["t"].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert outs["eps"].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    for v, rank in ((ins["x"], 4), (ins["t"], 1), (outs["eps"], 4)):
        dims = v.type.tensor_type.shape.dim
        assert len(dims) == rank
        assert dims[0].dim_param and not dims[0].HasField("dim_value"), f"{v.name}: batch axis not dynamic"
        if rank == 4:
            assert [d.dim_value for d in dims[1:]] == list(shape)


def _check_parity_files(d, shape):
    x = np.load(d / "parity_x.npy")
    t = np.load(d / "parity_t.npy")
    eps = np.load(d / "parity_eps.npy")
    assert x.dtype == np.float32 and x.shape == (3, *shape)
    assert t.dtype == np.int64 and t.shape == (3,)
    assert eps.dtype == np.float32 and eps.shape == (3, *shape)
    z = np.load(d / "parity.npz")
    assert np.array_equal(z["eps"], eps)
    return x, t, eps


def _ort_max_diff(d, onnx_path=None):
    """Real ORT parity through onnxruntime-node (what the TS side uses), when present."""
    node = shutil.which("node")
    if not node or not (ROOT / "node_modules" / "onnxruntime-node").is_dir():
        return None
    args = [node, str(Path(__file__).with_name("ort_parity.js")), str(d)]
    if onnx_path:
        args.append(str(onnx_path))
    p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    import json

    return json.loads(p.stdout.strip().splitlines()[-1])["max_abs_diff"]


def test_fit_exports_onnx_and_parity(tiny_run):
    out, events = tiny_run
    _check_graph(out / "unet.onnx", (6, 4, 4))
    x, t, eps = _check_parity_files(out, (6, 4, 4))
    # parity_eps is the EMA model's output: recompute from the checkpoint
    from train.trainer import model_from_checkpoint, torch_load

    model, shape = model_from_checkpoint(torch_load(str(out / "checkpoint.pt")))
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x), torch.from_numpy(t)).numpy()
    assert np.abs(ref - eps).max() < 1e-6
    assert np.abs(eps).max() > 0  # trained: not the zero-init output
    d = _ort_max_diff(out)
    if d is not None:
        assert d < 1e-4


def test_export_subcommand(tiny_run, tmp_path):
    out, _ = tiny_run
    rc, ev, err = run_cli("export", "--checkpoint", out / "checkpoint.pt", "--out", tmp_path / "re.onnx")
    assert rc == 0, err
    assert ev[-1]["event"] == "done" and ev[-1]["onnx"] == str(tmp_path / "re.onnx")
    _check_graph(tmp_path / "re.onnx", (6, 4, 4))
    _, _, eps = _check_parity_files(tmp_path, (6, 4, 4))
    assert np.array_equal(eps, np.load(out / "parity_eps.npy"))
    rc, ev, err = run_cli("export", "--checkpoint", tmp_path / "nope.pt", "--out", tmp_path / "x.onnx")
    assert rc == 1 and ev[-1]["event"] == "error"
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    rc, ev, err = run_cli("export", "--checkpoint", tmp_path / "garbage.pt", "--out", tmp_path / "x.onnx")
    assert rc == 1 and ev[-1]["event"] == "error" and "cannot read checkpoint" in ev[-1]["message"]


@pytest.mark.parametrize("shape", [(8, 7, 7), (5, 14, 14)])
def test_export_attention_odd_sizes_randomized_weights(tmp_path, shape):
    """Attention + odd sizes + every layer non-zero, so parity is a real check."""
    torch.manual_seed(0)
    m = UNet(
        UNetConfig(
            in_channels=shape[0],
            model_channels=32,
            channel_mult=(1, 2, 2),
            num_res_blocks=1,
            attention_ds=(2, 4),
            num_heads=4,
        )
    )
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    export_from_ema(m, shape, str(tmp_path / "unet.onnx"), str(tmp_path))
    _check_graph(tmp_path / "unet.onnx", shape)
    _, _, eps = _check_parity_files(tmp_path, shape)
    assert np.abs(eps).max() > 1e-2
    d = _ort_max_diff(tmp_path)
    if d is not None:
        assert d < 1e-4, d
