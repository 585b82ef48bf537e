"""Multi-turn rollouts in fresh environments (§3.3.1), as one token stream per episode.

An episode is a task of any :class:`~progra_core.envs.base.Env` (BFCL, τ² airline/retail): env
kind, initial config, involved classes (τ²: the domain), the user turns and, for the reward only,
the ground-truth calls per turn. The policy acts; its calls run in the episode's own env; a twin
env replays the reference calls turn by turn to give the target state and observations, and the
env's own ``success`` judges the turn (BFCL: state and response checks; τ²: its database check;
see :mod:`progra_core.train.rewards`).

Three modes, one per family of methods:

* ``awareness`` (PROGRA, w/o PAG): at each step the policy is sampled from info_meta, the current
  query Q_i and its own latest ``<summary>`` (Eq. 12) plus this turn's steps; earlier turns'
  raw queries, calls and observations are not in the context;
* ``raw`` (MT-GRPO, PAG+MT-GRPO): the context is the whole conversation so far;
* ``single`` (ST-GRPO): one segment, its raw prefix replayed into the env first, one action.

The training sequence TRL scores is ``prompt_ids`` (turn 1's context) followed by
``completion_ids``: model tokens (``env_mask`` 1) interleaved with environment tokens (``env_mask``
0: chat scaffolding, observations, later user turns), so loss and KL see only what the model
wrote. Every token is scored under exactly the context it was sampled from: each stream carries
a layout (``positions``, ``blocks``). In ``raw`` and ``single`` mode the sampling context is the
stream's own prefix: one block, positions 0..n-1. In ``awareness`` mode the stream is
``[info_meta | turn 1's block | turn 2's block | ...]``, where block ``i`` is ``Q_i`` with the
policy's latest summary and that turn's steps; a block sees info_meta and itself only, with
positions restarting after info_meta, which is exactly the context turn ``i`` was sampled from
(the trainer builds the matching block attention mask, :mod:`progra_core.train.grpo`).

A turn ends when the policy answers without calls (it says the request is done), or when it has
used ``max_turn_actions``; the episode ends after its last turn, after ``max_actions`` (H) in all,
or when the stream could not take the next context plus a whole action (``max_action_tokens``)
within ``max_seq_len``, so no context ever reaches an engine's length limit. SUCCESS is judged
when a turn ends, and only a turn the policy closed itself can succeed: a budget that runs out
mid-turn is a failed turn, as BFCL's step limit is.

torch is imported inside the functions that use it: heavy, and only some callers need it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from progra_core.calls import Call, calls_from_records, format_call
from progra_core.config import SegmentConfig
from progra_core.data.segment import segment_trajectory
from progra_core.envs.base import EnvError
from progra_core.envs.factory import make_env
from progra_core.prompts import policy as policy_prompts
from progra_core.prompts.policy import build_prompt, parse_action
from progra_core.prompts.tools import DocStyle
from progra_core.schemas import reject
from progra_core.train.rewards import Played, Rubric, Step
from progra_core.train.samplers import (  # re-exported: callers use rollout.*
    GenerateFn,
    Generation,
    hf_sampler,
    vllm_sampler,
)

__all__ = ["Episode", "Rollout", "Generation", "ChatPieces", "Mode", "MODES", "episodes_from_trajectories",
           "single_step_episodes", "run_episodes", "hf_sampler", "vllm_sampler"]

Mode = Literal["awareness", "raw", "single"]
MODES: tuple[str, ...] = ("awareness", "raw", "single")
STAGE = "grpo"

@dataclass
class Episode:
    episode_id: str
    involved_classes: list[str]
    initial_config: str
    tools: str
    scenario: str
    turns: list[dict]  # {"query": str, "steps": [[Call, ...], ...]} ground truth per turn
    long_context: bool = False
    prefix: list[dict] | None = None  # single mode: the raw-prefix messages before the action
    setup: list[Call] = field(default_factory=list)  # single mode: ground-truth calls replayed first
    env: str = "bfcl"  # trajectories.env: which Env runs the episode

    def make_env(self):
        return make_env(self.env, self.involved_classes, self.initial_config, self.long_context)


@dataclass
class Rollout:
    episode_id: str
    prompt_ids: list[int]
    completion_ids: list[int]
    env_mask: list[int]
    actions: list[dict]
    turns_passed: list[bool]
    returns: dict[str, float]
    stop_reason: str
    #: per token of prompt_ids + completion_ids: its position and its block (0 = shared info_meta)
    positions: list[int] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)
    #: per completion token: the sampling log-prob (0.0 for environment tokens); None if unknown
    logprobs: list[float] | None = None

    @property
    def model_tokens(self) -> int:
        return sum(self.env_mask)


# -- episodes --------------------------------------------------------------------------------

def _gt_steps(turn: dict) -> list[list[Call]]:
    return [calls_from_records(a.get("calls")) for a in (turn.get("actions") or []) if a.get("calls")]


def episodes_from_trajectories(rows: Sequence[dict], max_turns: int | None = None) -> tuple[list[Episode], list[dict]]:
    """One episode per train-split trajectory (held-out scenarios never enter RL). A trajectory
    whose environment cannot be built is a reject, and so is one that doing nothing would win
    (τ²'s success is its database check: a task whose reference actions only read gives no signal)."""
    out, rejects = [], []
    for t in rows:
        if t.get("split") == "held_out":
            continue
        turns = [{"query": tr.get("query") or "", "steps": _gt_steps(tr)} for tr in (t.get("turns") or [])]
        turns = turns[:max_turns] if max_turns else turns
        if not turns:
            rejects.append(reject(STAGE, t.get("trajectory_id"), "no_turns", "trajectory has no user turn"))
            continue
        ep = Episode(t["trajectory_id"], list(t.get("involved_classes") or []), t.get("initial_config") or "{}",
                     t.get("tools") or "[]", t.get("scenario") or "", turns, bool(t.get("long_context")), env=t.get("env") or "bfcl")
        try:
            idle, target = ep.make_env(), ep.make_env()
        except EnvError as e:
            rejects.append(reject(STAGE, t.get("trajectory_id"), "env_error", str(e)))
            continue
        expected = [o for tr in turns for step in tr["steps"] for o in target.execute(step)]
        if idle.success(target, expected, []):
            rejects.append(reject(STAGE, t.get("trajectory_id"), "vacuous_success", (
                f"a policy that does nothing passes the {ep.env} success check on every turn (the reference actions "
                "leave the state unchanged and produce no observation the check asks for): no learning signal")))
            continue
        out.append(ep)
    return out, rejects


def single_step_episodes(rows: Sequence[dict], docs_style: DocStyle = "json") -> tuple[list[Episode], list[dict]]:
    """ST-GRPO: every function-call step of every train trajectory is its own one-action episode,
    with the raw prefix as context and the earlier ground-truth calls replayed into the env."""
    eps, rejects = [], []
    base, rej = episodes_from_trajectories(rows)
    rejects += rej
    by_id = {t["trajectory_id"]: t for t in rows}
    for ep in base:
        for seg in segment_trajectory(by_id[ep.episode_id], SegmentConfig()):
            i, j = seg["turn_index"], seg["step_index"]
            setup = [c for tr in ep.turns[:i] for s in tr["steps"] for c in s] + [c for s in ep.turns[i]["steps"][:j] for c in s]
            step = calls_from_records(seg["target_calls"])
            eps.append(Episode(seg["segment_id"], ep.involved_classes, ep.initial_config, seg["tools"], ep.scenario,
                               [{"query": seg["query"], "steps": [step]}], ep.long_context,
                               prefix=build_prompt(seg, awareness=False, docs_style=docs_style), setup=setup, env=ep.env))
    return eps, rejects


# -- chat scaffolding as token pieces --------------------------------------------------------

class ChatPieces:
    """Token pieces of the policy's chat template, derived by rendering and diffing, so any
    template works: the opening context, and what follows a generated action (the assistant
    close, the next messages, the next generation prompt)."""

    _MARK = "\u2063ACTION\u2063"

    def __init__(self, tokenizer):
        self.tok = tokenizer
        render = lambda msgs, gen: tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)  # noqa: E731
        self._render = render
        probe = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
        with_action = render(probe + [{"role": "assistant", "content": self._MARK}], False)
        self._probe = probe
        self._with_action = with_action
        self.close = with_action[with_action.index(self._MARK) + len(self._MARK):]
        self.eos_ids = {i for i in [tokenizer.eos_token_id, *(getattr(tokenizer, "additional_eos_ids", None) or [])] if i is not None}
        self.eos_text = tokenizer.decode([tokenizer.eos_token_id]) if tokenizer.eos_token_id is not None else ""

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def start(self, messages: list[dict]) -> list[int]:
        return self.encode(self._render(messages, True))

    def split_start(self, messages: list[dict]) -> tuple[list[int], list[int]]:
        """The opening context as (info_meta tokens, the rest): the system message as the template
        renders it alone, and the remainder, each tokenised on its own. (All tokens in the first
        part when the template does not render the system message as a prefix.)"""
        full = self._render(messages, True)
        sys_only = self._render(messages[:1], False)
        if messages[0]["role"] != "system" or not full.startswith(sys_only):
            return self.encode(full), []
        return self.encode(sys_only), self.encode(full[len(sys_only):])

    def close_ids(self, generated: list[int]) -> list[int]:
        """The assistant message's close after ``generated`` (nothing if the model's EOS already closed it)."""
        close = self.close
        if generated and generated[-1] in self.eos_ids and close.startswith(self.eos_text):
            close = close[len(self.eos_text):]
        return self.encode(close)

    def after(self, generated: list[int], messages: list[dict]) -> list[int]:
        """Environment tokens after an action: close the assistant message (unless the model's
        EOS already did), then ``messages`` (tool results or a user turn), then the generation prompt."""
        full = self._render(self._probe + [{"role": "assistant", "content": self._MARK}] + messages, True)
        suffix = full[len(self._with_action):] if full.startswith(self._with_action) else full
        close = self.close
        if generated and generated[-1] in self.eos_ids and close.startswith(self.eos_text):
            close = close[len(self.eos_text):]
        return self.encode(close + suffix)


# -- the rollout -----------------------------------------------------------------------------

class _Play:
    """One episode in flight: its envs, its token stream with the layout, and the facts of each step."""

    def __init__(self, ep: Episode, mode: Mode, pieces: ChatPieces, awareness_prompt: bool, docs_style: DocStyle):
        self.ep, self.mode, self.p = ep, mode, pieces
        self.env, self.target = ep.make_env(), ep.make_env()
        for env in (self.env, self.target):
            env.execute(ep.setup)
        self.awareness = mode == "awareness"  # compact context: info_meta, Q_i, own summary
        self.prompted = awareness_prompt  # asked for <summary> (TEMPLATE requires it)
        self.system = policy_prompts.policy_system(ep.tools, ep.scenario, docs_style, awareness=awareness_prompt)
        self.turn = 0
        self.turn_actions = 0
        self.progress: str | None = None
        self.actions: list[dict] = []
        self.steps: list[Step] = []
        self.turns_passed: list[bool] = []
        self.done = False
        self.stop_reason = ""
        self.stream: list[int] = []
        self.mask: list[int] = []
        self.logps: list[float] | None = []
        self.positions: list[int] = []
        self.blocks: list[int] = []
        self.shared, self.block, self.block_start = 0, 0, 0
        if self.awareness:
            self._new_block(self._open_turn(first=True))
        else:
            self._extend(pieces.start(self._turn_messages()), model=False)
        self.prompt_len = len(self.stream)
        self._begin_turn()

    def _turn_messages(self) -> list[dict]:
        if self.ep.prefix is not None:
            return self.ep.prefix
        q = self.ep.turns[self.turn]["query"]
        if self.awareness:  # the one renderer SFT rows use (sft_data.pag_prompt): the same tokens
            return policy_prompts.turn_messages(self.system, q, self.progress)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": q}]

    def _begin_turn(self) -> None:
        self.turn_obs: list[str] = []
        self.turn_actions = 0
        self.target_obs = [o for step in self.ep.turns[self.turn]["steps"] for o in self.target.execute(step)]

    def context(self) -> list[int]:
        """What the policy is sampled from now: info_meta and the current block (awareness), or
        the whole stream so far."""
        if not self.awareness:
            return list(self.stream)
        return self.stream[:self.shared] + self.stream[self.block_start:]

    def _open_turn(self, first: bool = False) -> list[int]:
        """Awareness mode: the tokens that open a turn's block. info_meta goes once at the start of
        the stream, shared by every block, when the template renders the system message as a prefix;
        otherwise each block carries its whole context."""
        sys_ids, rest = self.p.split_start(self._turn_messages())
        if first and rest:
            self._extend(sys_ids, model=False)
            self.shared = len(sys_ids)
        return rest if self.shared else self.p.start(self._turn_messages())

    def _new_block(self, ids: list[int]) -> None:
        """Awareness mode: a turn's block starts (it sees info_meta and itself; positions restart after info_meta)."""
        self.block += 1
        self.block_start = len(self.stream)
        self._extend(ids, model=False)

    def _extend(self, ids: list[int], model: bool, logps: list[float] | None = None) -> None:
        pos0 = self.shared + (len(self.stream) - self.block_start) if self.block else len(self.stream)
        self.stream += ids
        self.positions += list(range(pos0, pos0 + len(ids)))
        self.blocks += [self.block] * len(ids)
        self.mask += [1 if model else 0] * len(ids)
        if self.logps is not None:
            self.logps += logps if logps is not None else [0.0] * len(ids)

    def fits(self, extra: list[int], max_seq_len: int, reserve: int) -> bool:
        """Whether the stream can take ``extra`` and still hold a whole next action (``reserve``
        tokens): an engine refuses a context at its length limit (vLLM's max_model_len is
        max_seq_len), so an episode stops before its next context could reach it."""
        return len(self.stream) + len(extra) + reserve <= max_seq_len

    def step(self, gen: Generation, max_actions: int, max_turn_actions: int, max_seq_len: int, reserve: int = 0) -> None:
        ctx_tokens = len(self.context())
        generated = list(gen.ids)
        if gen.logprobs is None:
            self.logps = None
        self._extend(generated, model=True, logps=gen.logprobs)
        text = self.p.tok.decode(generated, skip_special_tokens=True)
        act = parse_action(text)
        if act.summary:
            self.progress = act.summary
        if act.has_calls:
            act.observations = self.env.execute(act.calls)
            self.turn_obs += act.observations
        n = len(self.actions) + 1
        self.turn_actions += 1
        single = self.ep.prefix is not None
        closed = single or not act.has_calls  # the policy ended the turn itself
        turn_over = closed or self.turn_actions >= max_turn_actions
        obs = None if turn_over else self.p.after(generated, [{"role": "tool", "content": o} for o in act.observations])
        episode_budget = n >= max_actions or (obs is not None and not self.fits(obs, max_seq_len, reserve))
        turn_ends = turn_over or episode_budget
        success = None
        if turn_ends:  # only a turn the policy closed can succeed; a spent budget fails it
            success = closed and self.env.success(self.target, self.target_obs, self.turn_obs)
            self.turns_passed.append(success)
        self.steps.append(Step(text, act, self.turn, turn_ends, success, list(act.observations)))
        self.actions.append({
            "turn": self.turn, "text": text, "summary": act.summary, "calls": [format_call(c) for c in act.calls or []],
            "observations": act.observations, "has_calls": act.has_calls, "turn_end": turn_ends, "success": success,
            "context_tokens": ctx_tokens, "model_tokens": len(generated),
        })
        last_turn = self.turn + 1 >= len(self.ep.turns)
        if single or (turn_ends and last_turn):
            self.done, self.stop_reason = True, "done"
        elif episode_budget:
            self.done = True
            self.stop_reason = "max_actions" if n >= max_actions else "max_seq_len"
        if self.done:
            return
        if not turn_ends:  # the observations go back to the policy
            self._extend(obs, model=False)
            return
        self.turn += 1
        self._begin_turn()
        if self.awareness:  # a fresh block: info_meta, Q_i and the policy's own summary only
            close, opening = self.p.close_ids(generated), self._open_turn()
        else:
            close, opening = self.p.after(generated, [self._turn_messages()[-1]]), []
        if not self.fits(close + opening, max_seq_len, reserve):  # the next turn could not be played whole
            self.done, self.stop_reason = True, "max_seq_len"
            return
        self._extend(close, model=False)
        if self.awareness:
            self._new_block(opening)

    def played(self) -> Played:
        return Played(self.ep.episode_id, self.ep.tools, [t["query"] for t in self.ep.turns], self.prompted, self.steps)

    def result(self, per_action: list[dict[str, float]], returns: dict[str, float]) -> Rollout:
        passed = self.turns_passed + [False] * (len(self.ep.turns) - len(self.turns_passed))
        for a, terms in zip(self.actions, per_action, strict=True):
            a["terms"], a["reward"] = terms, sum(terms.values())
        k = self.prompt_len
        return Rollout(self.ep.episode_id, self.stream[:k], self.stream[k:], self.mask[k:], self.actions, passed, returns,
                       self.stop_reason, self.positions, self.blocks, None if self.logps is None else self.logps[k:])


def run_episodes(episodes: Sequence[Episode], generate: GenerateFn, tokenizer, mode: Mode, rubric: Rubric,
                 max_actions: int = 10, max_seq_len: int = 16384, awareness_prompt: bool | None = None,
                 max_turn_actions: int = 5, docs_style: DocStyle = "json", max_action_tokens: int = 0) -> list[Rollout]:
    """Play all episodes in lockstep: each round asks ``generate`` once for every episode still
    running, so a batched backend sees one batch per round; then ``rubric`` scores them all at once.
    ``awareness_prompt`` (default: the ``awareness`` mode) asks for ``<summary>`` in the system
    prompt and the template check."""
    if mode not in MODES:
        raise ValueError(f"unknown rollout mode {mode!r}; choose from {MODES}")
    pieces = ChatPieces(tokenizer)
    prompted = mode == "awareness" if awareness_prompt is None else awareness_prompt
    plays = [_Play(ep, mode, pieces, prompted, docs_style) for ep in episodes]
    if long := [p.ep.episode_id for p in plays if not p.fits([], max_seq_len, max_action_tokens)]:
        raise ValueError(f"{len(long)} episodes (e.g. {long[0]}) open with a prompt that leaves no room for one action of "
                         f"{max_action_tokens} tokens within max_seq_len={max_seq_len}: raise grpo.max_seq_len or select "
                         "shorter episodes")
    while active := [p for p in plays if not p.done]:
        outs = generate([p.context() for p in active])
        for p, out in zip(active, outs, strict=True):
            p.step(out if isinstance(out, Generation) else Generation(list(out)), max_actions, max_turn_actions, max_seq_len,
                   max_action_tokens)
    scores = rubric.score([p.played() for p in plays])
    return [p.result(per_action, returns) for p, (per_action, returns) in zip(plays, scores, strict=True)]
