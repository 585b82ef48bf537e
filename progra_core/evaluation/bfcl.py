"""Stage ``evaluate`` (§4.2): BFCL multi-turn (base, miss_func, miss_param) run the way bfcl-eval
runs a prompting model, scored with :mod:`progra_core.evaluation.scoring`.

Per entry, per turn, per step, as ``BaseHandler.inference_multi_turn_prompting`` does:

* the system prompt is BFCL's default (Python call format, JSON docs of the functions available
  at turn 0), built from bfcl-eval's own templates; ``prompt: policy`` uses the policy's training
  prompt instead (:mod:`progra_core.prompts.policy`);
* a miss_func turn that adds functions is a user message carrying their docs and BFCL's
  "I have updated some more functions" line; the system prompt never lists them before;
* each output is decoded into calls with :func:`~progra_core.prompts.policy.decode_calls`, the
  decoder RL uses too (the ``<answer>`` region if the model wrote tags, else the text without
  ``<think>``/``<summary>``, parsed with ``ast``, with BFCL's leniency);
  an output without calls ends the turn; calls run in the entry's own fresh ``BFCLEnv`` and their
  observations go back as ``tool`` messages (local models) or one user message (endpoints);
* more than ``max_steps_per_turn`` steps in a turn force-quits the entry (BFCL: 20).

Entries (× trials) play in lockstep: every active entry's next step is one ``Gateway.batch``
call, so a local model generates them in batches and an endpoint gets them concurrently.

bfcl-eval's data is imported inside the functions that use it: heavy, and only some callers need it."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

import pyarrow as pa

from progra_core import versioning
from progra_core.calls import Call, format_call
from progra_core.config import EvaluateConfig
from progra_core.envs.base import EnvError
from progra_core.envs.factory import make_env
from progra_core.evaluation import scoring
from progra_core.llm.gateway import LOCAL_PREFIX, ChatRequest, ChatResult
from progra_core.prompts import policy as policy_prompts
from progra_core.prompts.policy import ANSWER_STOP, decode_calls, parse_action
from progra_core.prompts.tools import DocStyle, render_tools
from progra_core.schemas import EVAL_RESULTS, reject
from progra_core.sources import bfcl as bfcl_data

__all__ = ["STAGE", "OUTPUT", "CODE_VERSION", "EVAL_RESULTS", "Subject", "force_answers", "bfcl_system_prompt",
           "select_test_entries", "trajectory_entry", "run_bfcl"]

STAGE = "evaluate"
OUTPUT = "eval_results"
CODE_VERSION = versioning.code_version("1", __name__)

PromptStyle = Literal["bfcl", "policy"]

_COT = ("\n\nBefore you answer, reason step by step inside <think></think>: what the user wants, what "
        "has been done, and which call comes next. Then write the function calls (or your reply) after </think>.")


def closed_answer(res: ChatResult) -> str:
    """The output as the conversation keeps it: generation stops at :data:`ANSWER_STOP` and servers
    drop the stop string, so an answer cut there is closed again (later steps show it as SFT does)."""
    text = res.text or ""
    if res.finish_reason == "stop" and "<answer>" in text and ANSWER_STOP not in text:
        return text + ANSWER_STOP
    return text


def force_answers(gateway, reqs: Sequence[ChatRequest], results: list[ChatResult], tokens: int) -> list[ChatResult]:
    """Budget forcing: an answer of a ``local/`` model that stopped for length (its token budget,
    or the loop stop) inside ``<summary>``/``<think>`` is continued once from
    :func:`~progra_core.prompts.policy.forced_answer` with ``tokens`` more, so it ends in an
    answer the scorer can read (base and trained alike; a remote endpoint takes no prefill). The
    continuation's text starts with the forced prefix; token counts and latency add up."""
    redo = [(i, p) for i, (q, r) in enumerate(zip(reqs, results, strict=True))
            if tokens and q.model.startswith(LOCAL_PREFIX) and q.prefix is None and r.ok and r.finish_reason == "length"
            and (p := policy_prompts.forced_answer(r.text or "")) is not None]
    if not redo:
        return list(results)
    more = gateway.batch([replace(reqs[i], prefix=p, max_tokens=tokens) for i, p in redo])
    out = list(results)
    for (i, _), res in zip(redo, more, strict=True):
        if res.ok:
            first = results[i]
            out[i] = replace(res, completion_tokens=first.completion_tokens + res.completion_tokens,
                             latency_ms=first.latency_ms + res.latency_ms)
    return out


@dataclass(frozen=True)
class Subject:
    """A model under test: how rows name it and how the gateway reaches it."""

    model_ref: str  # "base", a models-view model_id, or a LiteLLM string
    method: str  # "base", "reasoning", or the training recipe that produced it
    model: str  # gateway model string: local/<name> or a LiteLLM model
    api_base: str | None = None
    api_key_env: str | None = None
    cot: bool = False  # add the reasoning instruction (the Reasoning baseline)
    awareness: bool = False  # prompt: policy -> the awareness (summary/think/answer) format


def bfcl_system_prompt(functions: list[dict], docs_style: DocStyle = "json") -> str:
    """bfcl-eval's default system prompt (python calls, no tool-call tag, plaintext, classic style),
    composed from its own templates. With ``json`` docs it is bfcl-eval's prompt to the byte; with
    ``compact`` the docs are the one-line rendering the policy was trained with."""
    from bfcl_eval.constants import default_prompts as d

    style = d.PROMPT_STYLE_TEMPLATES["classic"]
    return d.PROMPT_TEMPLATE_MAPPING["plaintext"].format(
        persona=style["persona"], task=style["task"],
        tool_call_format=style["tool_call_no_tag"].format(output_format=d.OUTPUT_FORMAT_MAPPING["python"],
                                                          param_types=d.PARAM_TYPE_MAPPING["python"]),
        multiturn_behavior=style["multiturn_behavior"],
        available_tools=style["available_tools"].format(format="json" if docs_style == "json" else "compact text",
                                                        functions=render_tools(functions, style=docs_style)))


def added_functions_message(functions: list[dict], docs_style: DocStyle = "json") -> str:
    """bfcl-eval's miss_func turn: the new docs (as bfcl-eval writes them, or compact) and its line."""
    from bfcl_eval.constants.default_prompts import DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_PROMPTING

    docs = functions if docs_style == "json" else render_tools(functions, style=docs_style)
    return DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_PROMPTING.format(functions=docs)


def trajectory_entry(t: dict) -> dict:
    """A held-out trajectory of any env (a plugin's test file) as an entry this harness plays:
    its user turns, its calls as the ground truth, its env, config and tool docs."""
    gt = [[format_call(Call(c["name"], json.loads(c.get("arguments") or "{}"))) for a in turn["actions"] for c in a["calls"]]
          for turn in t["turns"]]
    return {"id": t["trajectory_id"], "category": t["env"], "env": t["env"],
            "question": [[{"role": "user", "content": turn["query"]}] for turn in t["turns"]], "ground_truth": gt,
            "involved_classes": list(t.get("involved_classes") or []),
            "initial_config": json.loads(t["initial_config"]) if t.get("initial_config") else None,
            "function": json.loads(t["tools"]) if t.get("tools") else []}


def select_test_entries(cfg: EvaluateConfig, held_out_percent: int = 50) -> list[dict]:
    """The evaluation slice: per category, the entries on ``cfg.split`` (held-out by default),
    ``cfg.limit`` of them, the first by BFCL order or the cheapest (smallest prompt) ones."""
    out = []
    for cat in cfg.categories:
        entries = bfcl_data.eval_entries(cat, None if cfg.split == "all" else cfg.split, held_out_percent)
        if cfg.select == "shortest":
            entries.sort(key=lambda e: (len(json.dumps(e["function"])) + len(json.dumps(e["question"])), e["id"]))
        out.extend(entries if cfg.limit is None else entries[:cfg.limit])
    return out


class _Run:
    """One (entry, trial) in flight: its messages, its environment, the calls of each turn."""

    def __init__(self, entry: dict, trial: int, subject: Subject, cfg: EvaluateConfig, docs_style: DocStyle = "json"):
        self.entry, self.trial, self.cfg, self.docs_style = entry, trial, cfg, docs_style
        self.remote = not subject.model.startswith("local/")
        long_context = entry["category"] == "long_context"
        self.env = make_env(entry.get("env") or "bfcl", entry["involved_classes"], entry["initial_config"], long_context)
        if cfg.prompt == "bfcl":
            system = bfcl_system_prompt(entry["function"], docs_style)
        else:
            system = policy_prompts.policy_system(entry["function"], self.env.scenario(), docs_style, subject.awareness)
        self.system = system + (_COT if subject.cot else "")
        #: the awareness layout (``policy.turn_messages``): a PAG policy under its training prompt sees
        #: info_meta, its own latest summary with the current request, and this turn's steps, as in RL
        self.pag = cfg.prompt == "policy" and subject.awareness
        self.progress: str | None = None
        self.query = ""
        self.turn_steps: list[dict] = []
        self.messages: list[dict] = []
        self.turns: list[list[list[Call]]] = []
        self.steps: list[dict] = []
        self.turn = -1
        self.step = 0
        self.done = False
        self.ended: str | None = None
        self.detail: str | None = None
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "latency_ms": 0.0}
        self._next_turn()

    def _next_turn(self) -> None:
        self.turn += 1
        self.step = 0
        if self.turn >= len(self.entry["question"]):
            self.done = True
            return
        msgs = [dict(m) for m in self.entry["question"][self.turn]]
        added = (self.entry.get("missed_function") or {}).get(str(self.turn))
        if added:
            msgs = [{"role": "user", "content": added_functions_message(added, self.docs_style)}]
        if self.turn == 0:  # BFCL: the default system prompt goes first, merged with any given one
            if msgs and msgs[0]["role"] == "system":
                msgs[0]["content"] = self.system + "\n\n" + msgs[0]["content"]
            else:
                msgs.insert(0, {"role": "system", "content": self.system})
        self.messages.extend(msgs)
        self.turns.append([])
        self.query = "\n\n".join(m["content"] for m in msgs if m["role"] == "user")
        self.turn_steps = []

    def context(self) -> list[dict]:
        """What the model is asked with now: the whole conversation, or the awareness layout."""
        if not self.pag:
            return list(self.messages)
        return policy_prompts.turn_messages(self.system, self.query, self.progress, self.turn_steps)

    def advance(self, res: ChatResult) -> None:
        for k in self.usage:
            self.usage[k] += getattr(res, k) or 0
        if res.error is not None or res.text is None:
            self.done, self.ended, self.detail = True, "inference_error", res.error or "no text"
            return
        text = closed_answer(res)
        self.messages.append({"role": "assistant", "content": text})
        self.turn_steps.append({"role": "assistant", "content": text})
        summary = parse_action(text).summary
        self.progress = summary or self.progress
        calls, err = decode_calls(text)
        log = {"turn": self.turn, "step": self.step, "text": text, "calls": [], "observations": [], "decode_error": err}
        self.steps.append(log)
        if not calls:
            self._next_turn()
            return
        obs = self.env.execute(calls)
        log["calls"], log["observations"] = [format_call(c) for c in calls], obs
        self.turns[-1].append(calls)
        results = [{"role": "tool", "name": format_call(c), "content": o} for c, o in zip(calls, obs, strict=True)]
        shown = [{"role": "user", "content": repr(results)}] if self.remote else results
        self.messages.extend(shown)
        self.turn_steps.extend(shown)
        self.step += 1
        if self.step > self.cfg.max_steps_per_turn:
            self.done, self.ended = True, "force_terminated"
            self.detail = f"more than {self.cfg.max_steps_per_turn} steps in turn {self.turn}"

    def row(self, subject: Subject) -> dict:
        score = scoring.check_entry(self.entry, self.turns, ended=self.ended, ended_detail=self.detail)
        return {
            "model_ref": subject.model_ref, "method": subject.method, "model": subject.model, "prompt": self.cfg.prompt,
            "benchmark": self.entry.get("env") or "bfcl", "category": self.entry["category"], "entry_id": self.entry["id"], "trial": self.trial,
            "passed": score.passed, "turn_passed": score.turn_passed, "turn_errors": score.turn_errors,
            "first_failed_turn": score.first_failed_turn, "n_turns": len(self.entry["question"]),
            "turns_played": len(self.turns), "n_steps": len(self.steps),
            "n_calls": sum(len(s["calls"]) for s in self.steps), "error_type": score.error_type, "error": score.error,
            "steps": self.steps, **self.usage, "created_at": datetime.now(UTC),
        }


def run_bfcl(entries: Sequence[dict], gateway, subject: Subject, cfg: EvaluateConfig,
             progress: Callable[[int, int], None] | None = None, docs_style: DocStyle = "json") -> tuple[pa.Table, list[dict]]:
    """Play every entry ``cfg.trials`` times in lockstep and score each run: one row per run, and
    a reject per entry whose environment cannot be built. ``gateway`` is anything with
    ``batch(list[ChatRequest]) -> list[ChatResult]``."""
    runs, rejects = [], []
    for e in entries:
        try:
            runs += [_Run(e, t, subject, cfg, docs_style) for t in range(cfg.trials)]
        except (EnvError, KeyError, TypeError, ValueError) as ex:
            rejects.append(reject(STAGE, e.get("id"), "env_error", f"{type(ex).__name__}: {ex}"))
    total = len(runs)
    while active := [r for r in runs if not r.done]:
        reqs = [ChatRequest(messages=r.context(), model=subject.model, role="policy", temperature=cfg.temperature,
                            max_tokens=cfg.max_tokens, stop=[ANSWER_STOP], seed=cfg.seed + r.trial, sample=r.trial, api_base=subject.api_base,
                            api_key_env=subject.api_key_env, id=f"{r.entry['id']}#{r.trial}") for r in active]
        for r, res in zip(active, force_answers(gateway, reqs, gateway.batch(reqs), cfg.forced_answer_tokens), strict=True):
            r.advance(res)
        if progress is not None:
            progress(sum(r.done for r in runs), total)
    return pa.Table.from_pylist([r.row(subject) for r in runs], schema=EVAL_RESULTS), rejects
