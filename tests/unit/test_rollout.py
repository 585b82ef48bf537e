"""Rollouts in real BFCL environments with a scripted policy (exact token accounting) and a tiny
random llama (the real sampler): env_mask, awareness-only contexts, H, SUCCESS, single-step mode."""

import json

import pytest

from progra_core.calls import Call
from progra_core.config import GRPOConfig
from progra_core.train.rewards import Rubric
from progra_core.train.rollout import (
    episodes_from_trajectories,
    hf_sampler,
    run_episodes,
    single_step_episodes,
)
from tests.support import CONFIG, GOLD, Q1, Q2, Scripted, act, bfcl_episode


@pytest.fixture(scope="module")
def episode():
    return bfcl_episode("A file system.")


def test_env_mask_marks_exactly_the_model_tokens(tok, episode):
    gen = Scripted(tok, GOLD)
    [r] = run_episodes([episode], gen, tok, "awareness", Rubric.from_config(GRPOConfig()), docs_style="compact")
    assert len(r.completion_ids) == len(r.env_mask)
    model = [t for t, m in zip(r.completion_ids, r.env_mask, strict=True) if m == 1]
    assert model == [t for ids in gen.outputs for t in ids]  # every sampled token, in order, nothing else
    env_text = tok.decode([t for t, m in zip(r.completion_ids, r.env_mask, strict=True) if m == 0])
    for obs in ('{"current_working_directory": "workspace"}', '{"current_directory_content": ["a.txt"]}', Q2,
                '{"file_content": "hello world"}'):
        assert obs in env_text  # observations and the next user turn are environment tokens
    assert "<summary>" not in env_text and "[ls()]" not in env_text
    assert r.model_tokens == sum(r.env_mask) and r.stop_reason == "done"


def test_gold_policy_succeeds_every_turn_and_reward_follows_eq14(tok, episode):
    w = Rubric.from_config(GRPOConfig(alpha_fmt=0.1, alpha_schema=0.2, alpha_acc=1.0, penalty=0.05, gamma=1.0))
    [r] = run_episodes([episode], Scripted(tok, GOLD), tok, "awareness", w, docs_style="compact")
    assert r.turns_passed == [True, True]
    assert [a["terms"]["acc"] for a in r.actions] == [0.0, 0.0, 1.0, 0.0, 1.0]  # credited at the turn's closing action
    assert [a["success"] for a in r.actions] == [None, None, True, None, True]
    # TEMPLATE and SCHEMA are paid once per turn, all or nothing, on the turn's closing action
    assert [a["terms"]["schema"] for a in r.actions] == pytest.approx([0.0, 0.0, 0.2, 0.0, 0.2])
    assert [a["terms"]["fmt"] for a in r.actions] == pytest.approx([0.0, 0.0, 0.1, 0.0, 0.1])
    assert r.returns["acc"] == pytest.approx(2.0) and r.returns["fmt"] == pytest.approx(0.2)
    assert r.returns["pen"] == pytest.approx(-0.15)  # three actions issued calls
    assert r.returns["total"] == pytest.approx(0.2 + 0.4 + 2.0 - 0.15)


def test_skipping_a_read_only_call_fails_the_response_check(tok, episode):
    lazy = [GOLD[0], act("In workspace.", "Done, you are in workspace."), GOLD[3], GOLD[4]]
    [r] = run_episodes([episode], Scripted(tok, lazy), tok, "awareness", Rubric.from_config(GRPOConfig()), docs_style="compact")
    assert r.turns_passed == [False, True]  # same state as the ground truth, but the ls() result was never produced
    wrong = [act("s", "[cd(folder='nowhere')]"), act("s", "ok"), GOLD[3], GOLD[4]]
    [r] = run_episodes([episode], Scripted(tok, wrong), tok, "awareness", Rubric.from_config(GRPOConfig()), docs_style="compact")
    assert r.turns_passed[0] is False  # the failed cd leaves the state unlike the target's


def test_awareness_contexts_exclude_the_raw_prefix(tok, episode):
    gen = Scripted(tok, GOLD)
    run_episodes([episode], gen, tok, "awareness", Rubric.from_config(GRPOConfig()), docs_style="compact")
    turn2 = gen.contexts[3]
    assert Q2 in turn2 and "Listed: a.txt. Turn done." in turn2  # Q_i and the policy's own latest summary
    assert Q1 not in turn2 and "current_directory_content" not in turn2 and "cd(folder=" not in turn2
    assert "current_directory_content" in gen.contexts[2]  # within a turn, that turn's own steps stay
    raw = Scripted(tok, GOLD)
    run_episodes([episode], raw, tok, "raw", Rubric.from_config(GRPOConfig()), docs_style="compact")
    assert Q1 in raw.contexts[3] and "current_directory_content" in raw.contexts[3]  # MT-GRPO: the full prefix
    assert "<summary>" in gen.contexts[0] and "<summary>" not in raw.contexts[0]  # MT-GRPO is prompted for think/answer only


def test_horizon_h_stops_the_episode(tok, episode):
    looping = [act("again", "[ls()]")] * 10
    [r] = run_episodes([episode], Scripted(tok, looping), tok, "awareness", Rubric.from_config(GRPOConfig()), max_actions=3, docs_style="compact")
    assert len(r.actions) == 3 and r.stop_reason == "max_actions"
    assert r.turns_passed == [False, False]  # the unplayed turn counts as failed


def test_single_step_episodes_replay_the_prefix(tok):
    from progra_core.envs.bfcl import function_docs

    row = {"trajectory_id": "t1", "split": "train", "involved_classes": ["GorillaFileSystem"],
           "initial_config": json.dumps(CONFIG), "tools": json.dumps(function_docs(["GorillaFileSystem"])), "scenario": "",
           "turns": [{"query": Q1, "actions": [
               {"calls": [Call("cd", {"folder": "workspace"}).to_record()], "observations": ['{"current_working_directory": "workspace"}']},
               {"calls": [Call("ls", {}).to_record()], "observations": ['{"current_directory_content": ["a.txt"]}']}],
               "reply": None}]}
    eps, rejects = single_step_episodes([row, {**row, "trajectory_id": "t2", "split": "held_out"}])
    assert [e.episode_id for e in eps] == ["t1#t0s0", "t1#t0s1"] and not rejects  # held-out never enters RL
    assert eps[1].setup == [Call("cd", {"folder": "workspace"})]
    gen = Scripted(tok, [act("x", "[ls()]")])
    [r] = run_episodes(eps[1:], gen, tok, "single", Rubric.from_config(GRPOConfig()), docs_style="compact")
    assert len(r.actions) == 1 and r.turns_passed == [True]  # ls from inside workspace, as the ground truth
    assert "cd(folder='workspace')" in gen.contexts[0]  # the raw prefix is the context
    bad = {**row, "trajectory_id": "t3", "initial_config": json.dumps({"GorillaFileSystem": {"root": 5}})}
    assert episodes_from_trajectories([bad])[1][0]["reason"] == "env_error"


def test_real_sampler_on_a_tiny_llama(tok, tiny_llama, episode):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    gen = hf_sampler(model, tok, max_new_tokens=6, temperature=1.0, batch_size=2, seed=1)
    rs = run_episodes([episode, episode, episode], gen, tok, "awareness", Rubric.from_config(GRPOConfig()), max_actions=2, docs_style="compact")
    for r in rs:
        assert 1 <= len(r.actions) <= 2 and all(a["model_tokens"] <= 6 for a in r.actions)
        assert sum(r.env_mask) == sum(a["model_tokens"] for a in r.actions)


@pytest.mark.parametrize("mode", ["raw", "awareness"])
@pytest.mark.parametrize("ends_turns", [False, True])
def test_no_context_ever_reaches_the_engines_length_limit(tok, episode, mode, ends_turns):
    """vLLM's max_model_len is grpo.max_seq_len and it refuses a prompt at that length: the episode
    must stop while the next context still leaves room for a whole action, whether it grows by
    observations within a turn or by the next turn's opening."""
    long = act("Still listing the workspace, one more time to be sure. " * 6, "[ls()]")
    script = ([long, act("done", "All listed.")] * 20) if ends_turns else [long] * 40
    reserve = max(len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in script)
    lengths = []

    class Measured(Scripted):
        def __call__(self, contexts):
            lengths.extend(len(c) for c in contexts)
            return super().__call__(contexts)

    unlimited = run_episodes([episode], Scripted(tok, script), tok, mode, Rubric.from_config(GRPOConfig()), max_actions=4,
                             max_turn_actions=40, docs_style="compact", max_action_tokens=reserve)[0]
    limit = len(unlimited.prompt_ids) + 3 * reserve  # room for a few actions, never all of them
    [r] = run_episodes([episode], Measured(tok, script), tok, mode, Rubric.from_config(GRPOConfig()), max_actions=40,
                       max_turn_actions=40, max_seq_len=limit, docs_style="compact", max_action_tokens=reserve)
    assert len(r.actions) < len(unlimited.actions) and len(lengths) >= 2
    # stopped by the length budget (on the last turn an episode whose every turn was played is "done")
    assert r.stop_reason == "max_seq_len" or (ends_turns and r.actions[-1]["turn"] == len(episode.turns) - 1)
    assert max(lengths) + reserve <= limit  # every context left room for a whole action
    assert len(r.prompt_ids) + len(r.completion_ids) <= limit  # and so did the stream the trainer scores
    with pytest.raises(ValueError, match="leaves no room for one action"):
        run_episodes([episode], Scripted(tok, script), tok, mode, Rubric.from_config(GRPOConfig()),
                     max_seq_len=len(unlimited.prompt_ids) + reserve - 1, docs_style="compact", max_action_tokens=reserve)
