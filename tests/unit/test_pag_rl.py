"""PAG-RL as the paper means it: each test pins one defect found by reading the training code
against §3.2-3.3 (issue "PAG-RL made correct"); each failed on the code before the fix.

1 the reward never pays for padding; 2 ending a turn is taught and budgeted per turn;
3 and 4 (schema_perturb keeps labels grounded, word_mask never writes into the target) are in
test_augment.py with the other augmentation tests; 5 one decoder
for RL and evaluation; 6 one tool-docs rendering for SFT, RL and evaluation; 7 every turn is
scored under the context it was sampled from; 8 token budgets agree; 9 Dr. GRPO's normaliser
keeps its gradients comparable; 10 SFT+MT-GRPO has a recipe."""

from __future__ import annotations

import json

import pytest
import torch

from progra_core.calls import Call, parse_calls
from progra_core.config import AugmentConfig, GRPOConfig, SegmentConfig, SFTDataConfig, load_config
from progra_core.envs.bfcl import function_docs
from progra_core.prompts.policy import parse_action, policy_system
from progra_core.train.rewards import Rubric
from progra_core.train.rollout import Episode, run_episodes
from tests.support import CONFIG, GOLD, Q1, Q2, Scripted, act, sort_trajectory

FS = ["GorillaFileSystem"]


@pytest.fixture(scope="module")
def episode():
    return Episode("ep1", FS, json.dumps(CONFIG), json.dumps(function_docs(FS)), "A file system.",
                   [{"query": Q1, "steps": [[Call("cd", {"folder": "workspace"})], [Call("ls", {})]]},
                    {"query": Q2, "steps": [[Call("cat", {"file_name": "a.txt"})]]}])


def _return(tok, episode, script, **kw):
    """One scripted play (the script is padded with closing answers so it never runs dry)."""
    kw = {"max_actions": 30, **kw}
    script = list(script) + [act("Nothing left.", "Done.")] * 30
    [r] = run_episodes([episode], Scripted(tok, script), tok, "awareness", Rubric.from_config(GRPOConfig()), **kw)
    return r


# -- 1. the reward never pays for padding -------------------------------------------------------

def test_padding_with_read_only_calls_never_raises_the_return(tok, episode):
    clean = _return(tok, episode, GOLD)
    pwd = act("Still in workspace.", "[pwd()]")
    for extra in (1, 2):
        padded = _return(tok, episode, GOLD[:2] + [pwd] * extra + GOLD[2:])
        assert padded.turns_passed == [True, True]  # BFCL's checks ignore extra read-only calls...
        assert padded.returns["total"] < clean.returns["total"]  # ...the return does not
    ten = _return(tok, episode, [act("again", "[ls()]")] * 10, max_actions=10)
    assert ten.returns["total"] < clean.returns["total"]  # ten valid calls that never finish the turn


def test_the_best_return_is_the_shortest_correct_play(tok, episode):
    plays = {
        "clean": GOLD,
        "padded": GOLD[:1] + [act("x", "[pwd()]")] + GOLD[1:],
        "repeat": GOLD[:2] + [GOLD[1]] + GOLD[2:],
        "no_end": GOLD[:2] + [act("x", "[ls()]")] * 3,
        "wrong": [act("x", "[cd(folder='nowhere')]"), act("x", "Done.")] + GOLD[3:],
        "silent": [act("x", "Done."), act("x", "Done.")],
    }
    returns = {k: _return(tok, episode, v).returns["total"] for k, v in plays.items()}
    assert max(returns, key=returns.get) == "clean", returns
    assert all(returns["clean"] > v for k, v in returns.items() if k != "clean"), returns


def test_success_is_not_credited_when_the_budget_ends_a_turn(tok, episode):
    # the right calls, but the turn never closes: the per-turn budget ends it, and no SUCCESS is paid
    r = _return(tok, episode, GOLD[:2] + [act("x", "[ls()]")] * 4, max_turn_actions=3)
    assert r.actions[2]["turn_end"] and r.actions[2]["terms"]["acc"] == 0.0 and r.turns_passed[0] is False


# -- 2. ending a turn ---------------------------------------------------------------------------

def _bfcl_train_trajectory():
    from progra_core.sources.bfcl import entry_to_trajectory, load_entries

    return entry_to_trajectory(load_entries("base", ids=["multi_turn_base_2"])[0])  # a train-split scenario


_PAG_HEAD = "You call functions to do what the user asks. At each step write three sections"


def test_sft_data_teaches_ending_a_turn():
    from progra_core.data import segment as seg
    from progra_core.data.sft_data import sft_data

    traj = _bfcl_train_trajectory()
    segs = {r["segment_id"]: r for r in seg.segment_trajectory(traj, SegmentConfig())}
    table, _, stats = sft_data([], segs, SFTDataConfig(cold_start_min=len(segs), validation_percent=0))
    ends = [r for r in table.to_pylist() if r["kind"] == "turn_end"]
    assert ends and stats["turn_end"] == len(ends)
    cold = [r for r in table.to_pylist() if r["kind"] == "cold_start"]
    for r in ends:
        answer = parse_action(r["completion"][0]["content"])
        assert answer.answer and answer.calls is None  # a message, not a call list
        assert r["prompt"][-1]["role"] == "tool"  # after the turn's last call and its result
        # the PAG system prompt and the awareness format TEMPLATE asks for: the summary is the
        # progress note the next turn starts from (cold-start rows keep the plain prompt)
        assert r["prompt"][0]["content"].startswith(_PAG_HEAD) and not cold[0]["prompt"][0]["content"].startswith(_PAG_HEAD)
        assert answer.summary and "Nothing is left to do" in answer.summary
    turns_with_calls = sum(1 for t in traj["turns"] if any(a["calls"] for a in t["actions"]))
    assert len(ends) == turns_with_calls


def test_an_episode_plays_every_turn_it_has_budget_for(tok, episode):
    looping = [act("again", "[ls()]")] * 10
    r = _return(tok, episode, looping, max_actions=4, max_turn_actions=2)
    assert [a["turn"] for a in r.actions] == [0, 0, 1, 1]  # turn 1 runs out of its own budget, turn 2 is played
    assert r.turns_passed == [False, False] and r.stop_reason == "done"  # every turn played, none closed


def test_answering_done_after_the_right_calls_passes_the_turn(tok, episode):
    r = _return(tok, episode, GOLD)
    assert r.turns_passed == [True, True] and [a["turn_end"] for a in r.actions] == [False, False, True, False, True]
    assert "request is done" in policy_system("[]", awareness=True)  # the awareness prompt says when to stop


# -- 3 + 4. augmentation keeps labels grounded and targets clean ---------------------------------

# -- 5. one decoder -----------------------------------------------------------------------------

#: (model output, calls it issues or None when it ends the turn): the table RL and evaluation share.
DECODE_CASES = [
    ("<summary>s</summary><think>t</think><answer>[ls()]</answer>", "[ls()]"),
    ("<answer>ls()</answer>", "[ls()]"),
    ("<think>look first</think>[ls()]", "[ls()]"),
    ("<summary>s</summary>[cd(folder='workspace'), ls()]", "[cd(folder='workspace'), ls()]"),
    ("```python\n[ls()]\n```", "[ls()]"),
    ("ls()", "[ls()]"),
    ("<answer>`ls()`</answer>", "[ls()]"),
    ("<answer>Done, the files are listed.</answer>", None),
    ("<answer>[]</answer>", None),
    ("I cannot help with that.", None),
    ("<answer>[__import__('os').system('x')]</answer>", None),
    ("", None),
]


@pytest.mark.parametrize("text,calls", DECODE_CASES)
def test_rl_and_evaluation_decode_an_output_the_same_way(tok, text, calls):
    from progra_core.config import EvaluateConfig
    from progra_core.evaluation.bfcl import Subject, _Run
    from progra_core.llm.types import ChatResult

    want = None if calls is None else [c.name for c in parse_calls(calls)]
    ep = Episode("e", FS, json.dumps(CONFIG), json.dumps(function_docs(FS)), "", [{"query": Q1, "steps": [[Call("ls", {})]]}])
    [r] = run_episodes([ep], Scripted(tok, [text, act("x", "Done.")]), tok, "awareness", Rubric.from_config(GRPOConfig()))
    got_rl = [parse_calls(c)[0].name for c in r.actions[0]["calls"]] or None
    assert got_rl == want and r.actions[0]["turn_end"] is (want is None)
    entry = {"id": "x", "category": "base", "initial_config": CONFIG, "involved_classes": FS, "function": function_docs(FS),
             "question": [[{"role": "user", "content": Q1}]], "ground_truth": [["ls()"]]}
    run = _Run(entry, 0, Subject("base", "base", "local/x"), EvaluateConfig())
    run.advance(ChatResult(text, "local/x"))
    got_eval = [parse_calls(c)[0].name for c in run.steps[0]["calls"]] or None
    assert got_eval == want


# -- 6. one tool-docs rendering ----------------------------------------------------------------

@pytest.mark.parametrize("style", ["json", "compact"])
def test_sft_rl_and_evaluation_show_the_same_tool_docs(tok, style):
    from progra_core.config import EvaluateConfig
    from progra_core.data import segment as seg
    from progra_core.evaluation.bfcl import Subject, _Run
    from progra_core.prompts.policy import build_prompt
    from progra_core.prompts.tools import render_tools

    docs = function_docs(FS)
    shown = render_tools(docs, style=style)
    s = seg.segment_trajectory(sort_trajectory(), SegmentConfig())[0]
    assert shown in build_prompt(s, docs_style=style)[0]["content"]  # SFT
    gen = Scripted(tok, [act("x", "Done.")])
    ep = Episode("e", FS, json.dumps(CONFIG), json.dumps(docs), "", [{"query": Q1, "steps": []}])
    run_episodes([ep], gen, tok, "awareness", Rubric.from_config(GRPOConfig()), docs_style=style)
    assert shown in gen.contexts[0]  # RL
    entry = {"id": "x", "category": "base", "initial_config": CONFIG, "involved_classes": FS, "function": docs,
             "question": [[{"role": "user", "content": Q1}]], "ground_truth": [["ls()"]]}
    for prompt in ("bfcl", "policy"):  # evaluation, either prompt
        run = _Run(entry, 0, Subject("base", "base", "local/x"), EvaluateConfig(prompt=prompt), docs_style=style)
        assert shown in run.messages[0]["content"], prompt


def test_compact_docs_show_what_schema_checks():
    from progra_core.prompts.tools import render_tools

    docs = [{"name": "set_mode", "description": "Sets the mode.", "parameters": {"type": "dict", "properties": {
        "mode": {"type": "string", "enum": ["eco", "sport"]}, "level": {"type": "integer"}}, "required": ["mode"]}}]
    text = render_tools(docs, style="compact")
    assert "eco" in text and "sport" in text and "level (integer, optional)" in text


# -- 7. every turn scored under its sampling context ---------------------------------------------

@pytest.mark.parametrize("mode,temperature", [("awareness", 1.0), ("awareness", 0.7), ("raw", 1.0), ("single", 1.0)])
def test_trainer_log_probs_equal_the_sampling_log_probs(tiny_llama, tmp_path, mode, temperature, episode):
    from progra_core.methods import recipe
    from progra_core.train import grpo as core

    method = {"awareness": "progra", "raw": "mt_grpo", "single": "st_grpo"}[mode]
    ep = episode if mode != "single" else Episode(
        "s", FS, episode.initial_config, episode.tools, "", [{"query": Q1, "steps": [[Call("ls", {})]]}],
        prefix=[{"role": "system", "content": "Use tools."}, {"role": "user", "content": Q1}], setup=[Call("cd", {"folder": "workspace"})])
    cfg = GRPOConfig(batch_size=1, num_generations=2, max_actions=4, max_turn_actions=2, max_action_tokens=12,
                     max_steps=1, temperature=temperature, max_seq_len=4096, beta=0.0, precision="fp32")
    trainer, _ = core.build_trainer([ep], recipe(method), cfg, str(tiny_llama), None, tmp_path, docs_style="compact")
    out = trainer._generate_and_score_completions([{"prompt": ep.episode_id}] * 2)
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    with torch.no_grad(), trainer.scored_as_sampled(out):
        logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, out["completion_ids"].size(1))
    model_tokens = (out["completion_mask"] * out["tool_mask"]).bool()
    sampled = out["sampling_per_token_logps"]
    assert model_tokens.sum() > 10
    if mode == "awareness":
        assert any(len({a["turn"] for a in r["actions"]}) >= 2 for r in trainer.recorder.last_rows())  # two turns at least
    torch.testing.assert_close(logps[model_tokens], sampled[model_tokens], atol=2e-3, rtol=0)


def test_an_action_ends_where_every_decoder_stops_it(tok):
    """Both samplers keep an action through the token that closes ``</answer>`` (or the first EOS,
    whichever comes first): what follows is never read and would break TEMPLATE's format."""
    from progra_core.train.rollout import vllm_sampler
    from progra_core.train.samplers import kept_tokens

    answer = tok.encode("<summary>s</summary>\n<think>t</think>\n<answer>[ls()]</answer>", add_special_tokens=False)
    tail = tok.encode("\n<summary>more</summary>", add_special_tokens=False)
    eos = {tok.eos_token_id}
    assert kept_tokens(answer + tail, eos, tok.decode) == len(answer)
    assert "</answer>" not in tok.decode(answer[:-1])  # the shortest prefix that closes the answer
    assert kept_tokens(answer[:3] + [tok.eos_token_id] + answer[3:], eos, tok.decode) == 4  # EOS first
    assert kept_tokens(answer + tail, eos, None) == len(answer + tail)  # nothing to decode with: EOS only

    class Engine:
        max_completion_length = 9

        def generate(self, prompts, images, num_generations):
            return prompts, [answer + tail], [[[-0.1]] * len(answer + tail)], None

    gen = vllm_sampler(Engine(), 300, eos_ids=list(eos), decode=tok.decode)([[1]])[0]
    assert gen.ids == answer and len(gen.logprobs) == len(answer)


# -- 8. token budgets ---------------------------------------------------------------------------

def test_an_awareness_note_fits_in_an_action():
    paper = load_config("paper")
    assert paper.grpo.max_action_tokens >= paper.awareness.max_tokens + 64
    with pytest.raises(ValueError, match=r"grpo.max_action_tokens .*awareness.max_tokens"):
        load_config("paper", overrides=["grpo.max_action_tokens=512"])
    load_config("paper", overrides=["grpo.max_action_tokens=512", "method=mt_grpo"])  # no notes: no constraint


# -- 9. Dr. GRPO's constant normaliser ------------------------------------------------------------

def test_dr_grpo_gradients_are_comparable_to_grpo(tiny_llama, tmp_path, monkeypatch, episode, tok):
    from progra_core.methods import recipe
    from progra_core.train import grpo as core
    from progra_core.train import rollout

    bad = [act("lost", "[cd(folder='nowhere')]"), act("lost", "no")] * 4

    def sampler(*a, **k):
        gold, wrong = Scripted(tok, GOLD), Scripted(tok, bad)

        def generate(contexts):
            return gold(contexts[:1]) + wrong(contexts[1:])
        return generate

    monkeypatch.setattr(rollout, "hf_sampler", sampler)
    norms = {}
    for method in ("mt_grpo", "mt_dr_grpo"):
        cfg = GRPOConfig(batch_size=1, num_generations=2, max_actions=6, max_steps=1, learning_rate=1e-4, max_seq_len=4096)
        metrics, _ = core.train_grpo([episode], recipe(method), cfg, str(tiny_llama), None, tmp_path / method,
                                     docs_style="compact")
        norms[method] = next(e["grad_norm"] for e in metrics["log_history"] if "grad_norm" in e)
        if method == "mt_dr_grpo":
            assert 10 < metrics["dr_grpo_tokens"] < 4096  # a constant from the first step's rollouts, not 16,384
    assert 0.2 < norms["mt_dr_grpo"] / norms["mt_grpo"] < 5, norms


# -- 10. SFT + MT-GRPO (Table 3) ----------------------------------------------------------------

def test_sft_then_mt_grpo_has_a_recipe():
    from progra_core.methods import recipe

    r = recipe("sft_mt_grpo")
    assert (r.sft, r.grpo, r.grpo_from) == ("plain", "raw", "sft")
    load_config("embedded", overrides=["method=sft_mt_grpo"])


def test_ops_per_row_draws_distinct_ops_and_the_first_is_choose_ops():
    from progra_core.data.augment import choose_op, choose_ops

    one, two = AugmentConfig(), AugmentConfig(ops_per_row=2, weights={"paraphrase": 0.0, "schema_perturb": 1.0, "word_mask": 1.0})
    for i in range(50):
        assert choose_ops(f"a{i}", one) == [choose_op(f"a{i}", one)]
        assert sorted(choose_ops(f"a{i}", two)) == ["schema_perturb", "word_mask"]
    three = AugmentConfig(ops_per_row=3)
    assert all(len(set(choose_ops(f"a{i}", three))) == 3 for i in range(20))
