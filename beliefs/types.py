"""Value types of the beliefs package: hypotheses, observations, priors and summaries.

Units: `Observation.value`, `Predictive`, `EffectSummary` and `CategorySummary` are in the
metric's own units (lower is better). `BeliefPrior` and `Projection` are in standardised units
(see `Beliefs.to_standard`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from train.vocabulary import METRIC_LIMIT

MAX_ABS_VALUE = METRIC_LIMIT  # sums of squares of many values stay finite in float64


@dataclass(frozen=True)
class Hypothesis:
    """One candidate change; its effect is partially pooled within `category`."""

    name: str
    category: str

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError(f"Hypothesis name must be a non-empty string, got {self.name!r}")
        if not self.category:
            raise ValueError(f"Hypothesis {self.name!r}: category must be non-empty, "
                             f"got {self.category!r}")


@dataclass(frozen=True)
class Observation:
    """One run's metric for `config` (a frozenset of applied hypothesis names).

    `noise_scale` is h(c), the multiplier of the noise VARIANCE (1 = a normal run). `seed` is the
    run's seed: runs that share one share its luck when the beliefs model seed effects (None: a
    seed of its own). `device` names the hardware it ran on (a GPU's name), for beliefs that
    model device effects (None: unknown, taken as the reference device)."""

    config: frozenset[str]
    value: float
    noise_scale: float = 1.0
    seed: int | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.config, frozenset):
            object.__setattr__(self, "config", frozenset(self.config))
        if not (math.isfinite(self.value) and abs(self.value) <= MAX_ABS_VALUE):
            raise ValueError(f"Observation value must be finite with |value| <= {MAX_ABS_VALUE:g} "
                             f"(squares must not overflow), got {self.value!r} "
                             f"for {sorted(self.config)}")
        if not (math.isfinite(self.noise_scale) and self.noise_scale > 0):
            raise ValueError("Observation noise_scale must be finite and > 0, "
                             f"got {self.noise_scale!r}")


@dataclass(frozen=True)
class Predictive:
    """Student-t distributions t_df(mean, scale), elementwise; a scale of 0 is a point mass."""

    mean: np.ndarray
    scale: np.ndarray
    df: np.ndarray

    def sd(self) -> np.ndarray:
        """Standard deviation scale*sqrt(df/(df-2)); infinite where df <= 2."""
        df = np.asarray(self.df, dtype=float)
        ratio = np.where(df > 2, df / np.where(df > 2, df - 2, 1.0), np.inf)
        return np.asarray(self.scale) * np.sqrt(ratio)

    def cdf(self, x: float | np.ndarray) -> np.ndarray:
        """P(Y <= x)."""
        scale = np.asarray(self.scale, dtype=float)
        safe = np.where(scale > 0, scale, 1.0)
        t_cdf = stats.t.cdf((np.asarray(x) - self.mean) / safe, self.df)
        return np.where(scale > 0, t_cdf, (np.asarray(x) >= self.mean).astype(float))

    def logpdf(self, y: float | np.ndarray) -> np.ndarray:
        """log density of y (nats, per unit of the metric)."""
        return stats.t.logpdf(y, self.df, loc=self.mean, scale=self.scale)

    def interval(self, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Central credible interval holding probability `level`."""
        if not 0 < level < 1:
            raise ValueError(f"interval level must be in (0, 1), got {level!r}")
        q = stats.t.ppf(0.5 + level / 2, self.df)
        return self.mean - q * self.scale, self.mean + q * self.scale


@dataclass(frozen=True)
class BeliefPrior:
    """Hyperparameters, in standardised units (outcome sd ~ 1, see `Beliefs.to_standard`).

    beta_j | sigma^2 ~ N(m_g, tau_g^2 sigma^2); b0 | sigma^2 ~ N(0, baseline_sd^2 sigma^2);
    sigma^2 ~ InvGamma(noise_df/2, noise_df/2 * noise_sd^2), noise_df runs' worth of prior
    centred on noise_sd in units of the standardisation's scale, the replicate sd
    (`Beliefs.noise_prior`), never on the spread between configurations; the spike's Bayes
    factor uses the same noise prior (beliefs.spike);
    hyperpriors for empirical Bayes (MAP-II): m_g ~ N(0, category_mean_sd^2),
    tau_g^2 ~ InvGamma(scale_df/2, scale_df/2 * effect_sd^2) (interactions: interaction_sd, m = 0).
    With `empirical_bayes=False` the scales stay at tau_g = effect_sd. `hyper_uncertainty` adds the
    Kass-Steffey correction for the uncertainty of the fitted scales (see beliefs.hyper).
    `standardisation` = (center, scale) in metric units fixes z = (y - center)/scale instead of
    deriving it from the data (see beliefs.standardise).
    `effect_priors` maps a hypothesis name to (mean, sd) in METRIC units (transfer from memory);
    it replaces that hypothesis's category prior (sd relative to noise_sd, as all effect priors).
    `null_share` is the prior guess of the share of changes that do nothing at all (the spike of
    the spike-and-slab prior, see beliefs.spike); 0 turns the spike off (slab only).
    `seed_sd` centres the hyperpriors of the seed scales (a seed's luck u_s and what each change
    adds to it, v_sj; see `Beliefs`), relative to sigma as every scale:
    tau^2 ~ InvGamma(scale_df/2, scale_df/2 * seed_sd^2).
    `device_noise_sd` is the sd of log h_k, a device's noise multiplier (beliefs.devices): the
    default keeps an order of magnitude either way within 1.5 sd.
    """

    effect_sd: float = 0.5
    noise_df: float = 1.0
    noise_sd: float = 1.0
    baseline_sd: float = 10.0
    category_mean_sd: float = 0.5
    scale_df: float = 1.0
    interaction_sd: float = 0.25
    empirical_bayes: bool = True
    hyper_uncertainty: bool = True
    effect_priors: dict[str, tuple[float, float]] = field(default_factory=dict)
    standardisation: tuple[float, float] | None = None
    null_share: float = 0.5
    seed_sd: float = 0.3
    device_noise_sd: float = 1.5

    def __post_init__(self) -> None:
        if not (isinstance(self.null_share, (int, float)) and 0 <= self.null_share < 1):
            raise ValueError(f"BeliefPrior.null_share must be in [0, 1), got {self.null_share!r}")
        if self.standardisation is not None:
            center, scale = self.standardisation
            if not (math.isfinite(center) and math.isfinite(scale) and scale > 0):
                raise ValueError("BeliefPrior.standardisation must be (finite center, "
                                 f"scale > 0), got {self.standardisation!r}")
        for key in ("effect_sd", "noise_df", "noise_sd", "baseline_sd", "category_mean_sd",
                    "scale_df", "interaction_sd", "seed_sd", "device_noise_sd"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"BeliefPrior.{key} must be a finite number > 0, got {value!r}")
        for name, pair in self.effect_priors.items():
            mean, sd = pair
            if not (math.isfinite(mean) and math.isfinite(sd) and sd > 0):
                raise ValueError(f"BeliefPrior.effect_priors[{name!r}] must be "
                                 f"(finite mean, sd > 0), got {pair!r}")

    @property
    def noise_shape(self) -> float:
        """a0 of the inverse-gamma prior on sigma^2."""
        return self.noise_df / 2

    @property
    def noise_rate(self) -> float:
        """b0 of the inverse-gamma prior on sigma^2 (prior guess noise_sd^2 = b0/a0)."""
        return self.noise_df / 2 * self.noise_sd**2


@dataclass(frozen=True)
class Projection:
    """Normal-inverse-gamma quantities, standardised units, for effect j and config c.

    Posterior: sigma^2 ~ IG(a, b); beta | sigma^2 ~ N(m, sigma^2 V).
    m_j = E[beta_j]; v_jj = V_jj; cov_jc = (V x_c)_j; r = x_c^T V x_c; h = noise variance multiplier
    of a run at c; mean_c = x_c^T m. After n runs at c with mean outcome ybar (known sigma):
    V_jj' = v_jj - n cov_jc^2 / (h + n r) and m_j' = m_j + n cov_jc (ybar - mean_c) / (h + n r).
    """

    a: float
    b: float
    m_j: float
    v_jj: float
    cov_jc: float
    r: float
    h: float
    mean_c: float


@dataclass(frozen=True)
class EffectSummary:
    """Marginal posterior of one hypothesis's effect (metric units; lo/hi: central 90%)."""

    name: str
    category: str
    mean: float
    sd: float
    lo: float
    hi: float


@dataclass(frozen=True)
class CategorySummary:
    """Posterior of the average effect of the category's hypotheses (metric units; 90%)."""

    category: str
    mean: float
    sd: float
    lo: float
    hi: float
    n_hypotheses: int
