"""The posterior keep rule: keep a candidate only when the posterior says it is better with
stated confidence (DESIGN.md section 5).

p_better = P(d < -epsilon | data) for d = mu(candidate) - mu(incumbent), under the spike-and-slab
prior of beliefs.spike: (1 - P(d = 0 | data)) * P_slab(d < -epsilon | data). The rule looks after
every batch of runs and stops at the first keep.

The default (`spending = "none"`): keep when p_better >= threshold at any look. A posterior
probability does not depend on the stopping rule, so when the prior holds, the expected share of
false keeps among keeps is at most 1 - threshold however many looks are taken. The spike is what
makes that share small in practice: most changes do nothing, and a prior that says so (with the
null share learnt across hypotheses) asks more of the evidence than a slab alone. Measured with
tests/policies/test_policies_keep.py's trainer-like setup (noise sd 0.03, paired batches of 2,
effect prior 0.75 sd), at futility 0.05: in a world drawn from the prior, 1.7% of keeps were false
(2 of 117); 0.3% of 600 nulls and 51% of 400 one-sd improvements were kept within 24 runs.

Why not the slab alone with the plain threshold: a null change gets several chances to cross
(8.5% of simulated nulls were kept at 0.95), and in the benchmark the share of false keeps went
above 5% because most changes are null. The group-sequential designs below bound the per-null
rate instead; stacked on the spike they cost too much power (benchmark gain in the noise = effect
world 1.45 -> 0.88 in a trial run), so they are options for a slab-only model (null_share = 0).

`spending = "obrien_fleming" | "pocock"`: group-sequential error spending (Lan-DeMets).
`threshold` is then the OVERALL confidence; alpha = 1 - threshold is the overall chance of
keeping a null. The looks the rule may take at one hypothesis are `rule.looks()` (n =
min_replicates, + batch, ..., max_replicates runs) with information fractions t_k = n_k /
max_replicates, and `policies.maths.sequential_boundaries` gives z_k with P_null(some Z_k >= z_k)
= alpha. The look at n runs keeps when p_better >= Phi(z_k), its nominal level. Under the null
p_better is (approximately, exactly for a flat-prior t posterior) uniform at each look, so this
is the Gaussian group-sequential test written in posterior probabilities. O'Brien-Fleming
spending is strict early (P(better) >= 0.9999 at 2 of 8 runs) and close to nominal at the last
look (0.962 at 8 runs); with looks at 2..10 runs it kept 5.0% of 600 nulls and 66.2% of 400 1-sd
improvements. Pocock-type spending (a nearly constant level, about 0.984) spends error early,
where these small samples have little power. An anytime-valid mixture likelihood ratio (e-value)
needs z >= 2.76 at every look and keeps at most 24% of 1-sd improvements within 10 runs.
The default `batch = 1` designs for a look after every run, the most looks the rule can take: any
schedule actually used is a subset with the same boundaries, so its overall error is <= alpha; a
look off the declared schedule uses the boundary of the scheduled look before it.

The lower side (revert at p_better <= 1 - threshold, futility, max_replicates) is non-binding:
reverting a trial can only lower that trial's chance of a false keep. (The engine may reopen a
reverted move as a new trial; the share of false keeps among keeps is still bounded by the
posterior threshold, but a group-sequential design's per-null bound then holds per trial.)
Futility is the predictive probability, spike included, that the trial's remaining runs reach a
keep (policies.maths.probability_of_success);
below `rule.futility` (default 0.3) the trial is reverted. That bar prices the opportunity cost of
a long shot: a study's budget is shared, the runs a trial with less than a 0.3 chance still asks
for are worth more on a fresh trial, and the engine reopens a reverted move once nothing else is
open, its runs still in the posterior. Measured on held-out synthetic worlds (docs/ARCHITECTURE.md):
0.3 instead of 0.05 raised the interactions world's true gain from +2.35 to +2.60 (seeds 100-159)
and from +2.64 to +2.84 (seeds 160-219), with false-keep shares at most 5.0% in every world. The
price is single-trial power: alone, with nothing to reopen, the rule at 0.3 keeps 15% of one-sd
improvements against 51% at 0.05 (tests/policies/test_policies_keep.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
from scipy import stats

from policies.maths import probability_better, probability_of_success, sequential_boundaries
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
    """Verdict from d = mu(candidate) - mu(incumbent) (metric units, lower better):
    p_better = P(d < -epsilon | data) = (1 - P(d = 0)) P_slab(d < -epsilon) under the
    spike-and-slab prior (beliefs.spike); keep if n_runs >= min_replicates and p_better >= the
    look's threshold (the threshold itself, or a group-sequential boundary: module docstring);
    revert if p_better <= 1 - threshold, or n_runs >= max_replicates, or the predictive
    probability that the remaining runs reach the final look's threshold is below `futility`
    (the trial is a long shot, and its runs are worth more on another trial); else undecided."""
    if n_runs < 0:
        raise ValueError(f"decide: n_runs must be >= 0, got {n_runs!r}")
    p_better, diff, null_at = probability_better_than(beliefs, candidate, incumbent, rule.epsilon)
    mean, scale, df = (float(np.asarray(diff.mean)), float(np.asarray(diff.scale)),
                       float(np.asarray(diff.df)))
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
    if n_runs >= rule.max_replicates:
        return verdict("revert", f"undecided after max_replicates={rule.max_replicates} runs: "
                                 f"P(better)={_probability(p_better)} < {_probability(needed)} "
                                 f"({where})")
    success = probability_of_success(mean, scale, df, n_runs, rule.max_replicates - n_runs,
                                     thresholds[-1], rule.epsilon, null_at)
    if success < rule.futility:
        return verdict("revert", f"futile: P(keep within {rule.max_replicates - n_runs} more runs) "
                                 f"{success:.3f} < futility {rule.futility:.3g} "
                                 f"(P(better)={_probability(p_better)} "
                                 f"< {_probability(needed)}, {where})")
    return verdict("undecided", f"P(better)={_probability(p_better)} < {_probability(needed)} "
                                f"({where}); P(keep within "
                                f"{rule.max_replicates - n_runs} more runs) {success:.3f}")
