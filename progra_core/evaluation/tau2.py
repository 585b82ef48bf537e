"""Stage ``evaluate`` on τ²-bench (airline, retail, telecom): the model under test is the agent,
``models.user_simulator`` plays the customer, τ²'s own evaluator scores each conversation.

The conversation follows τ²'s orchestrator protocol:

* the agent opens with τ²'s greeting; the user simulator gets τ²'s own system prompt (its
  guidelines plus the task's scenario) and sees the agent's messages as the other party's;
* an agent output is either calls (decoded with :func:`~progra_core.prompts.policy.decode_calls`,
  i.e. ``ast``; they run in the task's own :class:`~progra_core.envs.tau2.Tau2Env` and the results
  go back to the agent) or a message to the user; ``###STOP###`` in it ends the conversation;
* a user message with ``###STOP###``, ``###TRANSFER###`` or ``###OUT-OF-SCOPE###`` ends it; on
  telecom the simulated user may instead call its device tools (listed in its prompt; calls in
  Python syntax, parsed the same way);
* every message counts one step, a batch of tool results one more; past ``tau2_max_steps`` steps
  or ``tau2_max_errors`` failed tool calls the run ends unfinished (reward 0, as τ² scores it).

The transcript is rebuilt as τ² messages and judged by ``tau2.evaluator.evaluate_simulation``
with ``EvaluationType.ALL`` (DB, env assertions, actions, communicate: τ²'s default). Runs play
in lockstep, agent and user requests of all runs in one ``Gateway.batch`` per round.

τ²-bench is imported inside the functions that use it: heavy, and only some callers need it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pyarrow as pa

from progra_core import versioning
from progra_core.calls import format_call
from progra_core.config import EvaluateConfig
from progra_core.envs.base import EnvError
from progra_core.envs.factory import make_env
from progra_core.envs.tau2 import Tau2Env, load_tasks
from progra_core.evaluation.bfcl import EVAL_RESULTS, STAGE, Subject
from progra_core.llm.gateway import ChatRequest, ChatResult
from progra_core.prompts import policy as policy_prompts
from progra_core.prompts.policy import decode_calls, visible_text
from progra_core.prompts.tools import DocStyle, render_tools
from progra_core.schemas import reject

__all__ = ["AGENT_STOP", "CODE_VERSION", "select_tau2_tasks", "agent_system_prompt", "run_tau2"]

CODE_VERSION = versioning.code_version("1", __name__)

AGENT_STOP = "###STOP###"
GREETING = "Hi! How can I help you today?"

_AGENT = """You are a customer service agent. Help the user with their request, strictly following the policy below.

Each reply you write does exactly one of two things:
1. Talk to the user: plain text, no function calls.
2. Act on the system: only a list of function calls in Python syntax, e.g. [func_a(x=1), func_b(name="y")]. The results come back to you, not to the user.
Never mix the two in one reply. Do not invent data you have not looked up. When the conversation is over, reply with {stop}.

<policy>
{policy}
</policy>

Functions you can call (JSON schema):
{tools}"""

_USER_TOOLS = """

Tools on your side (for actions the agent asks you to perform). To use one, reply with only a list of calls in Python syntax, e.g. [tool_name(arg="value")]; the result comes back to you, the agent does not see it:
{tools}"""


def agent_system_prompt(env: Tau2Env, subject: Subject, prompt: str, docs_style: DocStyle = "json") -> str:
    """τ²'s policy and tools in the call format the rest of the pipeline uses (``bfcl`` prompt),
    or the policy's own training prompt (``policy``), the tools rendered as the profile says."""
    tools = render_tools(env.tools(), style=docs_style)
    if prompt == "policy":
        return policy_prompts.policy_system(env.tools(), env.scenario(), docs_style, awareness=subject.awareness)
    return _AGENT.format(stop=AGENT_STOP, policy=env.scenario(), tools=tools)


def select_tau2_tasks(cfg: EvaluateConfig) -> list[tuple[str, object]]:
    """``(domain, task)`` per τ² task of the slice: ``tau2_split`` of each domain, first ``tau2_limit``."""
    out = []
    for d in cfg.tau2_domains:
        tasks = load_tasks(d, cfg.tau2_split)
        out += [(d, t) for t in (tasks if cfg.tau2_limit is None else tasks[:cfg.tau2_limit])]
    return out


class _Conversation:
    """One (task, trial): the env, the agent's and the user's message lists, the τ² transcript."""

    def __init__(self, domain: str, task, trial: int, subject: Subject, cfg: EvaluateConfig, user: dict,
                 docs_style: DocStyle = "json"):
        from tau2.data_model.message import AssistantMessage
        from tau2.user.user_simulator import UserSimulator

        self.domain, self.task, self.trial, self.cfg, self.user = domain, task, trial, cfg, user
        self.remote = not subject.model.startswith("local/")
        self.env = make_env("tau2", [domain], task.initial_state)
        self.user_tools = self.env.tools("user")
        sim = UserSimulator(instructions=task.user_scenario.instructions, tools=[] if self.user_tools else None)  # the simulator reads only whether there are tools
        user_system = sim.system_prompt + (_USER_TOOLS.format(tools=json.dumps(self.user_tools)) if self.user_tools else "")
        self.agent_msgs = [{"role": "system", "content": agent_system_prompt(self.env, subject, cfg.prompt, docs_style)},
                           {"role": "assistant", "content": GREETING}]
        self.user_msgs = [{"role": "system", "content": user_system}, {"role": "user", "content": GREETING}]
        self.transcript: list = [AssistantMessage(role="assistant", content=GREETING)]
        self.pending = "user"
        self.steps: list[dict] = []
        self.n_steps, self.user_turns = 1, 0
        self.done = False
        self.reason: str | None = None
        self.detail: str | None = None
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "latency_ms": 0.0}
        self.t0 = time.perf_counter()
        self.started = datetime.now(UTC).isoformat()

    def request(self, subject: Subject) -> ChatRequest:
        rid = f"{self.domain}:{self.task.id}#{self.trial}"
        if self.pending == "agent":
            return ChatRequest(messages=list(self.agent_msgs), model=subject.model, role="policy", temperature=self.cfg.temperature,
                               max_tokens=self.cfg.max_tokens, seed=self.cfg.seed + self.trial, sample=self.trial,
                               api_base=subject.api_base, api_key_env=subject.api_key_env, id=rid)
        return ChatRequest(messages=list(self.user_msgs), role="user_simulator", temperature=self.cfg.user_temperature,
                           max_tokens=self.cfg.user_max_tokens, seed=self.cfg.seed + self.trial, sample=self.trial, id=rid, **self.user)

    def _results(self, n: int, remote: bool) -> list[dict]:
        logged = self.env.log[-n:]
        if remote:
            return [{"role": "user", "content": repr([{"name": tc.name, "content": m.content} for tc, m in logged])}]
        return [{"role": "tool", "content": m.content} for _, m in logged]

    def _run_calls(self, calls, requestor: str) -> list[str]:
        from tau2.data_model.message import AssistantMessage, UserMessage

        obs = self.env.execute(calls, requestor=requestor)
        logged = self.env.log[-len(calls):]
        cls = UserMessage if requestor == "user" else AssistantMessage
        self.transcript += [cls(role=requestor, content=None, tool_calls=[tc for tc, _ in logged]), *(m for _, m in logged)]
        self.n_steps += 2
        return obs

    def _end(self, reason: str, detail: str | None = None) -> None:
        self.done, self.reason, self.detail = True, reason, detail

    def advance(self, res: ChatResult) -> None:
        from tau2.data_model.message import AssistantMessage, UserMessage
        from tau2.user.base import OUT_OF_SCOPE, STOP, TRANSFER

        for k in self.usage:
            self.usage[k] += getattr(res, k) or 0
        who = self.pending
        if res.error is not None or res.text is None:
            return self._end("agent_error" if who == "agent" else "user_error", f"inference error: {res.error or 'no text'}")
        text = res.text
        calls, err = decode_calls(text)
        if who == "agent":
            self.agent_msgs.append({"role": "assistant", "content": text})
            log = {"turn": self.user_turns, "step": len(self.steps), "text": text, "calls": [], "observations": [], "decode_error": err}
            self.steps.append(log)
            if calls:
                log["observations"] = self._run_calls(calls, "assistant")
                log["calls"] = [format_call(c) for c in calls]
                self.agent_msgs += self._results(len(calls), self.remote)
            else:
                said = visible_text(text)
                if not said:
                    return self._end("agent_error", "the agent sent an empty message")
                self.transcript.append(AssistantMessage(role="assistant", content=said))
                self.user_msgs.append({"role": "user", "content": said})
                self.n_steps += 1
                self.pending = "user"
                if AGENT_STOP in said:
                    return self._end("agent_stop")
        else:
            self.user_msgs.append({"role": "assistant", "content": text})
            if calls and self.user_tools:
                self._run_calls(calls, "user")
                self.user_msgs += self._results(len(calls), remote=True)  # the simulator reads them as a user turn
            else:
                said = visible_text(text)
                if not said:
                    return self._end("user_error", "the user simulator sent an empty message")
                self.transcript.append(UserMessage(role="user", content=said))
                self.agent_msgs.append({"role": "user", "content": said})
                self.n_steps += 1
                self.user_turns += 1
                self.pending = "agent"
                if any(tok in said for tok in (STOP, TRANSFER, OUT_OF_SCOPE)):
                    return self._end("user_stop")
        if self.n_steps >= self.cfg.tau2_max_steps:
            self._end("max_steps", f"{self.n_steps} steps (tau2_max_steps {self.cfg.tau2_max_steps})")
        elif self.env.errors >= self.cfg.tau2_max_errors:
            self._end("too_many_errors", f"{self.env.errors} failed tool calls")

    def score(self):
        """τ²'s verdict on the transcript (``RewardInfo``), or ``(None, error)`` if the evaluator fails."""
        from tau2.data_model.simulation import SimulationRun
        from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation

        sim = SimulationRun(id=f"{self.domain}:{self.task.id}#{self.trial}", task_id=self.task.id, start_time=self.started,
                            end_time=datetime.now(UTC).isoformat(), duration=time.perf_counter() - self.t0,
                            termination_reason=self.reason or "max_steps", messages=self.transcript, trial=self.trial,
                            seed=self.cfg.seed + self.trial)
        try:
            return evaluate_simulation(sim, self.task, EvaluationType.ALL, solo_mode=False, domain=self.domain), None
        except Exception as e:  # a transcript τ² cannot replay scores 0 with the reason kept
            return None, f"tau2 evaluator failed: {type(e).__name__}: {e}"

    def row(self, subject: Subject) -> dict:
        info, failure = self.score()
        reward = float(info.reward) if info is not None else 0.0
        passed = reward >= 1.0 - 1e-6
        error_type = error = None
        if not passed:
            if self.reason not in ("agent_stop", "user_stop"):
                error_type = f"tau2:{self.reason}"
            elif info is not None:
                failed = [str(getattr(k, "value", k)).lower() for k, v in (info.reward_breakdown or {}).items() if v < 1.0]
                error_type = "tau2:" + ("+".join(failed) or "reward")
            else:
                error_type = "tau2:evaluator_error"
            error = json.dumps({"termination": self.reason, "detail": self.detail or failure,
                                "breakdown": {str(getattr(k, "value", k)): v for k, v in ((info.reward_breakdown or {}) if info else {}).items()},
                                "note": (info.info or {}).get("note") if info is not None and isinstance(info.info, dict) else None})
        return {
            "model_ref": subject.model_ref, "method": subject.method, "model": subject.model, "prompt": self.cfg.prompt,
            "benchmark": "tau2", "category": self.domain, "entry_id": self.task.id, "trial": self.trial, "passed": passed,
            "turn_passed": [], "turn_errors": [], "first_failed_turn": None, "n_turns": self.user_turns, "turns_played": self.user_turns,
            "n_steps": len(self.steps), "n_calls": sum(len(s["calls"]) for s in self.steps), "error_type": error_type, "error": error,
            "steps": self.steps, **self.usage, "created_at": datetime.now(UTC), "reward": reward,
            "transcript": json.dumps([m.model_dump(mode="json") for m in self.transcript]),
        }


def run_tau2(tasks: Sequence[tuple[str, object]], gateway, subject: Subject, cfg: EvaluateConfig, user: dict,
             docs_style: DocStyle = "json",
             progress: Callable[[int, int], None] | None = None) -> tuple[pa.Table, list[dict]]:
    """Play every task ``cfg.trials`` times in lockstep; one scored row per run. ``user`` is the
    user simulator's request fields (``model``, ``api_base``, ``api_key_env``)."""
    convs, rejects = [], []
    for domain, task in tasks:
        try:
            convs += [_Conversation(domain, task, t, subject, cfg, user, docs_style) for t in range(cfg.trials)]
        except (EnvError, ValueError, TypeError) as ex:
            rejects.append(reject(STAGE, f"tau2:{domain}:{task.id}", "env_error", f"{type(ex).__name__}: {ex}"))
    total = len(convs)
    while active := [c for c in convs if not c.done]:
        for c, res in zip(active, gateway.batch([c.request(subject) for c in active]), strict=True):
            c.advance(res)
        if progress is not None:
            progress(sum(c.done for c in convs), total)
    return pa.Table.from_pylist([c.row(subject) for c in convs], schema=EVAL_RESULTS), rejects
