"""The posterior keep rule: keep a candidate only when the posterior says it is better with
stated confidence (DESIGN.md section 5).

p_better = P(d < -epsilon | data) for d = mu(candidate) - mu(incumbent), under the spike-and-slab
prior of beliefs.spike: (1 - P(d = 0 | data)) * P_slab(d < -epsilon | data). The posterior holds
every run the study made, so a change is judged on all its evidence, and its runs are counted
over every trial of it: a reopened change goes on from its earlier looks, it does not start again.

Verdicts, after >= min_replicates runs of the move:
- keep when p_better >= the look's threshold;
- revert when p_better <= 1 - threshold: the posterior says the change is not better;
- otherwise undecided. An undecided move stays open; whether it gets more runs is the policy's
  budget choice, which the next step can undo at no cost, and nothing is thrown away. After
  max_replicates runs an undecided move gets no more (a cap on the runs one change may take),
  and at the end of the budget the undecided moves are reported as such, never kept.
There is no futility revert: a rule that reverted long shots and reopened them later made each
reopening a fresh trial, and its bar was a tuned stand-in for the value of more runs, which the
`voi` policy now computes (policies.maths.keep_value).

The default (`spending = "none"`): keep when p_better >= threshold at any look. A posterior
probability does not depend on the stopping rule, so when the prior holds, the expected share of
false keeps among keeps is at most 1 - threshold however many looks are taken, across trials
too: no correction for repeated looks is needed, and none would be honest that the model's own
posterior does not already make. The spike is what makes that share small in practice: most
changes do nothing, and a prior that says so (with the null share learnt across hypotheses) asks
more of the evidence than a slab alone. Where the prior is wrong (heavy tails, noise the model
does not have), the measured share can exceed the claimed one; the benchmark reports both.

`spending = "obrien_fleming" | "pocock"`: group-sequential error spending (Lan-DeMets), an option
for a slab-only model (null_share = 0). `threshold` is then the OVERALL confidence; alpha =
1 - threshold is the overall chance of keeping a null. The looks the rule may take at one
hypothesis are `rule.looks()` (n = min_replicates, + batch, ..., max_replicates runs, counted
over every trial) with information fractions t_k = n_k / max_replicates, and
`policies.maths.sequential_boundaries` gives z_k with P_null(some Z_k >= z_k) = alpha. The look at
n runs keeps when p_better >= Phi(z_k), its nominal level. Under the null p_better is
(approximately, exactly for a flat-prior t posterior) uniform at each look, so this is the
Gaussian group-sequential test written in posterior probabilities. The default `batch = 1`
designs for a look after every run, the most looks the rule can take: any schedule actually used
is a subset with the same boundaries, so its overall error is <= alpha; a look off the declared
schedule uses the boundary of the scheduled look before it. The lower side (revert) is
non-binding: it can only lower the chance of a false keep.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
from scipy import stats

from policies.maths import probability_better, sequential_boundaries
from policies.types import Decision, KeepRule

INTERVAL_LEVEL = 0.9


class DifferencePosterior(Protocol):
    """The two methods of `beliefs.Beliefs` the keep rule needs."""

    def difference(self, a: frozenset[str], b: frozenset[str]): ...

    def spike(self, a: frozenset[str], b: frozenset[str]): ...


@lru_cache(maxsize=64)
def _look_thresholds(threshold: float, looks: tuple[int, ...], spending: str) -> tuple[float, ...]:
    """Per-look keep thresholds Phi(z_k) on p_better (probabilities) for looks at these run counts;
    spending "none": the posterior threshold itself at every look."""
    if spending == "none":
        return (float(threshold),) * len(looks)
    fractions = np.array(looks, dtype=float) / looks[-1]
    bounds = sequential_boundaries(1.0 - threshold, fractions, spending)
    return tuple(float(stats.norm.cdf(z)) for z in bounds)


def look_thresholds(rule: KeepRule) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(run counts of the looks, the p_better a keep needs at each), for this rule."""
    looks = rule.looks()
    return looks, _look_thresholds(float(rule.threshold), looks, rule.spending)


def _probability(p: float) -> str:
    """A probability for a reason string: 3 decimals, 5 above 0.999 (early thresholds are
    ~0.9999)."""
    return f"{p:.3f}" if p < 0.999 else f"{p:.5f}"


def probability_better_than(
    beliefs: DifferencePosterior,
    candidate: frozenset[str],
    incumbent: frozenset[str],
    epsilon: float = 0.0,
) -> tuple[float, Any, Callable[[float, float], float] | None]:
    """(p_better, the slab posterior of d = mu(candidate) - mu(incumbent), P(d = 0) as a function
    of the slab posterior's mean and sd, or None without a spike): p_better = P(d < -epsilon | data)
    = (1 - P(d = 0)) P_slab(d < -epsilon) under the spike-and-slab prior (beliefs.spike)."""
    candidate, incumbent = frozenset(candidate), frozenset(incumbent)
    diff = beliefs.difference(candidate, incumbent)
    mean, scale, df = (float(np.asarray(diff.mean)), float(np.asarray(diff.scale)),
                       float(np.asarray(diff.df)))
    spike = beliefs.spike(candidate, incumbent)
    null_at = spike.null_probability if spike is not None else None
    null = null_at(mean, scale) if null_at is not None else 0.0
    return (1.0 - null) * probability_better(mean, scale, df, epsilon), diff, null_at


def decide(beliefs: DifferencePosterior, candidate: frozenset[str], incumbent: frozenset[str],
           rule: KeepRule, n_runs: int) -> Decision:
    """Verdict from d = mu(candidate) - mu(incumbent) (metric units, lower better), after n_runs
    runs of the move over all its trials: p_better = P(d < -epsilon | data) = (1 - P(d = 0))
    P_slab(d < -epsilon) under the spike-and-slab prior (beliefs.spike); keep if n_runs >=
    min_replicates and p_better >= the look's threshold (the threshold itself, or a
    group-sequential boundary: module docstring); revert if p_better <= 1 - threshold; else
    undecided (at max_replicates runs: undecided, and the move gets no more runs)."""
    if n_runs < 0:
        raise ValueError(f"decide: n_runs must be >= 0, got {n_runs!r}")
    p_better, diff, _ = probability_better_than(beliefs, candidate, incumbent, rule.epsilon)
    lo, hi = diff.interval(INTERVAL_LEVEL)
    interval = (float(np.asarray(lo)), float(np.asarray(hi)))

    def verdict(kind: str, reason: str) -> Decision:
        return Decision(kind, p_better, interval, n_runs, reason)  # type: ignore[arg-type]

    if n_runs < rule.min_replicates:
        return verdict("undecided", f"{n_runs} of min_replicates={rule.min_replicates} runs")
    looks, thresholds = look_thresholds(rule)
    look = bisect.bisect_right(looks, n_runs)  # 1-based index of the last scheduled look <= n_runs
    needed = thresholds[look - 1]
    where = f"look {look} of {len(looks)}" + (f", overall {rule.threshold:g}"
                                              if rule.spending != "none" else "")
    if p_better >= needed:
        return verdict("keep",
                       f"P(better)={_probability(p_better)} >= {_probability(needed)} ({where})")
    if p_better <= 1 - rule.threshold:
        return verdict("revert",
                       f"P(better)={_probability(p_better)} <= {1 - rule.threshold:.3g} ({where})")
    capped = (f"; max_replicates={rule.max_replicates} runs reached, no more runs"
              if n_runs >= rule.max_replicates else "")
    return verdict("undecided", f"P(better)={_probability(p_better)} < {_probability(needed)} "
                                f"({where}){capped}")
