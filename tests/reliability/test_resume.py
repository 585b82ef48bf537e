"""Kill -9 mid-training, then rerun: SFT and PAG-RL resume from the newest complete checkpoint
(adapter, optimizer, scheduler, RNG, data position; for PAG-RL the recorded rollouts and the SFT
adapter as KL reference) and end where an uninterrupted run ends, with no step logged twice.

Each training call runs in its own process (tests/reliability/resume_job.py) on the tiny llama
and SIGKILLs itself at the end of a step, before that step's checkpoint is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from progra_core.train.checkpoints import MARKER, newest_complete
from progra_core.train.tracking import read_scalars

REPO = Path(__file__).resolve().parents[2]
#: the resumed run redoes no floating point work differently: it loads the saved tensors and skips
#: the batches already seen, so the adapters agree to fp32 rounding at most
TOLERANCE = 1e-6


def _run(tmp: Path, name: str, **job) -> tuple[int, dict | None]:
    job = {"result": str(tmp / f"{name}.json"), **job}
    (tmp / f"{name}.job.json").write_text(json.dumps(job))
    proc = subprocess.run([sys.executable, "-m", "tests.reliability.resume_job", str(tmp / f"{name}.job.json")], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode not in (0, -9):
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-3000:])
    out = Path(job["result"])
    return proc.returncode, json.loads(out.read_text()) if out.exists() else None


def _adapter(folder: Path) -> dict:
    return load_file(str(folder / "adapter_model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def read_text(log_dir: str, tag: str) -> str:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(log_dir, size_guidance={"tensors": 0})
    acc.Reload()
    return " ".join(e.tensor_proto.string_val[0].decode() for e in acc.Tensors(tag))


def _logged_steps(metrics: dict, key: str) -> list[int]:
    return [e["step"] for e in metrics["log_history"] if key in e]


@pytest.mark.slow
def test_sft_killed_at_step_5_resumes_from_step_4_and_ends_as_an_uninterrupted_run(tiny_llama, tmp_path):
    common = {"kind": "sft", "model": str(tiny_llama), "steps": 6, "save_steps": 2}
    rc, whole = _run(tmp_path, "whole", **common, checkpoints=str(tmp_path / "c_whole"), out=str(tmp_path / "a_whole"))
    assert rc == 0 and whole["metrics"]["resumed_from_step"] is None

    ckpt, tb = tmp_path / "c_killed", str(tmp_path / "tb")
    rc, res = _run(tmp_path, "killed", **common, checkpoints=str(ckpt), out=str(tmp_path / "a_killed"), kill_at=5, tensorboard=tb)
    assert rc == -9 and res is None and not (tmp_path / "a_killed").exists()
    assert Path(newest_complete(ckpt)).name == "checkpoint-4"
    assert not (ckpt / "checkpoint-4" / "training_args.bin").exists()  # the unread pickle is not kept

    rc, resumed = _run(tmp_path, "resumed", **common, checkpoints=str(ckpt), out=str(tmp_path / "a_killed"), tensorboard=tb)
    assert rc == 0 and resumed["metrics"]["resumed_from_step"] == 4 and resumed["metrics"]["steps"] == 6
    assert resumed["ran"] == [5, 6] and whole["ran"] == [1, 2, 3, 4, 5, 6]  # steps 1-4 were not trained again
    assert _logged_steps(resumed["metrics"], "loss") == [1, 2, 3, 4, 5, 6] == _logged_steps(whole["metrics"], "loss")
    losses = lambda m: [e["loss"] for e in m["log_history"] if "loss" in e]  # noqa: E731
    assert losses(resumed["metrics"]) == pytest.approx(losses(whole["metrics"]), abs=1e-5)
    assert _max_diff(_adapter(tmp_path / "a_killed"), _adapter(tmp_path / "a_whole")) <= TOLERANCE
    # TensorBoard's own reader: every step once, the killed run's step 5 purged, the params as text
    logged = read_scalars(tb, "train/loss")
    assert [s for s, _ in logged] == [1, 2, 3, 4, 5, 6]
    assert [v for _, v in logged] == pytest.approx(losses(whole["metrics"]), abs=1e-5)
    assert "model_id" in read_text(tb, "progra/params/text_summary")


@pytest.mark.slow
def test_grpo_killed_at_step_3_resumes_with_its_rollouts_and_reference(tiny_llama, tmp_path):
    sft_out = tmp_path / "sft"
    rc, _ = _run(tmp_path, "sft", kind="sft", model=str(tiny_llama), steps=1, save_steps=1,
                 checkpoints=str(tmp_path / "c_sft"), out=str(sft_out))
    assert rc == 0
    common = {"kind": "grpo", "model": str(tiny_llama), "adapter": str(sft_out), "steps": 3, "save_steps": 1}
    rc, whole = _run(tmp_path, "whole", **common, checkpoints=str(tmp_path / "c_whole"), out=str(tmp_path / "g_whole"))
    assert rc == 0

    ckpt = tmp_path / "c_killed"
    rc, res = _run(tmp_path, "killed", **common, checkpoints=str(ckpt), out=str(tmp_path / "g_killed"), kill_at=3)
    assert rc == -9 and res is None
    assert Path(newest_complete(ckpt)).name == "checkpoint-2"
    assert json.loads((ckpt / "checkpoint-2" / MARKER).read_text())["step"] == 2
    assert (ckpt / "checkpoint-2" / "rollouts-rank0.parquet").is_file()

    rc, resumed = _run(tmp_path, "resumed", **common, checkpoints=str(ckpt), out=str(tmp_path / "g_killed"))
    m = resumed["metrics"]
    assert rc == 0 and m["resumed_from_step"] == 2 and m["steps"] == 3 and resumed["ran"] == [3]
    assert m["kl_reference"] == "sft_adapter_copy" and m["ref_equals_sft_adapter"] is True
    # every step's rollouts once: two from before the kill (restored), one after
    assert [(r["step"], r["generation"]) for r in resumed["rollouts"]] == [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]
    assert resumed["rollouts"] == whole["rollouts"]
    assert _logged_steps(m, "kl") == [1, 2, 3] == _logged_steps(whole["metrics"], "kl")
    assert _max_diff(_adapter(tmp_path / "g_killed"), _adapter(tmp_path / "g_whole")) <= TOLERANCE


@pytest.mark.slow
def test_sft_killed_on_one_machine_resumes_on_another_from_an_s3_root(tiny_llama, tmp_path, s3_server):
    """The trainer writes to a machine's local staging folder and every complete checkpoint goes
    up to the root (marker last); a second machine with an empty staging folder fetches the
    newest one and resumes. Rotated checkpoints leave the bucket too."""
    import s3fs

    remote = f"s3://{s3_server['bucket']}/root/checkpoints/sft/m1"
    common = {"kind": "sft", "model": str(tiny_llama), "steps": 6, "save_steps": 1, "remote": remote}
    rc, _ = _run(tmp_path, "whole", **{**common, "remote": None}, checkpoints=str(tmp_path / "c_whole"),
                 out=str(tmp_path / "a_whole"))
    assert rc == 0
    rc, _ = _run(tmp_path, "killed", **common, checkpoints=str(tmp_path / "machine_a"), out=str(tmp_path / "a"), kill_at=5)
    assert rc == -9
    fs = s3fs.S3FileSystem(use_listings_cache=False)
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(remote)) == ["checkpoint-3", "checkpoint-4"]  # save_total_limit 2
    rc, resumed = _run(tmp_path, "resumed", **common, checkpoints=str(tmp_path / "machine_b"), out=str(tmp_path / "b"))
    assert rc == 0 and resumed["metrics"]["resumed_from_step"] == 4 and resumed["ran"] == [5, 6]
    assert _max_diff(_adapter(tmp_path / "b"), _adapter(tmp_path / "a_whole")) <= TOLERANCE


def test_only_marked_checkpoints_are_resumed_from(tmp_path):
    for n, marked in ((2, True), (4, True), (6, False)):  # 6: killed mid-save
        (tmp_path / f"checkpoint-{n}").mkdir()
        if marked:
            (tmp_path / f"checkpoint-{n}" / MARKER).write_text(json.dumps({"step": n}))
    (tmp_path / "checkpoint-x").mkdir()
    assert Path(newest_complete(tmp_path)).name == "checkpoint-4"
    assert newest_complete(tmp_path / "missing") is None


def test_checkpoint_settings_do_not_change_a_model_id():
    from progra_core.config.loading import load_config
    from tasks.stage_tasks import stage_fingerprint

    a = load_config("embedded")
    b = load_config("embedded", overrides=["sft.save_steps=3", "sft.save_total_limit=5", "grpo.save_steps=0"])
    assert stage_fingerprint("sft", a, ["x"]) == stage_fingerprint("sft", b, ["x"])
    assert stage_fingerprint("grpo", a, ["x", "y"]) == stage_fingerprint("grpo", b, ["x", "y"])
    c = load_config("embedded", overrides=["sft.max_steps=3"])
    assert stage_fingerprint("sft", a, ["x"]) != stage_fingerprint("sft", c, ["x"])
