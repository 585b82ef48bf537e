"""TARL's turn-level judge as a reward term: an LLM (``models.judge``, any LiteLLM model or
``local/``) scores every finished turn of every rollout -1, 0 or 1 from the request, the calls,
their results and the closing answer; the score lands on the action that closed the turn, weighted
by ``grpo.term_weights['judge']``. All turns of a batch are one gateway call (concurrent on an
endpoint, batched for a local model), and the gateway's response cache means a rerun never pays
for a verdict twice. A local judge picks its verdict by likelihood among the three (it always
parses); an answer without a verdict scores 0."""

from __future__ import annotations

from collections.abc import Sequence

from progra_core.calls import format_call
from progra_core.llm.types import LOCAL_PREFIX, ChatRequest, Endpoint
from progra_core.prompts.judge import JUDGE_PREFIX, VERDICTS, judge_messages, parse_verdict
from progra_core.prompts.policy import visible_text
from progra_core.train.rewards import Played, RewardFunc, model_term

__all__ = ["judge_term", "turns_of"]


def turns_of(p: Played) -> list[tuple[int, str, list[tuple[list[str], list[str]]], str | None]]:
    """(index of the closing action, request, steps as (calls, results), closing answer) per finished turn."""
    out, steps = [], []
    for j, s in enumerate(p.steps):
        if s.action.has_calls:
            steps.append(([format_call(c) for c in s.action.calls], list(s.observations)))
        if s.turn_end:
            answer = None if s.action.has_calls else visible_text(s.text)
            out.append((j, p.queries[s.turn] if s.turn < len(p.queries) else "", steps, answer))
            steps = []
    return out


@model_term("judge", role="judge")
def judge_term(gateway, endpoint: Endpoint, temperature: float = 0.0, max_tokens: int = 8, seed: int = 0,
               stats: dict | None = None) -> RewardFunc:
    """The ``judge`` reward term over ``gateway``; ``stats`` (if given) counts verdicts and misses."""
    local = endpoint.model.startswith(LOCAL_PREFIX)

    def judge(played: Sequence[Played]) -> list[list[float]]:
        values = [[0.0] * len(p.steps) for p in played]
        where, reqs = [], []
        for i, p in enumerate(played):
            for j, query, steps, answer in turns_of(p):
                where.append((i, j))
                reqs.append(ChatRequest(judge_messages(query, steps, answer), endpoint.model, role="judge",
                                        temperature=temperature, max_tokens=max_tokens, seed=seed, prefix=JUDGE_PREFIX,
                                        api_base=endpoint.api_base, api_key_env=endpoint.api_key_env,
                                        id=f"{p.episode_id}#a{j}", extra={"choices": list(VERDICTS)} if local else {}))
        for (i, j), res in zip(where, gateway.batch(reqs) if reqs else [], strict=True):
            verdict = parse_verdict(res.text) if res.ok else None
            values[i][j] = float(verdict or 0)
            if stats is not None:
                key = "unparsed" if verdict is None else f"verdict_{verdict}"
                stats[key] = stats.get(key, 0) + 1
        return values

    judge.__name__ = "judge"
    return judge
