"""Sampling error for every comparison: paired bootstrap intervals over entries and τ²'s pass^k.

One run of 200 BFCL entries × 3 trials has a standard error of a few points, so a difference
between two runs means little without its interval. ``paired_bootstrap`` resamples *entries*
(the unit that was sampled; an entry's trials stay together), within each stratum (a BFCL
category: Overall is the mean of the category means, so each category keeps its size), and
pairs the two runs on the same resampled entries — their shared difficulty cancels, which makes
the interval of the difference much narrower than the two intervals suggest. Only entries both
runs scored are compared; the count is reported.

``mde`` is the smallest true difference this design detects with 80 % power at a two-sided 5 %
level, from the bootstrap standard error of the difference: (z₀.₉₇₅ + z₀.₈₀) · SE ≈ 2.80 · SE.

``pass_hat_k`` is τ²-bench's pass^k: the chance that k trials drawn without replacement from a
task's n all succeed, C(c, k) / C(n, k), averaged over tasks.

Pure functions over plain values (numpy for the resampling)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from math import comb

import numpy as np

__all__ = ["Estimate", "Paired", "bootstrap", "paired_bootstrap", "pass_hat_k", "pass_hat_ks", "MDE_FACTOR"]

#: z(0.975) + z(0.80): detect with 80 % power at a two-sided 5 % level.
MDE_FACTOR = 1.959964 + 0.841621


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def fmt(self, digits: int = 1) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass(frozen=True)
class Paired:
    """Two runs on their common entries: each with its interval, the difference b − a with its
    interval, and the smallest difference the design could detect."""
    entries: int
    a: Estimate
    b: Estimate
    diff: Estimate
    mde: float


def _groups(rows: Iterable[tuple[str, str, float]]) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for stratum, entry, value in rows:
        out.setdefault(stratum, {}).setdefault(entry, []).append(float(value))
    return out


def _draws(strata: Mapping[str, np.ndarray], n_boot: int, seed: int) -> tuple[float, np.ndarray]:
    """Point estimate and ``n_boot`` bootstrap replicates of the mean of stratum means, where each
    stratum's array holds one value per entry (its trials' mean). Entries resampled per stratum."""
    rng = np.random.default_rng(seed)
    point = float(np.mean([v.mean() for v in strata.values()]))
    reps = np.zeros(n_boot)
    for v in strata.values():
        idx = rng.integers(0, len(v), size=(n_boot, len(v)))
        reps += v[idx].mean(axis=1)
    return point, reps / len(strata)


def _estimate(point: float, reps: np.ndarray, alpha: float) -> Estimate:
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return Estimate(point, float(lo), float(hi))


def bootstrap(rows: Iterable[tuple[str, str, float]], n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> Estimate:
    """Mean of stratum means of ``(stratum, entry, value)`` rows (values of one entry: its trials,
    averaged), with a percentile interval from resampling entries within strata."""
    groups = _groups(rows)
    if not groups:
        raise ValueError("no rows to estimate from")
    strata = {s: np.array([np.mean(v) for v in entries.values()]) for s, entries in groups.items()}
    return _estimate(*_draws(strata, n_boot, seed), alpha)


def paired_bootstrap(a: Iterable[tuple[str, str, float]], b: Iterable[tuple[str, str, float]], n_boot: int = 2000,
                     alpha: float = 0.05, seed: int = 0) -> Paired:
    """``a`` and ``b``: ``(stratum, entry, value)`` rows of two runs (a trial each). Entries are
    paired by (stratum, entry); the same resampled entries score both runs in every replicate."""
    ga, gb = _groups(a), _groups(b)
    common = {s: sorted(set(ga[s]) & set(gb[s])) for s in ga if s in gb}
    common = {s: e for s, e in common.items() if e}
    if not common:
        raise ValueError("the two runs share no entry")
    sa = {s: np.array([np.mean(ga[s][e]) for e in es]) for s, es in common.items()}
    sb = {s: np.array([np.mean(gb[s][e]) for e in es]) for s, es in common.items()}
    pa_, ra = _draws(sa, n_boot, seed)
    pb_, rb = _draws(sb, n_boot, seed)  # same seed, same shapes: the same entries in every replicate
    diff = rb - ra
    return Paired(entries=sum(len(e) for e in common.values()), a=_estimate(pa_, ra, alpha), b=_estimate(pb_, rb, alpha),
                  diff=_estimate(pb_ - pa_, diff, alpha), mde=MDE_FACTOR * float(diff.std(ddof=1)) if n_boot > 1 else float("nan"))


def pass_hat_k(successes: Sequence[int], trials: int, k: int) -> float:
    """τ²-bench's pass^k over tasks with ``trials`` trials each and ``successes[i]`` passes."""
    if not 1 <= k <= trials:
        raise ValueError(f"k must be in 1..{trials}, got {k}")
    if not successes:
        raise ValueError("no tasks")
    if any(not 0 <= c <= trials for c in successes):
        raise ValueError("a task has more passes than trials")
    return sum(comb(c, k) for c in successes) / (len(successes) * comb(trials, k))


def pass_hat_ks(results: Mapping[str, Sequence[bool]]) -> dict[int, float]:
    """pass^1..pass^n for tasks that all ran the same ``n`` trials (``task -> passed per trial``)."""
    ns = {len(v) for v in results.values()}
    if len(ns) != 1:
        raise ValueError(f"tasks ran different numbers of trials: {sorted(ns)}")
    (n,) = ns
    counts = [sum(map(bool, v)) for v in results.values()]
    return {k: pass_hat_k(counts, n, k) for k in range(1, n + 1)}
