"""PAG-RL's reward: Eq. 14 as a rubric of named, weighted terms, and the return of Eq. 6.

``r = α_fmt·TEMPLATE + α_schema·SCHEMA + α_acc·SUCCESS − λ·[A has calls]``

Each term is a plain function over finished episodes (the way TRL's ``reward_funcs`` and
verifiers' ``Rubric(funcs, weights)`` work): it gets the :class:`Played` episodes of a batch and
returns one unweighted value per action. A :class:`Rubric` weights the terms, and the return of an
episode is ``R(τ) = Σ_t γ^t r_t`` kept per term. A method's recipe lists its terms; adding one is a
function in :data:`TERMS` and its weight, with no edit to the rollout, which only records facts
(:class:`Step`).

* TEMPLATE: the action has the tags the policy was asked for (``<summary>``, ``<think>``,
  ``<answer>`` in that order with awareness; ``<answer>`` after an optional summary and think
  without);
* SCHEMA: the action lists at least one call and every call names a listed function with known
  argument names, all required ones, and values of the declared JSON type (and in its enum);
* SUCCESS: the episode env's own ``success`` for the turn the action closed, against a twin that
  replayed the ground truth (BFCL: state and response checks; τ²: its database check); only a turn
  the policy closed itself can succeed (the rollout's rule);
* the penalty λ is paid per action that issues calls.

TEMPLATE and SCHEMA are paid per turn, all or nothing (the per-turn form Eq. 12-15 allow), on the
turn's last action: α_fmt when every action of the turn is well-formed, α_schema when every call
the turn made fits the docs (vacuously true for a turn without calls). Paid per action (Eq. 14 read literally), padding a turn with
read-only calls, which BFCL's checks ignore, raises the return (ten valid calls in turn 1 scored
3.8, four turns played properly at 50 % success 3.52); paid as shares of the turn's actions, valid
calls after a failed one still raise it ((invalid call, end) 0.080 vs the same + 2 valid read-only
calls 0.173). All or nothing, an extra action can only break a turn's terms and costs λ if it
calls, so no padded variant of an episode scores above the episode itself, after a correct or a
failed call (``tests/unit/test_rewards.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from progra_core.calls import Call
from progra_core.envs.base import missing_observations
from progra_core.prompts.policy import Action, template_ok
from progra_core.schemas import tool_functions

__all__ = ["Step", "Played", "Term", "Rubric", "TERMS", "EQ14", "schema_ok", "responses_ok", "discounted_return"]


@dataclass
class Step:
    """What the rollout observed of one action: its text and parse, where it was, and (for the
    action that closed a turn) the env's verdict on that turn."""

    text: str
    action: Action
    turn: int
    turn_end: bool = False
    success: bool | None = None  #: the env's SUCCESS for the turn this action closed; None mid-turn
    observations: list[str] = field(default_factory=list)


@dataclass
class Played:
    """One finished episode as the reward terms see it."""

    episode_id: str
    tools: str  #: the tool docs the policy was shown
    queries: list[str]  #: Q_i per turn
    prompted: bool  #: the policy was asked for ``<summary>`` (TEMPLATE requires it)
    steps: list[Step]


#: A reward term: the played episodes of a batch -> one (unweighted) value per action of each.
RewardFunc = Callable[[Sequence[Played]], list[list[float]]]


_TYPES = {
    "string": (str,), "integer": (int,), "number": (int, float), "float": (int, float), "boolean": (bool,),
    "array": (list, tuple), "tuple": (list, tuple), "dict": (dict,), "object": (dict,),
}


def _value_ok(value, spec: dict) -> bool:
    kind = (spec or {}).get("type")
    types = _TYPES.get(kind)
    if types is not None:
        if isinstance(value, bool) and bool not in types:  # True is an int in Python, not in JSON
            return False
        if not isinstance(value, types):
            return False
    enum = (spec or {}).get("enum")
    return not enum or value in enum


def schema_ok(calls: Sequence[Call] | None, tools_json: str | list | None) -> bool:
    """Every call names a listed function, uses its parameter names, gives every required one and
    values of the declared types. Positional arguments bind in the documented parameter order."""
    if not calls:
        return False
    docs = {f.get("name"): f.get("parameters") or {} for f in tool_functions(tools_json)}
    for c in calls:
        if c.name not in docs:
            return False
        props = docs[c.name].get("properties") or {}
        names = list(props)
        if len(c.positional) > len(names):
            return False
        given = dict(zip(names, c.positional, strict=False))
        if set(given) & set(c.args):
            return False
        given.update(c.args)
        if any(k not in props for k in given) or any(r not in given for r in docs[c.name].get("required") or []):
            return False
        if not all(_value_ok(v, props[k]) for k, v in given.items()):
            return False
    return True


def responses_ok(target: Sequence[str], got: Sequence[str]) -> bool:
    """Every ground-truth observation appears among the policy's (with multiplicity, any order)."""
    return not missing_observations(target, got)


def _turn_closers(p: Played) -> list[bool]:
    """For each action, whether it is its turn's last (the action paid the turn's format terms)."""
    last = {s.turn: i for i, s in enumerate(p.steps)}
    return [last[s.turn] == i for i, s in enumerate(p.steps)]


def _per_turn_all(p: Played, ok, applies=lambda s: True, need_one: bool = False) -> list[float]:
    """1 on each turn's last action when ``ok`` holds for every action of the turn ``applies`` to
    (and, with ``need_one``, there is at least one), else 0; 0 on every other action."""
    good: dict[int, bool] = {}
    seen: dict[int, int] = {}
    for s in p.steps:
        if applies(s):
            seen[s.turn] = seen.get(s.turn, 0) + 1
            good[s.turn] = good.get(s.turn, True) and bool(ok(s))
    return [float(closer and good.get(s.turn, True) and (seen.get(s.turn, 0) > 0 or not need_one))
            for s, closer in zip(p.steps, _turn_closers(p), strict=True)]


def template_term(played: Sequence[Played]) -> list[list[float]]:
    """TEMPLATE: 1 per turn, on its last action, when every action of the turn has the tags the
    prompt asked for (all or nothing: an extra well-formed action cannot raise it)."""
    return [_per_turn_all(p, lambda s, p=p: template_ok(s.text, p.prompted)) for p in played]


def schema_term(played: Sequence[Played]) -> list[list[float]]:
    """SCHEMA: 1 per turn, on its last action, when every call action of the turn has calls that
    fit the tool docs shown (all or nothing: valid padding after an invalid call earns 0). A turn
    without calls passes vacuously, so adding valid calls to it cannot raise its return either;
    such a turn earns SUCCESS only when nothing had to be called."""
    return [_per_turn_all(p, lambda s, p=p: schema_ok(s.action.calls, p.tools), lambda s: s.action.has_calls)
            for p in played]


def success_term(played: Sequence[Played]) -> list[list[float]]:
    """SUCCESS: 1 on the action that closed a turn the env judged done."""
    return [[float(bool(s.success)) for s in p.steps] for p in played]


def penalty_term(played: Sequence[Played]) -> list[list[float]]:
    """The λ term: −1 for every action that issues calls (weighted by λ > 0)."""
    return [[-float(s.action.has_calls) for s in p.steps] for p in played]


#: Every reward term a recipe can name.
TERMS: dict[str, RewardFunc] = {"fmt": template_term, "schema": schema_term, "acc": success_term, "pen": penalty_term}
#: The paper's four (Eq. 14), in its order.
EQ14 = ("fmt", "schema", "acc", "pen")


@dataclass(frozen=True)
class ModelTerm:
    """A reward term that asks a model: the LLM role it calls (``models.<role>``, part of the grpo
    fingerprint) and how to build its function from a gateway and that role's endpoint:
    ``build(gateway, endpoint, seed=..., stats=...) -> RewardFunc`` (``stats``: a dict it may count into)."""

    role: str
    build: Callable[..., RewardFunc]


#: Reward terms built at run time around a model, by name (TARL's ``judge``: train/judge.py).
MODEL_TERMS: dict[str, ModelTerm] = {}


def model_term(name: str, role: str) -> Callable[[Callable[..., RewardFunc]], Callable[..., RewardFunc]]:
    """Register ``build`` as reward term ``name``, which calls ``models.<role>``."""
    def register(build: Callable[..., RewardFunc]) -> Callable[..., RewardFunc]:
        MODEL_TERMS[name] = ModelTerm(role, build)
        return build
    return register


@dataclass(frozen=True)
class Term:
    name: str
    func: RewardFunc
    weight: float


def discounted_return(per_action: Sequence[Mapping[str, float]], gamma: float, names: Sequence[str]) -> dict[str, float]:
    """R(τ) = Σ_t γ^t r_t (Eq. 6) per term (``t`` the global action index); ``total`` is R."""
    out = {k: 0.0 for k in names}
    for t, r in enumerate(per_action):
        for k in names:
            out[k] += (gamma ** t) * r[k]
    out["total"] = sum(out[k] for k in names)
    return out


class Rubric:
    """Weighted reward terms and γ: scores a batch of played episodes."""

    def __init__(self, terms: Sequence[Term], gamma: float = 1.0):
        if len({t.name for t in terms}) != len(terms):
            raise ValueError(f"reward terms repeat a name: {[t.name for t in terms]}")
        self.terms, self.gamma = tuple(terms), gamma

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.terms)

    @classmethod
    def from_config(cls, cfg, names: Sequence[str] = EQ14, extra: Mapping[str, RewardFunc] | None = None) -> Rubric:
        """The terms ``names`` with their weights from a ``GRPOConfig``: α_fmt, α_schema, α_acc and λ
        for Eq. 14's, ``term_weights[<name>]`` for any other. ``extra`` adds terms built at run
        time (e.g. a judge that needs the gateway)."""
        funcs = {**TERMS, **(extra or {})}
        paper = {"fmt": cfg.alpha_fmt, "schema": cfg.alpha_schema, "acc": cfg.alpha_acc, "pen": cfg.penalty}
        missing = [n for n in names if n not in funcs]
        if missing:
            raise ValueError(f"unknown reward terms {missing}; known: {sorted(funcs)}")
        weights = {**paper, **(getattr(cfg, "term_weights", None) or {})}
        unweighted = [n for n in names if n not in weights]
        if unweighted:
            raise ValueError(f"reward terms {unweighted} have no weight: set grpo.term_weights")
        return cls([Term(n, funcs[n], float(weights[n])) for n in names], cfg.gamma)

    def score(self, played: Sequence[Played]) -> list[tuple[list[dict[str, float]], dict[str, float]]]:
        """Per episode: the weighted terms of each action, and the discounted return per term."""
        values = {t.name: t.func(played) for t in self.terms}
        out = []
        for i, p in enumerate(played):
            per_action = [{t.name: t.weight * values[t.name][i][j] for t in self.terms} for j in range(len(p.steps))]
            out.append((per_action, discounted_return(per_action, self.gamma, self.names)))
        return out
