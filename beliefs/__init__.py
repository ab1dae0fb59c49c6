"""The generative model over outcomes: a hierarchical Bayesian linear model of a study's metric.

Fast path: `Beliefs` (conjugate Normal-inverse-gamma, empirical-Bayes category pooling).
Full Bayes: `fit_pymc` (PyMC, NUTS), `sampler_diagnostics`. Export: `to_inference_data`,
`save_inference_data`, `plot_effects`.
PyMC and arviz are imported lazily, so `import beliefs` stays cheap.
"""

from beliefs.model import Beliefs
from beliefs.types import (
    BeliefPrior,
    CategorySummary,
    EffectSummary,
    Hypothesis,
    Observation,
    Predictive,
    Projection,
)

__all__ = [
    "BeliefPrior",
    "Beliefs",
    "CategorySummary",
    "EffectSummary",
    "Hypothesis",
    "Observation",
    "Predictive",
    "Projection",
    "fit_pymc",
    "plot_effects",
    "sampler_diagnostics",
    "save_inference_data",
    "to_inference_data",
]


def __getattr__(name: str):
    # Lazy: pymc and arviz take seconds to import and only the report needs them.
    if name in ("fit_pymc", "sampler_diagnostics"):
        from beliefs import pymc_model

        return getattr(pymc_model, name)
    if name in ("to_inference_data", "save_inference_data", "plot_effects"):
        from beliefs import export

        return getattr(export, name)
    raise AttributeError(f"module 'beliefs' has no attribute {name!r}")
