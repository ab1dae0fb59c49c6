"""Pure maths of memory decay: ACT-R base-level activation and the prior widening it implies.

Time is counted in experiments (runs recorded), never wall-clock, so memory decays within one
overnight study. All functions are pure and typed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

#: Default ACT-R decay d: the exponent of the power-law forgetting curve.
DEFAULT_DECAY = 0.5
#: Default retrieval threshold (nats of activation). With d = 0.5 a single unrecalled presentation
#: drops below it after e^4 ~ 55 experiments; at that point the prior it would give is already
#: e ~ 2.7 times wider than the stored evidence (see `evidence_weight`), so little is lost.
DEFAULT_RETRIEVAL_THRESHOLD = -2.0
#: Level of the central credible intervals stored with insights (as in `Beliefs.effects`).
INTERVAL_LEVEL = 0.9


def _check_decay(decay: float) -> None:
    if not (0.0 < decay < 1.0):
        raise ValueError(f"decay must lie in (0, 1), got {decay!r}")


def activation(presentations: Sequence[float], t_now: float, decay: float) -> float:
    """ACT-R base-level activation A = ln sum_k max(t_now - t_k, 1)^(-d), in nats; t in experiments.

    A presentation less than one experiment old counts as one experiment old (time is discrete:
    the floor keeps A finite for something presented in the current experiment, where A = 0 for
    one presentation). No presentation at all gives -inf (nothing to remember). A presentation
    in the future (t_k > t_now) is an error.
    """
    _check_decay(decay)
    total = 0.0
    for t_k in presentations:
        if t_k > t_now:
            raise ValueError(f"presentation at t={t_k!r} lies after t_now={t_now!r}")
        total += max(t_now - t_k, 1.0) ** (-decay)
    return math.log(total) if total > 0.0 else -math.inf


def evidence_weight(activation_nats: float) -> float:
    """Power-prior discount w = min(1, exp(A)), dimensionless in [0, 1].

    The remembered evidence counts as a fraction w of its original weight: full weight while the
    memory is fresh (A >= 0), falling along the forgetting curve as it decays. Reinforcement can
    restore the full weight, never more than the evidence itself gave.
    """
    if math.isnan(activation_nats):
        raise ValueError("activation is NaN")
    return math.exp(min(activation_nats, 0.0))


def widened_sd(sd: float, activation_nats: float) -> float:
    """Prior sd after decay, sd_eff = sd / sqrt(w) with w = min(1, exp(A)), in the sd's units.

    Discounting a Gaussian likelihood by the power w divides its precision by w, so a decayed
    insight keeps its mean and widens; w = 0 (forgotten entirely) gives an infinite sd.
    """
    if not (sd >= 0.0):
        raise ValueError(f"sd must be >= 0, got {sd!r}")
    weight = evidence_weight(activation_nats)
    return sd / math.sqrt(weight) if weight > 0.0 else math.inf


def sd_from_interval(lo: float, hi: float, level: float = INTERVAL_LEVEL) -> float:
    """Gaussian sd implied by a central credible interval, sd = (hi - lo) / (2 z_{(1+level)/2}).

    In the interval's units. lo > hi or a level outside (0, 1) is an error.
    """
    if not (0.0 < level < 1.0):
        raise ValueError(f"interval level must lie in (0, 1), got {level!r}")
    if not (hi >= lo):
        raise ValueError(f"interval lower bound {lo!r} exceeds upper bound {hi!r}")
    return (hi - lo) / (2.0 * NormalDist().inv_cdf(0.5 + level / 2.0))


def recall_score(base_activation: float, n_matches: int, relevance_weight: float) -> float:
    """Total activation for recall, base-level plus relevance: A + w * m, in nats.

    m counts how many cues match (same category, same env fingerprint), w is nats per match
    (ACT-R's spreading activation, reduced to equal-strength cues).
    """
    if n_matches < 0:
        raise ValueError(f"n_matches must be >= 0, got {n_matches!r}")
    return base_activation + relevance_weight * n_matches
