"""Stage ``synthesize`` (Appendix B, after APIGen-MT): verified multi-turn trajectories made from
scratch in the BFCL environments.

One attempt:

1. **Initial config.** Pick the involved classes, show k exemplar ``initial_config`` s of BFCL train
   entries with those classes, ask LLM_gen for one new config. It must parse, set a non-default
   state for every stateful class, load in a fresh ``BFCLEnv`` and not copy an exemplar; otherwise
   the error goes back to the generator (at most ``max_iterations`` tries).
2. **Query.** LLM_gen writes the next user request from the config and the turns so far.
3. **Action.** K candidate call lists from the action role; each is parsed with ``parse_calls``
   (unparsable = no vote) and grouped with ``schema_equal``. The largest group wins if it is the
   only largest one and holds at least ``vote_threshold`` of the K; else ``no_consensus``.
4. **Verification.** The winner runs in the attempt's hermetic env. A call that errors fails the
   turn; a changed state snapshot passes it; a read-only turn goes to R reviewers, and passes on a
   strict majority of "yes".

The first failed turn ends the attempt; its verified prefix is kept when it has ``min_turns`` turns.
Attempts advance in lockstep, so each phase of a wave of attempts is one batched gateway call
(local models answer the wave in one forward pass, remote endpoints see it concurrently).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from progra_core import versioning
from progra_core.calls import Call, calls_to_records
from progra_core.config import SynthesizeConfig
from progra_core.data.synthesis_checks import (
    Vote,
    extract_json,
    is_error_observation,
    review_majority,
    review_verdict,
    state_changed,
    validate_config,
    validate_plugin_config,
    vote,
)
from progra_core.envs import registry
from progra_core.envs.base import Env, StateTooLarge
from progra_core.envs.bfcl import STATELESS_CLASSES, function_docs
from progra_core.envs.factory import make_env
from progra_core.llm import ChatRequest, ChatResult, guided
from progra_core.prompts import tools as prompt_tools
from progra_core.prompts.synthesis import (
    ACTION_PREFIX,
    CONFIG_RETRY,
    QUERY_PREFIX,
    REVIEW_PREFIX,
    action_messages,
    config_messages,
    query_messages,
    review_messages,
)
from progra_core.schemas import SYNTHESIS_ATTEMPTS, TRAJECTORIES, reject

__all__ = [
    "STAGE", "ATTEMPTS_STAGE", "CODE_VERSION", "SYNTHESIS_ATTEMPTS", "STOP_REASONS", "Vote", "vote", "state_changed",
    "review_verdict", "review_majority", "extract_json", "validate_config", "plan_attempts", "synthesize_wave",
    "split_outcomes", "is_error_observation",
]

STAGE = "synthesize"
ATTEMPTS_STAGE = "synthesis_attempts"
#: The LLM roles an attempt calls: configs and queries, the K action candidates, the R reviewers.
ROLES = ("generator", "action", "reviewer")
CODE_VERSION = versioning.code_version("1", __name__)

#: Why an attempt stopped. ``completed`` = every turn verified; the rest name the failed step.
STOP_REASONS = ("completed", "no_exemplars", "config_invalid", "query_empty", "query_repeated", "no_consensus",
                "execution_error", "review_rejected", "llm_error")

#: What a shard stores: the attempt plus its trajectory row (null unless accepted).
_SHARD = SYNTHESIS_ATTEMPTS.append(pa.field("trajectory", pa.struct(list(TRAJECTORIES))))


# -- planning ---------------------------------------------------------------------------------

def _rng(*parts: Any) -> random.Random:
    return random.Random(int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:16], 16))


def plan_attempts(cfg: SynthesizeConfig, entries: list[dict]) -> list[dict]:
    """One spec per attempt: id, seed, involved classes and exemplar configs. Deterministic in
    ``cfg.seed``. ``entries`` are the seed pool (BFCL train entries: held-out scenarios never seed
    synthesis; a plugin env: its ``seeds``, classes empty). Exemplars come from entries with
    exactly these classes, else from entries that include them (restricted to them)."""
    given = cfg.involved_classes if cfg.env == "bfcl" else []  # a plugin env has no classes to pick
    class_sets = [list(c) for c in given] or sorted({tuple(e["involved_classes"]) for e in entries}) or [[]]
    specs = []
    for i in range(cfg.attempts):
        rng = _rng(cfg.seed, i)
        classes = list(class_sets[i % len(class_sets)] if given else rng.choice(class_sets))
        pool = [e for e in entries if set(e["involved_classes"]) == set(classes)]
        pool = pool or [e for e in entries if set(classes) <= set(e["involved_classes"])]
        picked = rng.sample(pool, min(cfg.exemplars, len(pool)))
        specs.append({
            "attempt_id": f"synth-{cfg.seed}-{i:05d}",
            "seed": int(hashlib.sha256(f"{cfg.seed}:{i}".encode()).hexdigest()[:8], 16),
            "involved_classes": classes,
            "exemplar_ids": [e["id"] for e in picked],
            "exemplars": [{c: e["initial_config"][c] for c in classes if c in e["initial_config"]} if classes
                          else dict(e["initial_config"]) for e in picked],
        })
    return specs


# -- the loop ---------------------------------------------------------------------------------

@dataclass
class _Attempt:
    spec: dict
    tools: str = ""
    tools_text: str = ""
    scenario: str = ""
    env: Env | None = None
    config: dict | None = None
    config_messages: list[dict] = field(default_factory=list)
    config_errors: list[str] = field(default_factory=list)
    turns: list[dict] = field(default_factory=list)
    log: list[dict] = field(default_factory=list)
    stop_reason: str | None = None
    stop_turn: int | None = None
    query: str | None = None
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def live(self) -> bool:
        return self.stop_reason is None

    def account(self, res: ChatResult) -> None:
        self.calls += 1
        self.prompt_tokens += res.prompt_tokens
        self.completion_tokens += res.completion_tokens

    def stop(self, reason: str, turn: int | None = None, **log) -> None:
        self.stop_reason, self.stop_turn = reason, turn
        if turn is not None:
            self.log.append(_turn_log(turn, self.query, **log, outcome=reason))


def _turn_log(turn: int, query: str | None, outcome: str, candidates: int = 0, parsed: int = 0, groups: int = 0,
              top_share: float = 0.0, calls: list[Call] | None = None, state_changed: bool | None = None,
              review_yes: int = 0, review_no: int = 0) -> dict:
    return {"turn_index": turn, "query": query, "candidates": candidates, "parsed": parsed, "groups": groups,
            "top_share": top_share, "calls": calls_to_records(calls or []), "state_changed": state_changed,
            "review_yes": review_yes, "review_no": review_no, "outcome": outcome}


def _clean_query(text: str | None) -> str:
    text = (text or "").strip()
    text = re.sub(r"^(?:\*\*)?(?:user(?:'s next request)?|query|request)(?:\*\*)?\s*:\s*", "", text, flags=re.I)
    text = text.split("\n\n")[0].strip().strip('"').strip()
    return text[:1000]


def synthesize_wave(specs: list[dict], gateway, cfg: SynthesizeConfig, models: dict[str, str],
                    endpoints: dict[str, dict] | None = None, step_mode: str = "per_call") -> pa.Table:
    """Run a wave of attempts in lockstep; one row per attempt (``_SHARD`` schema).

    ``models``: generator, action and reviewer model strings; ``endpoints``: per role
    ``{api_base, api_key_env}``."""
    endpoints = endpoints or {}
    attempts = [_Attempt(spec) for spec in specs]
    local_configs = cfg.guided and models["generator"].startswith("local/")
    bfcl = cfg.env == "bfcl"
    about = None if bfcl or not attempts else _plugin_scenario(cfg.env, [a.spec["exemplars"] for a in attempts])
    for a in attempts:
        docs = function_docs(a.spec["involved_classes"]) if bfcl else registry.docs(cfg.env, a.spec["involved_classes"])
        a.tools = json.dumps(docs)
        a.tools_text = prompt_tools.render_tools(docs)
        if not a.spec["exemplars"]:
            a.stop("no_exemplars")
        else:  # a guided local generator sees the exemplars' structure only: it fills the prose itself
            shown = [guided.mask_free_text(e) for e in a.spec["exemplars"]] if local_configs else a.spec["exemplars"]
            a.config_messages = config_messages(a.spec["involved_classes"], shown, about)

    def request(a: _Attempt, role: str, messages: list[dict], **kw) -> ChatRequest:
        model = models[role]
        kw.setdefault("seed", a.spec["seed"])
        if not model.startswith("local/"):
            kw.pop("prefix", None)
        return ChatRequest(messages, model, role=role, id=a.spec["attempt_id"], **endpoints.get(role, {}), **kw)

    # 1. initial config, with the validation error fed back
    for it in range(cfg.max_iterations):
        todo = [a for a in attempts if a.live and a.config is None]
        if not todo:
            break
        reqs = []
        for a in todo:
            first = next((c for c in a.spec["involved_classes"] if c not in STATELESS_CLASSES), None) if bfcl else None
            reqs.append(request(a, "generator", a.config_messages, temperature=cfg.temperature, max_tokens=cfg.config_max_tokens,
                                sample=it, prefix=f'{{"{first}": {{' if first else "{"))
        if local_configs:  # a small model fills an exemplar's prose
            answers = guided.guided_json(gateway, [replace(r, prefix=None) for r in reqs],
                                         [a.spec["exemplars"][it % len(a.spec["exemplars"])] for a in todo])
        else:
            answers = gateway.batch(reqs)
        for a, res in zip(todo, answers, strict=True):
            a.account(res)
            if not res.ok:
                a.stop("llm_error")
                a.config_errors.append(f"llm_error: {res.error}")
                continue
            config, err = (validate_config(res.text, a.spec["involved_classes"], a.spec["exemplars"]) if bfcl
                           else validate_plugin_config(res.text, cfg.env, a.spec["exemplars"]))
            if err is None:
                a.config, a.env = config, make_env(cfg.env, a.spec["involved_classes"], config)
                a.scenario = a.env.scenario()
                continue
            a.config_errors.append(err)
            a.config_messages = [*a.config_messages, {"role": "assistant", "content": res.text},
                                 {"role": "user", "content": CONFIG_RETRY.format(error=err)}]
    for a in attempts:
        if a.live and a.config is None:
            a.stop("config_invalid")

    for turn in range(cfg.turns):
        # 2. query
        live = [a for a in attempts if a.live]
        if not live:
            break
        reqs = [request(a, "generator", query_messages(a.scenario, a.tools_text, a.config, a.turns),
                        temperature=cfg.temperature, max_tokens=cfg.query_max_tokens, sample=turn, prefix=QUERY_PREFIX)
                for a in live]
        for a, res in zip(live, gateway.batch(reqs), strict=True):
            a.account(res)
            a.query = _clean_query(res.text) if res.ok else None
            if not res.ok:
                a.stop("llm_error", turn)
            elif not a.query:
                a.stop("query_empty", turn)
            elif any(a.query.lower() == t["query"].lower() for t in a.turns):
                a.stop("query_repeated", turn)

        # 3. action: K candidates, majority vote
        live = [a for a in attempts if a.live]
        reqs = [request(a, "action", action_messages(a.scenario, a.tools_text, a.turns, a.query),
                        temperature=cfg.action_temperature, max_tokens=cfg.action_max_tokens, sample=k,
                        seed=a.spec["seed"] + 1000 * turn + k, prefix=ACTION_PREFIX)
                for a in live for k in range(cfg.candidates)]
        if cfg.guided and models["action"].startswith("local/"):
            answers = guided.guided_calls(gateway, reqs, [live[i // cfg.candidates].tools for i in range(len(reqs))],
                                          max_calls=cfg.max_calls)
        else:
            answers = gateway.batch(reqs)
        review: list[tuple[_Attempt, list[Call], list[str], Vote]] = []
        for n, a in enumerate(live):
            mine = answers[n * cfg.candidates:(n + 1) * cfg.candidates]
            for res in mine:
                a.account(res)
            if all(not r.ok for r in mine):
                a.stop("llm_error", turn, candidates=cfg.candidates)
                continue
            v = vote([r.text if r.ok else None for r in mine], cfg.candidates, cfg.vote_threshold, a.env.resolve)
            info = dict(candidates=cfg.candidates, parsed=v.parsed, groups=v.groups, top_share=v.top_share)
            if v.calls is None:
                a.stop("no_consensus", turn, **info)
                continue
            # 4. verification, deterministic tier: errors fail, a state change passes
            try:
                before = a.env.snapshot()
                obs = a.env.execute(v.calls)
                changed = state_changed(before, a.env.snapshot())
            except StateTooLarge:  # a state past the walk's bounds cannot be verified
                a.stop("state_too_large", turn, **info, calls=v.calls)  # the reason is the outcome
                continue
            if any(is_error_observation(o) for o in obs):
                a.stop("execution_error", turn, **info, calls=v.calls, state_changed=changed)
                continue
            if changed:
                _accept_turn(a, turn, v, obs, True, 0, 0, step_mode, cfg.candidates)
            else:
                review.append((a, v.calls, obs, v))

        # 4. verification, reviewer tier for read-only turns
        if review:
            reqs = [request(a, "reviewer", review_messages(a.query, calls, obs), temperature=cfg.reviewer_temperature,
                            max_tokens=8, sample=r, seed=a.spec["seed"] + 1000 * turn + r, prefix=REVIEW_PREFIX,
                            **({"extra": {"choices": ["yes", "no"]}} if models["reviewer"].startswith("local/") else {}))
                    for a, calls, obs, _ in review for r in range(cfg.reviewers)]
            answers = gateway.batch(reqs)
            for n, (a, calls, obs, v) in enumerate(review):
                mine = answers[n * cfg.reviewers:(n + 1) * cfg.reviewers]
                for res in mine:
                    a.account(res)
                yes, no, passed = review_majority([r.text if r.ok else None for r in mine])
                if passed:
                    _accept_turn(a, turn, v, obs, False, yes, no, step_mode, cfg.candidates)
                else:
                    a.stop("review_rejected", turn, candidates=cfg.candidates, parsed=v.parsed, groups=v.groups,
                           top_share=v.top_share, calls=calls, state_changed=False, review_yes=yes, review_no=no)

    rows = []
    now = datetime.now(UTC)
    for a in attempts:
        reason = a.stop_reason or "completed"
        accepted = len(a.turns) >= cfg.min_turns and a.config is not None
        traj = _trajectory(a, now, cfg.env) if accepted else None
        rows.append({
            "attempt_id": a.spec["attempt_id"], "seed": a.spec["seed"], "involved_classes": a.spec["involved_classes"],
            "exemplar_ids": a.spec["exemplar_ids"], "config_iterations": len(a.config_errors) + (a.config is not None),
            "config_errors": a.config_errors, "initial_config": json.dumps(a.config) if a.config is not None else None,
            "stop_reason": reason, "stop_turn": a.stop_turn, "turns_verified": len(a.turns), "accepted": accepted,
            "trajectory_id": traj["trajectory_id"] if traj else None, "turns": a.log, "llm_calls": a.calls,
            "prompt_tokens": a.prompt_tokens, "completion_tokens": a.completion_tokens, "created_at": now, "trajectory": traj,
        })
    return pa.Table.from_pylist(rows, schema=_SHARD)


def _accept_turn(a: _Attempt, turn: int, v: Vote, obs: list[str], changed: bool, yes: int, no: int, step_mode: str,
                 k: int) -> None:
    calls = v.calls or []
    groups = [[c] for c in calls] if step_mode == "per_call" else [calls]
    actions, k = [], 0
    for g in groups:
        actions.append({"calls": calls_to_records(g), "observations": obs[k:k + len(g)]})
        k += len(g)
    a.turns.append({"query": a.query, "actions": actions, "reply": None, "tools_added": []})
    a.log.append(_turn_log(turn, a.query, "ok", k, v.parsed, v.groups, v.top_share, calls, changed, yes, no))


def _plugin_scenario(env: str, exemplars: list[list[dict]]) -> str | None:
    """What a plugin env says about itself (its scenario), from an episode of the first seed."""
    first = next((e[0] for e in exemplars if e), None)
    try:
        return make_env(env, [], first).scenario() if first is not None else None
    except Exception:  # noqa: BLE001 - the prompt does without it; the config check reports the env's error
        return None


def _trajectory(a: _Attempt, now: datetime, env: str = "bfcl") -> dict:
    return {
        "trajectory_id": f"synth:{a.spec['attempt_id']}", "source": "synth", "source_id": a.spec["attempt_id"],
        "category": "base" if env == "bfcl" else env, "split": "train", "env": env, "involved_classes": a.spec["involved_classes"],
        "initial_config": json.dumps(a.config), "tools": a.tools, "scenario": a.scenario, "long_context": False,
        "turns": a.turns, "n_turns": len(a.turns), "n_calls": sum(len(x["calls"]) for t in a.turns for x in t["actions"]),
        "created_at": now,
    }


def split_outcomes(table: pa.Table | None) -> tuple[pa.Table, pa.Table, list[dict], dict]:
    """(synthesized trajectories, synthesis_attempts, rejects, stats). Every attempt that was not
    accepted is also a reject with its stop reason, so in = out + rejects holds for the stage."""
    if table is None or table.num_rows == 0:
        return TRAJECTORIES.empty_table(), SYNTHESIS_ATTEMPTS.empty_table(), [], {"rows": 0, "attempts": 0}
    rows = table.to_pylist()
    trajs = [r["trajectory"] for r in rows if r["trajectory"] is not None]
    attempts = pa.Table.from_pylist([{k: r[k] for k in SYNTHESIS_ATTEMPTS.names} for r in rows], schema=SYNTHESIS_ATTEMPTS)
    rejects = [reject(STAGE, r["attempt_id"], r["stop_reason"],
                      f"stopped at {'the config' if r['stop_turn'] is None else 'turn ' + str(r['stop_turn'])} with "
                      f"{r['turns_verified']} verified turn(s)" + (f"; last config error: {r['config_errors'][-1]}" if r["config_errors"] and r["initial_config"] is None else ""),
                      json.dumps({"involved_classes": r["involved_classes"], "initial_config": r["initial_config"]}))
               for r in rows if not r["accepted"]]
    stats = funnel_counts(rows)
    stats.update(rows=len(trajs), rejects=len(rejects), rejects_by_reason=dict(Counter(r["reason"] for r in rejects)))
    return pa.Table.from_pylist(trajs, schema=TRAJECTORIES), attempts, rejects, stats


def funnel_counts(rows: list[dict]) -> dict:
    """attempts -> config ok -> per turn (reached, query ok, consensus, verified) -> accepted."""
    per_turn: dict[int, Counter] = {}
    for r in rows:
        for t in r["turns"]:
            c = per_turn.setdefault(t["turn_index"], Counter())
            c["reached"] += 1
            c["query_ok"] += t["outcome"] not in ("query_empty", "query_repeated") and not (t["outcome"] == "llm_error" and not t["candidates"])
            c["consensus"] += t["outcome"] in ("ok", "execution_error", "review_rejected")
            c["verified"] += t["outcome"] == "ok"
    return {
        "attempts": len(rows),
        "config_ok": sum(r["initial_config"] is not None for r in rows),
        "turns": {str(k): {n: int(c[n]) for n in ("reached", "query_ok", "consensus", "verified")} for k, c in sorted(per_turn.items())},
        "accepted": sum(bool(r["accepted"]) for r in rows),
        "stop_reasons": dict(Counter(r["stop_reason"] for r in rows)),
        "turns_verified": sum(r["turns_verified"] for r in rows),
        "llm_calls": sum(r["llm_calls"] for r in rows),
    }


def funnel_rows(stats: dict, min_turns: int) -> list[tuple[str, int, int, int]]:
    """The synthesis funnel: attempts -> config valid -> per turn query / consensus / verified -> accepted."""
    n, ok = stats.get("attempts", 0), stats.get("config_ok", 0)
    rows = [("attempts", n, n, 0), ("initial config valid", n, ok, n - ok)]
    for t, c in (stats.get("turns") or {}).items():
        rows += [(f"turn {t}: query", c["reached"], c["query_ok"], c["reached"] - c["query_ok"]),
                 (f"turn {t}: consensus", c["query_ok"], c["consensus"], c["query_ok"] - c["consensus"]),
                 (f"turn {t}: verified", c["consensus"], c["verified"], c["consensus"] - c["verified"])]
    acc = stats.get("accepted", 0)
    rows.append((f"accepted (>= {min_turns} verified turns)", n, acc, n - acc))
    return rows
