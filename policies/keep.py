"""The posterior keep rule: keep a candidate only when the posterior says it is better with
stated confidence (DESIGN.md section 5), corrected for looking after every batch.

Why a sequential correction. The rule looks at p_better = P(d < -epsilon | data) after each batch
and stops at the first keep. With a fixed 0.95 at every look, a null change gets several chances
to cross (optional stopping): 8.5% of simulated nulls were kept (issue 4 allows 5%), and no prior
scale fixed both that and the power on 1-sd improvements.

The rule chosen: group-sequential error spending (Lan-DeMets, O'Brien-Fleming-type spending).
`threshold` is the OVERALL confidence; alpha = 1 - threshold is the overall chance of keeping a
null. The looks the rule may take at one hypothesis are `rule.looks()` (n = min_replicates,
+ batch, ..., max_replicates runs) with information fractions t_k = n_k / max_replicates, and
`policies.maths.sequential_boundaries` gives z_k with P_null(some Z_k >= z_k) = alpha. The look at
n runs keeps when p_better >= Phi(z_k), its nominal level. Under the null p_better is
(approximately, exactly for a flat-prior t posterior) uniform at each look, so this is the
Gaussian group-sequential test written in posterior probabilities.

Why this over the alternatives (simulated with tests/policies/test_policies_keep.py's trainer-like
setup: noise sd 0.03, paired batches of 2, effect prior 0.75 sd):
- O'Brien-Fleming spending is strict early (P(better) >= 0.9999 at 2 of 8 runs) and close to
  nominal at the last look (0.962 at 8 runs), so little power is lost against a single test at
  max_replicates, while early stops remain possible for large effects. With looks at 2..8 runs it
  kept 3.5% of 600 nulls and 57% of 400 1-sd improvements (seeds 2024 and 7; 50-54% over 1000
  trials on seeds 7-9). Pocock-type spending (a nearly constant level, about 0.984) kept 2.0% and
  43%: it spends error early, where these small samples have little power. It is an option.
- An anytime-valid mixture likelihood ratio (e-value with Ville's inequality) is valid under
  unlimited looks, but that costs power a bounded design does not need: with a normal mixture every
  look needs z >= 2.76 (half-normal mixture at its best variance; 3.04 two-sided) against 1.78 at
  the last look here; even a constant 2.76 at every look keeps only 13% (8 runs) or 24% (10 runs)
  of 1-sd improvements (seed 7, 1000 trials), an upper bound on the e-value rule.
- Defaults: the limit on power is information, not the correction. Under the 0.75-sd effect prior
  8 paired runs shrink a 1-sd effect's z to ~1.8: a fixed design (min_replicates = max_replicates
  = 8, one look at 0.95) keeps 59% but spends 8 runs on every null, where this rule stops nulls
  after 4.6 runs on average. max_replicates = 10 keeps ~64% (fixed design: 69%), nulls stop after
  5.3 runs, and the null rate stays <= 5% (it does for any schedule): the recommended default.

Robustness to the engine's batch sizes: the default `batch = 1` designs for a look after every
run, the most looks the rule can take. Any schedule actually used is a subset of those looks with
the same boundaries, so its overall error is <= alpha whatever batch sizes the engine picks (the
cost is a slightly stricter final look than a design for, say, 4 looks). A look at a run count
off the declared schedule (batch > 1) uses the boundary of the scheduled look before it. The lower
side (revert at p_better <= 1 - threshold, futility, max_replicates) is non-binding: reverting
can only lower the false-keep rate.
"""

from __future__ import annotations

import bisect
from functools import lru_cache
from typing import Protocol

import numpy as np
from scipy import stats

from policies.maths import probability_better, probability_of_success, sequential_boundaries
from policies.types import Decision, KeepRule

INTERVAL_LEVEL = 0.9


class DifferencePosterior(Protocol):
    """The one method of `beliefs.Beliefs` the keep rule needs."""

    def difference(self, a: frozenset[str], b: frozenset[str]): ...


@lru_cache(maxsize=64)
def _look_thresholds(threshold: float, looks: tuple[int, ...], spending: str) -> tuple[float, ...]:
    """Per-look keep thresholds Phi(z_k) on p_better (probabilities) for looks at these run counts."""
    fractions = np.array(looks, dtype=float) / looks[-1]
    bounds = sequential_boundaries(1.0 - threshold, fractions, spending)
    return tuple(float(stats.norm.cdf(z)) for z in bounds)


def look_thresholds(rule: KeepRule) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(run counts of the looks, the p_better a keep needs at each), for this rule."""
    looks = rule.looks()
    return looks, _look_thresholds(float(rule.threshold), looks, rule.spending)


def _probability(p: float) -> str:
    """A probability for a reason string: 3 decimals, 5 above 0.999 (early thresholds are ~0.9999)."""
    return f"{p:.3f}" if p < 0.999 else f"{p:.5f}"


def decide(beliefs: DifferencePosterior, candidate: frozenset[str], incumbent: frozenset[str],
           rule: KeepRule, n_runs: int) -> Decision:
    """Verdict from d = mu(candidate) - mu(incumbent) (metric units, lower better):
    p_better = P(d < -epsilon | data); keep if n_runs >= min_replicates and p_better >= the
    per-look threshold Phi(z_k) of the group-sequential design (module docstring; overall false-keep
    rate <= 1 - threshold); revert if p_better <= 1 - threshold, or n_runs >= max_replicates, or the
    predictive probability that the remaining runs reach the final look's threshold is below
    1 - threshold (the value of more runs is below their cost); else undecided."""
    if n_runs < 0:
        raise ValueError(f"decide: n_runs must be >= 0, got {n_runs!r}")
    diff = beliefs.difference(frozenset(candidate), frozenset(incumbent))
    mean, scale, df = float(np.asarray(diff.mean)), float(np.asarray(diff.scale)), float(np.asarray(diff.df))
    p_better = probability_better(mean, scale, df, rule.epsilon)
    lo, hi = diff.interval(INTERVAL_LEVEL)
    interval = (float(np.asarray(lo)), float(np.asarray(hi)))

    def verdict(kind: str, reason: str) -> Decision:
        return Decision(kind, p_better, interval, n_runs, reason)  # type: ignore[arg-type]

    if n_runs < rule.min_replicates:
        return verdict("undecided", f"{n_runs} of min_replicates={rule.min_replicates} runs")
    looks, thresholds = look_thresholds(rule)
    look = bisect.bisect_right(looks, n_runs)  # 1-based index of the last scheduled look <= n_runs
    needed = thresholds[look - 1]
    where = f"look {look} of {len(looks)}, overall {rule.threshold:g}"
    if p_better >= needed:
        return verdict("keep", f"P(better)={_probability(p_better)} >= {_probability(needed)} ({where})")
    if p_better <= 1 - rule.threshold:
        return verdict("revert", f"P(better)={_probability(p_better)} <= {1 - rule.threshold:.3g} ({where})")
    if n_runs >= rule.max_replicates:
        return verdict("revert", f"undecided after max_replicates={rule.max_replicates} runs: "
                                 f"P(better)={_probability(p_better)} < {_probability(needed)} ({where})")
    final = thresholds[-1]
    success = probability_of_success(mean, scale, df, n_runs, rule.max_replicates - n_runs, final, rule.epsilon)
    if success < 1 - rule.threshold:
        return verdict("revert", f"futile: P(keep within {rule.max_replicates - n_runs} more runs) "
                                 f"{success:.3f} < {1 - rule.threshold:.3g} (P(better)={_probability(p_better)} "
                                 f"< {_probability(needed)}, {where})")
    return verdict("undecided", f"P(better)={_probability(p_better)} < {_probability(needed)} ({where}); P(keep within "
                                f"{rule.max_replicates - n_runs} more runs) {success:.3f}")
