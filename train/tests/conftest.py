import numpy as np
import pytest

from .helpers import run_cli, toy_features


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    np.save(d / "train.npy", toy_features(256, 1))
    np.save(d / "val.npy", toy_features(2, 2))
    return d / "train.npy", d / "val.npy"


@pytest.fixture(scope="session")
def tiny_run(toy_data, tmp_path_factory):
    """One tiny-preset fit shared by the loss and export tests."""
    tr, va = toy_data
    out = tmp_path_factory.mktemp("tiny_run")
    rc, events, err = run_cli(
        "fit", "--train", tr, "--val", va, "--out", out, "--preset", "tiny", "--epochs", 6, "--seed", 7
    )
    assert rc == 0, err
    return out, events
