"""Appraisal of learning signals: learntropy (expected and realised) and compression progress.

All values in nats. Learntropy (Wozniak): expected positive part of the realised entropy reduction
of a hypothesis's effect posterior minus kappa times its expected negative part (decoding failure:
a surprising outcome inflates the noise estimate and the effect grows less certain).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from policies.maths import (
    compression_progress_from_losses,
    learntropy_nig,
    learntropy_of_reduction,
    student_t_entropy,
)


class NIGProjection(Protocol):
    """`beliefs.Projection`: standardised NIG quantities for effect j and a run at config c."""

    a: float
    b: float
    v_jj: float
    cov_jc: float
    r: float
    h: float


def learntropy(projection: NIGProjection, n: int, kappa: float) -> float:
    """Expected learntropy of n runs at config c for effect j, nats (higher = more attractive):
    E[dH_+] - kappa E[dH_-], dH = H(beta_j) - H(beta_j | n outcomes), closed form + 1-D
    quadrature."""
    p = projection
    return learntropy_nig(p.a, p.v_jj, p.cov_jc, p.r, p.h, n, kappa)


def effect_entropy(beliefs, hypothesis: str) -> float:
    """Entropy of effect `hypothesis`'s Student-t marginal t_{2a}(m_j, (b/a) V_jj), nats in METRIC
    units (log of the standardisation scale added, so a changed standardisation is accounted
    for)."""
    p = beliefs.projection(frozenset({hypothesis}), hypothesis)
    metric_per_standard = float(beliefs.from_standard(1.0) - beliefs.from_standard(0.0))
    return (float(student_t_entropy(math.sqrt(p.b / p.a * p.v_jj), 2 * p.a))
            + math.log(metric_per_standard))


def realised_entropy_reduction(before, after, hypothesis: str) -> float:
    """dH = H_before(beta_j) - H_after(beta_j), nats: positive when the effect became more
    certain."""
    return effect_entropy(before, hypothesis) - effect_entropy(after, hypothesis)


def realised_learntropy(before, after, hypothesis: str, *, kappa: float = 2.0) -> float:
    """Realised learntropy of the runs between two `Beliefs`, nats: dH if dH >= 0 else kappa dH."""
    return learntropy_of_reduction(realised_entropy_reduction(before, after, hypothesis), kappa)


def compression_progress(beliefs_before, beliefs_after, past_observations: Sequence) -> float:
    """Decrease of the leave-one-out predictive log-loss over `past_observations`, nats:
    sum_i [LOO loss_i under before - LOO loss_i under after]; positive = the past is compressed
    better. Both posteriors must hold every past observation (after also holds the new ones)."""
    past = list(past_observations)
    return compression_progress_from_losses(beliefs_before.log_loss_of(past, exclude_self=True),
                                            beliefs_after.log_loss_of(past, exclude_self=True))
