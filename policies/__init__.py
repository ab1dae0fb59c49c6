"""Scoring and choosing actions, and the keep/revert decision (DESIGN.md section 5).

Sign convention: `efe` is in nats and LOWER IS BETTER; `neg_efe = -efe` is maximised; every
policy's `score` is higher-is-better. The metric is lower-is-better throughout.
Policies: design, voi, efe, learntropy, thompson, ucb, greedy, random, ratchet
(`make_policy(name, **params)`).
"""

from policies import (
    design,
    efe,
    greedy,
    learntropy_policy,
    random_choice,
    ratchet,
    thompson,
    ucb,
    voi,
)
from policies.appraisal import compression_progress, learntropy, realised_learntropy
from policies.base import POLICIES, Policy, make_policy
from policies.keep import decide
from policies.types import Action, Decision, KeepRule, RunRecord, StudyView

del design, efe, greedy, learntropy_policy, random_choice, ratchet, thompson, ucb, voi

__all__ = [
    "POLICIES",
    "Action",
    "Decision",
    "KeepRule",
    "Policy",
    "RunRecord",
    "StudyView",
    "compression_progress",
    "decide",
    "learntropy",
    "make_policy",
    "realised_learntropy",
]
