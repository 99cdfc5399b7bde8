from .helpers import run_cli


def test_missing_torch_message():
    rc, events, err = run_cli(
        "fit", "--train", "a", "--val", "b", "--out", "c", "--preset", "tiny", env_extra={"INVAD_FAKE_NO_TORCH": "1"}
    )
    assert rc == 3
    assert len(events) == 1 and events[0]["event"] == "error"
    msg = events[0]["message"]
    for text in (
        "sudo apt-get install -y --no-install-recommends python3-torch python3-numpy python3-onnx",
        "pip install torch numpy onnx",
        "torch",
    ):
        assert text in msg and text in err
    assert err.count("pip install torch numpy onnx") == 1  # one message, no traceback
    assert "Traceback" not in err


def test_schedule_works_without_torch():
    rc, events, err = run_cli("schedule", "--steps", 3, env_extra={"INVAD_FAKE_NO_TORCH": "1"})
    assert rc == 0, err
    assert events[0]["timesteps"] == [0, 500, 999]
