"""Entry points for the launch tests, imported by every rank of a job: a call that fails, and
PAG-RL with a scripted policy per rank (rank 0 plays the gold script, rank 1 a wrong one)."""

from __future__ import annotations

import os


def fail(out_dir, progress=None, log=None, message: str = "") -> None:
    if os.environ.get("RANK") == "1":
        raise RuntimeError(message)


def scripted_grpo(out_dir, progress=None, log=None, **kwargs):
    from transformers import AutoTokenizer

    from progra_core.train import grpo, rollout
    from tests.support import GOLD, Scripted, act

    tok = AutoTokenizer.from_pretrained(kwargs["base_path"])
    script = GOLD if os.environ.get("RANK") == "0" else [act("lost", "[cd(folder='nowhere')]"), act("lost", "no")] * 4
    rollout.hf_sampler = lambda *a, **k: Scripted(tok, script)
    return grpo.train_grpo(out_dir=out_dir, progress=progress, log=log, **kwargs)
