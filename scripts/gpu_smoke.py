"""GPU smoke check at the paper's geometry, without downloading anything.

Builds a randomly initialised policy from a shipped architecture layout (default: the 8B
Llama-xLAM-2-8b-fc-r layout, sizes only), with the embedded SmolLM2 tokenizer (the vocabulary stays
the layout's, so the LM head costs what it would), then runs warm-up SFT and PAG-RL exactly as the
stages do (``train_sft``, ``train_grpo``) on real BFCL train data in real environments:

* SFT: ``--sft-steps`` (3) steps of the paper profile's batch 16, micro-batch 2, 8192 tokens;
* PAG-RL: ``--rl-steps`` (6: 1 warm-up + 5 measured) steps of batch 8 episodes × 8 rollouts,
  ≤ 10 actions, 16k-token streams, micro-batch 2, from the SFT adapter.

**The worst case, for real** (``--policy scripted``, the default): a random model never writes a
parsable call, so every turn would end after one action and no stream would get long. The
scripted policy answers every action with a well-formed note of ``max_action_tokens`` tokens and a
valid read-only call (``pwd()``, on GorillaFileSystem episodes), so no turn ever ends by itself:
episodes run to their action limits and their streams to the context limit, and the step is scored
at its largest. ``--policy model`` samples the random model instead (the only choice with
``--vllm colocate``, whose engine samples itself).

It prints seconds per RL step (the warm-up step excluded), model tokens per step and per
rollout, the longest context a rollout reached against ``max_seq_len`` (with ``--policy model``,
from the episodes with the most turns, since each of its turns ends after one action), and peak memory beside
the ``progra plan`` estimate and the paper's Table 6 (PROGRA: 2900 GPU·s and 2243 tokens per step;
MT-GRPO: 1903 GPU·s), then what it did not exercise.

``--tiny`` runs the same code at a toy geometry (and compact tool docs) on CPU in seconds; the
test suite does this.
The GPU machine needs torch, transformers, peft, trl, datasets and this checkout's
dependencies; without internet, carry trl as a wheel (``pip download trl==<version> --no-deps``)
and ``pip install --no-deps`` it there.

    python scripts/gpu_smoke.py [--tiny] [--arch Salesforce/Llama-xLAM-2-8b-fc-r] [--policy scripted|model] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TABLE6 = {"progra_gpu_s_per_step": 2900, "progra_tokens_per_step": 2243, "mt_grpo_gpu_s_per_step": 1903}
#: What this check never runs, whatever its options (printed with the results).
NOT_EXERCISED = ["the xLAM chat template (the SmolLM2 tokenizer stands in)", "tau2 episodes", "evaluation (BFCL, next call)",
                 "multi-GPU (FSDP / DeepSpeed)", "learning (random weights)"]
#: The scripted policy's call: read-only, valid in every GorillaFileSystem state, never ends a turn.
SCRIPTED_CALL = "[pwd()]"
#: tokens an action forced through vLLM leaves free (see ``forcing``)
FORCED_ROOM = 16


class Longest:
    """Wraps a rollout sampler factory (``rollout.hf_sampler`` / ``rollout.vllm_sampler``) and keeps
    the longest context any rollout sent it: how close the streams came to ``max_seq_len``."""

    def __init__(self):
        self.tokens = 0

    def wrap(self, factory):
        def make(*a, **k):
            generate = factory(*a, **k)

            def counted(contexts):
                self.tokens = max([self.tokens, *(len(c) for c in contexts)])
                return generate(contexts)
            return counted
        return make


class ScriptedWorstCase:
    """A rollout sampler that answers every context with a well-formed note of exactly
    ``max_new_tokens`` tokens and a valid read-only call, so episodes run to their limits."""

    def __init__(self, tok, max_new_tokens: int):
        tail = f"</summary>\n<think>Check where we are before the next step.</think>\n<answer>{SCRIPTED_CALL}</answer>"
        head, end = tok("<summary>", add_special_tokens=False)["input_ids"], tok(tail, add_special_tokens=False)["input_ids"]
        filler = tok(" the folder was listed and nothing is left to confirm." * max_new_tokens,
                     add_special_tokens=False)["input_ids"]
        room = max(max_new_tokens - len(head) - len(end) - 1, 0)  # the eos closes it
        self.ids = head + filler[:room] + end + [tok.eos_token_id]

    def __call__(self, contexts):
        return [list(self.ids) for _ in contexts]

    def forced(self, tok) -> tuple[str, list[int]]:
        """What makes a sampling engine write these very tokens: the regex of their text (the
        structure: note, think, the valid call) and the set of token ids they use (so the engine
        cannot spell the text in shorter pieces than these and every action stays full length)."""
        return literal_regex(tok.decode(self.ids[:-1])), sorted(set(self.ids))


def literal_regex(text: str) -> str:
    """A regex that matches exactly ``text``: metacharacters escaped one by one and newlines
    written ``\\n`` (no backslash before a raw newline, which not every regex backend reads)."""
    return "".join("\\n" if c == "\n" else "\\" + c if c in "\\.^$|?*+()[]{}" else c for c in text)


def forcing(factory, regex: str, allowed_ids: list[int]):
    """Wraps ``rollout.vllm_sampler``: the engine it is given decodes under ``regex`` (TRL's
    ``structured_outputs_regex``) with only ``allowed_ids`` (vLLM's ``allowed_token_ids``, through
    TRL's ``generation_kwargs``), both applied to every colocate ``generate``: even a random-weight
    policy writes the scripted note and valid call at full length, so vLLM episodes run to their
    action limit and their streams towards the context limit too."""
    def make(engine, *a, **k):
        engine.structured_outputs_regex = regex
        engine.generation_kwargs = {**(engine.generation_kwargs or {}), "allowed_token_ids": allowed_ids}
        return factory(engine, *a, **k)
    return make


def build_policy(arch_name: str, out: Path, tiny: bool) -> Path:
    """A random-initialised causal LM with the layout's sizes (or a toy one) and the embedded tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from progra_core.llm.embedded import ensure_embedded_model
    from progra_core.train import memory

    tok = AutoTokenizer.from_pretrained(ensure_embedded_model(REPO / ".progra" / "models"))
    a = memory.load_arch(arch_name)
    sizes = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2) if tiny \
        else dict(hidden_size=a.hidden, intermediate_size=a.intermediate, num_hidden_layers=a.layers,
                  num_attention_heads=a.heads, num_key_value_heads=a.kv_heads)
    model_type = json.loads(next((REPO / "progra_core/train/architectures").glob(arch_name.replace("/", "__") + ".json")).read_text())["model_type"]
    cfg = AutoConfig.for_model(model_type, vocab_size=len(tok) if tiny else max(a.vocab, len(tok)), max_position_embeddings=32768,
                               tie_word_embeddings=a.tied, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id, **sizes)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def data(n_rows: int, n_episodes: int, base: Path, max_length: int, docs_style: str, classes: str | None = None,
         most_turns: bool = False):
    """Cold-start SFT rows that fit ``max_length`` (as the stage keeps them) and RL episodes, from
    BFCL base train scenarios (no LLM involved); with ``classes``, episodes that involve it; with
    ``most_turns``, those with the most turns first."""
    from transformers import AutoTokenizer

    from progra_core.config import SegmentConfig, SFTDataConfig
    from progra_core.data.segment import segment_trajectory
    from progra_core.data.sft_data import sft_data
    from progra_core.methods import recipe
    from progra_core.sources import bfcl
    from progra_core.train import rollout
    from progra_core.train.sft import fit_length, sft_rows

    trajs = [row for row, _ in bfcl.iter_trajectories(["base"], "train") if row is not None]
    segs = {s["segment_id"]: s for t in trajs for s in segment_trajectory(t, SegmentConfig())}
    table, _, _ = sft_data([], segs, SFTDataConfig(cold_start_min=len(segs), validation_percent=0, turn_ends=False), docs_style)
    rows, _, _ = fit_length(sft_rows(recipe("progra"), table.to_pylist(), []), AutoTokenizer.from_pretrained(base), max_length)
    if len(rows) < n_rows:
        raise SystemExit(f"only {len(rows)} SFT rows fit {max_length} tokens; {n_rows} wanted")
    rows = rows[:n_rows]
    episodes, _ = rollout.episodes_from_trajectories(trajs)
    episodes = [e for e in episodes if classes is None or classes in e.involved_classes]
    return rows, sorted(episodes, key=lambda e: (-len(e.turns) if most_turns else 0, e.episode_id))[:n_episodes]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="Salesforce/Llama-xLAM-2-8b-fc-r")
    ap.add_argument("--tiny", action="store_true", help="toy geometry on CPU (what the test suite runs)")
    ap.add_argument("--sft-steps", type=int, default=3)
    ap.add_argument("--rl-steps", type=int, default=6, help="RL steps in all, the warm-up ones included")
    ap.add_argument("--warmup-steps", type=int, default=1, help="RL steps left out of the timing (allocation, kernels)")
    ap.add_argument("--policy", choices=["scripted", "model"], default="scripted",
                    help="scripted: valid calls and full-length notes, episodes run to their limits; model: sample the random policy")
    ap.add_argument("--json", type=Path, help="write the results here too")
    ap.add_argument("--vllm", choices=["off", "colocate"], default="off",
                    help="colocate: rollouts sample through TRL's vLLM engine (needs vllm installed); with --policy scripted "
                         "the engine decodes under a regex of the scripted note, so streams run to their limits there too")
    args = ap.parse_args(argv)
    if args.rl_steps <= args.warmup_steps:
        ap.error("--rl-steps must exceed --warmup-steps: at least one measured step")
    policy = args.policy

    import torch
    from transformers import AutoTokenizer

    from progra_core.config import load_config
    from progra_core.methods import recipe
    from progra_core.train import memory, rollout
    from progra_core.train.grpo import train_grpo
    from progra_core.train.sft import train_sft

    paper = load_config("paper")
    sft_cfg = paper.sft.model_copy(update={"max_steps": args.sft_steps})
    rl_cfg = paper.grpo.model_copy(update={"max_steps": args.rl_steps, "use_vllm": args.vllm})
    if args.tiny:
        sft_cfg = sft_cfg.model_copy(update={"batch_size": 2, "micro_batch_size": 1, "max_length": 1024, "learning_rate": 1e-3})
        rl_cfg = rl_cfg.model_copy(update={"batch_size": 1, "num_generations": 2, "micro_batch_size": 1, "max_actions": 4,
                                           "max_turn_actions": 4, "max_action_tokens": 48, "max_seq_len": 2048})
    cuda = torch.cuda.is_available()
    out: dict = {"arch": args.arch, "tiny": args.tiny, "device": torch.cuda.get_device_name(0) if cuda else "cpu", "policy": policy,
                 "sft": {"batch": sft_cfg.batch_size, "micro_batch": sft_cfg.micro_batch_size, "max_length": sft_cfg.max_length},
                 "grpo": {"batch": rl_cfg.batch_size, "num_generations": rl_cfg.num_generations, "micro_batch": rl_cfg.micro_batch_size,
                          "max_actions": rl_cfg.max_actions, "max_turn_actions": rl_cfg.max_turn_actions,
                          "max_action_tokens": rl_cfg.max_action_tokens, "max_seq_len": rl_cfg.max_seq_len,
                          "use_vllm": rl_cfg.use_vllm, "warmup_steps": args.warmup_steps},
                 "paper_table6": TABLE6}
    with tempfile.TemporaryDirectory(prefix="progra-gpu-smoke-") as tmp:
        base = build_policy(args.arch, Path(tmp) / "policy", args.tiny)
        arch = memory.load_arch(str(base))
        out["params"] = arch.params
        if cuda:
            gib = torch.cuda.get_device_properties(0).total_memory / memory.GIB
            out["plan_gib"] = {e.stage: round(e.total / memory.GIB, 1) for e in memory.plan(
                paper.model_copy(update={"sft": sft_cfg, "grpo": rl_cfg}), arch, gib)}
        docs = "compact" if args.tiny else paper.tool_docs
        # scripted: episodes its pwd() is valid in; a sampled model ends each turn after one action,
        # so its longest streams come from the episodes with the most turns
        rows, episodes = data(sft_cfg.batch_size * args.sft_steps, rl_cfg.batch_size, base, sft_cfg.max_length, docs,
                              classes="GorillaFileSystem" if policy == "scripted" else None, most_turns=policy == "model")
        t0 = time.perf_counter()
        sft = train_sft(rows, str(base), sft_cfg, Path(tmp) / "sft")
        out["sft"].update(steps=sft["steps"], seconds_per_step=sft["seconds_per_step"], wall_s=round(time.perf_counter() - t0, 1))
        if cuda:
            out["sft"]["peak_gib"] = round(torch.cuda.max_memory_allocated() / memory.GIB, 2)
            torch.cuda.reset_peak_memory_stats()
        tok = AutoTokenizer.from_pretrained(base)
        scripted = ScriptedWorstCase(tok, rl_cfg.max_action_tokens)
        longest, samplers = Longest(), (rollout.hf_sampler, rollout.vllm_sampler)
        # grpo looks the samplers up on the module at every step
        rollout.hf_sampler = longest.wrap((lambda *a, **k: scripted) if policy == "scripted" else samplers[0])
        # through vLLM a few tokens of room: where the id set holds a shorter piece, the engine may take it
        regex, allowed = ScriptedWorstCase(tok, rl_cfg.max_action_tokens - FORCED_ROOM).forced(tok)
        rollout.vllm_sampler = longest.wrap(forcing(samplers[1], regex, allowed) if policy == "scripted" else samplers[1])
        ends = [time.perf_counter()]
        try:
            metrics, table = train_grpo(episodes, recipe("progra"), rl_cfg, str(base), str(Path(tmp) / "sft"), Path(tmp) / "grpo",
                                        docs_style=docs, progress=lambda step, total: ends.append(time.perf_counter()))
        finally:
            rollout.hf_sampler, rollout.vllm_sampler = samplers
        steps = [b - a for a, b in zip(ends, ends[1:], strict=False)]
        measured = steps[args.warmup_steps:]
        per_step = sum(measured) / len(measured)
        n_gpus = torch.cuda.device_count() if cuda else 0
        rollouts = table.to_pylist()
        out["grpo"].update(steps=metrics["steps"], measured_steps=len(measured), seconds_per_step=round(per_step, 2),
                           warmup_s=round(sum(steps[:args.warmup_steps]), 2),
                           gpu_s_per_step=round(per_step * max(n_gpus, 1), 1) if cuda else None,
                           model_tokens_per_step=metrics["model_tokens_per_step"],
                           model_tokens_per_rollout=round(metrics["model_tokens_per_step"] / max(rl_cfg.streams_per_step, 1), 1),
                           rollouts=metrics["rollouts"], wall_s=round(time.perf_counter() - ends[0], 1),
                           actions_per_rollout_max=max(r["n_actions"] for r in rollouts),
                           longest_context=longest.tokens,
                           context_used=round((longest.tokens + rl_cfg.max_action_tokens) / rl_cfg.max_seq_len, 3))
        if cuda:
            out["grpo"]["peak_gib"] = round(torch.cuda.max_memory_allocated() / memory.GIB, 2)
    out["not_exercised"] = NOT_EXERCISED + (
        ["vLLM rollouts (--vllm colocate)"] if args.vllm == "off"
        else ["full-length streams through vLLM (--policy model: its engine samples the random model)"] if policy == "model" else [])
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
