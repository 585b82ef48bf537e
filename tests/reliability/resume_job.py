"""One SFT or PAG-RL training call on the tiny llama, in its own process, for test_resume.py: it
SIGKILLs itself when step ``kill_at`` ends (before that step's checkpoint is saved) and otherwise
writes the call's metrics (and rollouts) as JSON. ``python -m tests.reliability.resume_job JOB.json``."""

from __future__ import annotations

import json
import os
import signal
import sys


def main(job: dict) -> None:
    from progra_core.config import GRPOConfig, SFTConfig
    from progra_core.methods import recipe
    from progra_core.train.checkpoints import Checkpointing
    from progra_core.train.tracking import Tracking

    tracking = Tracking(log_dir=job["tensorboard"], params={"model_id": job.get("name", "m")}) if job.get("tensorboard") else None
    ckpt = Checkpointing(local=job["checkpoints"], save_steps=job["save_steps"], save_total_limit=2, remote=job.get("remote"))

    ran: list[int] = []

    def progress(step: int, total: int) -> None:
        ran.append(step)
        if step == job.get("kill_at"):
            os.kill(os.getpid(), signal.SIGKILL)

    if job["kind"] == "sft":
        from progra_core.train.sft import sft_rows, train_sft
        from tests.support import EXAMPLES

        cfg = SFTConfig(max_steps=job["steps"], batch_size=1, learning_rate=0.05, max_length=256)
        metrics = train_sft(sft_rows(recipe("progra"), EXAMPLES, []), job["model"], cfg, job["out"], progress=progress,
                            checkpoints=ckpt, tracking=tracking)
        rollouts = []
    else:
        from transformers import AutoTokenizer

        from progra_core.train import grpo as core
        from progra_core.train import rollout
        from tests.support import GOLD, Scripted, act
        from tests.support import bfcl_episode as _episode

        tok = AutoTokenizer.from_pretrained(job["model"])
        bad = [act("lost", "[cd(folder='nowhere')]"), act("lost", "no")] * 4

        def sampler(*a, **k):  # generation 0 plays the gold script, 1 a wrong one: every step has an advantage
            def generate(contexts):
                return Scripted(tok, GOLD)(contexts[:1]) + Scripted(tok, bad)(contexts[1:])
            return generate

        rollout.hf_sampler = sampler
        cfg = GRPOConfig(batch_size=1, num_generations=2, max_actions=3, max_steps=job["steps"], learning_rate=0.05,
                         beta=0.001, max_seq_len=4096)
        metrics, table = core.train_grpo([_episode()], recipe("progra"), cfg, job["model"], job.get("adapter"), job["out"],
                                         progress=progress, docs_style="compact", checkpoints=ckpt,
                                         tracking=tracking)
        rollouts = [{"step": r["step"], "generation": r["generation"], "total_reward": r["total_reward"]}
                    for r in table.to_pylist()]
    with open(job["result"], "w") as f:
        json.dump({"metrics": metrics, "rollouts": rollouts, "ran": ran}, f, default=str)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        main(json.load(f))
