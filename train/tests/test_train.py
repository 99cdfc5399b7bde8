import json
import math

import numpy as np

from train.trainer import ema_decay, lr_at, torch_load

from .helpers import run_cli, toy_features


def _by(events, kind):
    return [e for e in events if e["event"] == kind]


def test_event_stream_and_loss_decreases(tiny_run):
    out, events = tiny_run
    assert events[0]["event"] == "start"
    start = events[0]
    assert start["params"] > 0 and start["device"] == "cpu" and start["epochs"] == 6
    assert start["train"] == 256 and start["val"] == 2
    assert start["config"]["model"]["in_channels"] == 6
    epochs = _by(events, "epoch")
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4, 5, 6]
    for e in epochs:
        assert set(["loss", "val_loss", "lr", "images_per_s", "elapsed_s"]) <= set(e)
        assert math.isfinite(e["loss"]) and math.isfinite(e["val_loss"])
    assert epochs[-1]["loss"] < 0.8 * epochs[0]["loss"], [e["loss"] for e in epochs]
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"], [e["val_loss"] for e in epochs]
    done = events[-1]
    assert done["event"] == "done" and done["epochs"] == 6
    assert done["onnx"] == str(out / "unet.onnx")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 6 and len(summary["history"]) == 6
    assert summary["config"]["preset"] == "tiny"


def test_resume_continues(toy_data, tmp_path):
    tr, va = toy_data
    common = ["--train", tr, "--val", va, "--out", tmp_path, "--preset", "tiny"]
    rc, ev, err = run_cli("fit", *common, "--epochs", 2)
    assert rc == 0, err
    ck = torch_load(str(tmp_path / "checkpoint.pt"))
    assert ck["epoch"] == 2
    step2 = ck["step"]
    rc, ev, err = run_cli("fit", *common, "--epochs", 3, "--resume")
    assert rc == 0, err
    assert ev[0]["resumed_from_epoch"] == 2
    assert [e["epoch"] for e in _by(ev, "epoch")] == [3]
    assert ev[-1]["epochs"] == 3
    ck = torch_load(str(tmp_path / "checkpoint.pt"))
    assert ck["epoch"] == 3 and ck["step"] > step2
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["epochs"] == 3 and [h["epoch"] for h in summary["history"]] == [1, 2, 3]
    for k in ("model", "ema", "optimizer", "rng", "config", "scheduler"):
        assert k in ck

    # mismatched data shape or preset: clear error, JSON error line, non-zero exit
    bad = tmp_path / "bad.npy"
    np.save(bad, toy_features(8, 3, c=5))
    rc, ev, err = run_cli(
        "fit", "--train", bad, "--val", bad, "--out", tmp_path, "--preset", "tiny", "--epochs", 4, "--resume"
    )
    assert rc != 0 and ev[-1]["event"] == "error" and "shape" in ev[-1]["message"]
    rc, ev, err = run_cli("fit", *common[:-1], "small", "--epochs", 4, "--resume")
    assert rc != 0 and ev[-1]["event"] == "error" and "preset" in ev[-1]["message"]


def test_max_minutes_stops_after_first_epoch_and_exports(toy_data, tmp_path):
    tr, va = toy_data
    rc, ev, err = run_cli(
        "fit",
        "--train",
        tr,
        "--val",
        va,
        "--out",
        tmp_path,
        "--preset",
        "tiny",
        "--epochs",
        50,
        "--max-minutes",
        0.0001,
    )
    assert rc == 0, err
    assert len(_by(ev, "epoch")) == 1
    assert ev[-1]["event"] == "done" and ev[-1]["epochs"] == 1 and ev[-1]["stopped_early"]
    assert (tmp_path / "unet.onnx").is_file()


def test_bad_inputs_are_clear_errors(tmp_path):
    np.save(tmp_path / "three_d.npy", np.zeros((4, 4, 4), np.float32))
    rc, ev, err = run_cli(
        "fit",
        "--train",
        tmp_path / "three_d.npy",
        "--val",
        tmp_path / "three_d.npy",
        "--out",
        tmp_path / "o",
        "--preset",
        "tiny",
    )
    assert rc == 1 and ev[-1]["event"] == "error" and "[N,C,h,w]" in ev[-1]["message"]
    rc, ev, err = run_cli(
        "fit",
        "--train",
        tmp_path / "missing.npy",
        "--val",
        tmp_path / "missing.npy",
        "--out",
        tmp_path / "o",
        "--preset",
        "tiny",
    )
    assert rc == 1 and "not found" in ev[-1]["message"]
    rc, ev, err = run_cli("fit", "--train", "x", "--val", "y", "--out", "z", "--preset", "huge")
    assert rc == 2 and ev[-1]["event"] == "error"


def test_lr_schedule_and_ema_decay():
    assert lr_at(0, 1e-3, 100, 10) == 1e-6
    assert abs(lr_at(10, 1e-3, 100, 10) - 1e-3) < 1e-15
    assert abs(lr_at(100, 1e-3, 100, 10) - 1e-6) < 1e-15
    assert lr_at(5, 1e-3, 100, 10) < lr_at(9, 1e-3, 100, 10)
    assert lr_at(50, 1e-3, 100, 10) > lr_at(90, 1e-3, 100, 10)
    assert abs(lr_at(55, 1e-3, 100, 10) - (1e-6 + 0.5 * (1e-3 - 1e-6))) < 1e-12
    assert ema_decay(0) == 0.1 and ema_decay(10**7) == 0.999
