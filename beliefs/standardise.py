"""The standardisation of outcomes: an order-invariant function of the observed data.

z = (y - center) / scale, where
- center = the 1/h-weighted mean of the base configuration's runs (the empty config), else of
  all runs, else 0;
- scale = the pooled within-configuration noise sd (1/h-weighted, from replicates), when the
  replicates give >= 1 residual degree of freedom and a spread above 1e-6 of the sd of all runs;
  else the sd of all runs if positive; else 1 metric unit.
Both are functions of the multiset of observations, so replaying a ledger in any order gives
the same standardisation. Statistics are kept relative to a reference value (the first value
seen) so that a metric like 1000.0 +- 0.01 does not lose digits to cancellation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ROUNDING = 1e-12  # relative size of a sum of squares below which it is cancellation error
SCALE_FLOOR = 1e-6  # smallest replicate sd, relative to the sd of all runs (rounding is ~1e-8)


@dataclass
class ConfigMoments:
    """Weighted moments of one configuration's runs, relative to a reference value u = y - y_ref."""

    count: int = 0
    sum_w: float = 0.0
    sum_wu: float = 0.0
    sum_wuu: float = 0.0

    def add(self, u: float, weight: float) -> None:
        self.count += 1
        self.sum_w += weight
        self.sum_wu += weight * u
        self.sum_wuu += weight * u * u

    def within_ss(self) -> float:
        """sum w (u - ubar_w)^2 (metric units^2); 0 when it is below the rounding error of the sums,
        so identical values give exactly 0 whichever value is the reference."""
        ss = self.sum_wuu - self.sum_wu**2 / self.sum_w
        return ss if ss > ROUNDING * self.sum_wuu else 0.0


def pooled(moments: dict[frozenset[str], ConfigMoments]) -> ConfigMoments:
    """The moments of all runs together."""
    total = ConfigMoments()
    for m in moments.values():
        total.count += m.count
        total.sum_w += m.sum_w
        total.sum_wu += m.sum_wu
        total.sum_wuu += m.sum_wuu
    return total


def total_sd(moments: dict[frozenset[str], ConfigMoments]) -> float:
    """The 1/h-weighted sd of all runs together, metric units (0 with fewer than 2 runs)."""
    everything = pooled(moments)
    return (math.sqrt(everything.within_ss() / (everything.count - 1)) if everything.count >= 2
            else 0.0)


def standardisation(
    moments: dict[frozenset[str], ConfigMoments], reference: float
) -> tuple[float, float]:
    """(center, scale) in metric units from per-config moments, by the rule in the module
    docstring."""
    if not moments:
        return 0.0, 1.0
    base = moments.get(frozenset())
    everything = pooled(moments)
    centre_source = base if base is not None else everything
    center = reference + centre_source.sum_wu / centre_source.sum_w

    spread = total_sd(moments)
    if spread == 0:
        return center, 1.0
    within_df = sum(m.count - 1 for m in moments.values())
    within_ss = sum(m.within_ss() for m in moments.values())
    within_sd = math.sqrt(within_ss / within_df) if within_df >= 1 else 0.0
    # Below the floor, the replicate spread is rounding error of the sums (which depends on the
    # reference value, hence on order) or so small that standardised values would overflow.
    return center, within_sd if within_sd > SCALE_FLOOR * spread else spread
