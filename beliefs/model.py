"""`Beliefs`: the conjugate fast path of the generative model over outcomes.

y(c) = b0 + sum_{j in c} (m_g(j) + delta_j) (+ pairwise interactions) + eps,
eps ~ N(0, sigma^2 h(c)), in standardised units z = (y - center)/scale (see
`beliefs.standardise`). The effect of hypothesis j
is beta_j = m_g + delta_j with delta_j | sigma^2 ~ N(0, tau_g^2 sigma^2) and the category mean
m_g | sigma^2 ~ N(0, category_mean_sd^2 sigma^2) held as a coefficient of its own, so the category
means are integrated out exactly and only the scales tau_g are set by empirical Bayes (plugging in
m_g as well made the 50% intervals cover 40% of effects in the calibration test). Hypotheses with
a transferred prior (`effect_priors`) are not pooled: beta_j = delta_j ~ N(prior mean, prior sd^2).
Columns: 0 baseline, then one per hypothesis (delta_j), per category (m_g), per interaction pair.

With `seed_effects`, runs that share a seed share its luck, and each change may keep some of it
and not the rest: a run of c at seed s adds
  u_s + sum_{j in c} v_sj,  u_s | sigma^2 ~ N(0, tau_seed^2 sigma^2),
  v_sj | sigma^2 ~ N(0, tau_luck,g(j)^2 sigma^2),
each a column of its own (one per seed, one per seed and applied hypothesis), with the scales
tau_seed and tau_luck,g (one per category) set by empirical Bayes like the other scales. Two runs
at one seed are correlated by tau_seed^2 + sum over the hypotheses both apply of tau_luck^2, so a
paired difference cancels u_s and the luck of what both share; a change whose luck is all its own
(tau_luck,g large) gains nothing from the pairing. Effects, differences and the keep decision are
of the mean over seeds (the luck's columns are not in any contrast). A future run at a seed
without a column, or at a seed of its own, carries that luck as effects still at their prior
("latent" effects, like interaction pairs without a column).

With `device_effects` and runs on more than one device (`Observation.device`, e.g. a GPU's
name), a run's device adds an offset e_k (relative to the first device seen, e = 0) and
multiplies its noise variance by h_k: results from two kinds of hardware are pooled without the
offset biasing an effect, and the noisier device's runs count for less (beliefs.devices). The
offsets have the baseline's vague prior, not a pooled one (a shrunk offset would leave part of
itself in the effects of the changes run on that device); every device's h is fitted by
empirical Bayes under one hyperprior, so which device came first changes nothing but the
offsets' reference. Predictions, effects and decisions are of runs on the first device, at
h = 1.
Raw sufficient statistics
X^T W X, X^T W u, u^T W u (u = y - y_ref, W = diag(1/h)) are accumulated by batched rank-one
additions, so updates commute; the posterior is computed lazily, by Cholesky, when first asked.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import combinations

import numpy as np

from beliefs.devices import DeviceMoments, fit_noise_multipliers, reweighted
from beliefs.hyper import (
    PoolGroup,
    fit_pool_hyperparameters,
    log_scale_hyperprior,
    with_hyperparameter_uncertainty,
)
from beliefs.nig import (
    NIGPosterior,
    batch_info_gain_known_sigma,
    contrast_variance_after,
    info_gain_known_sigma,
    log_marginal_likelihood,
    loo_predictive_params,
    nig_posterior,
)
from beliefs.spike import SpikePrior, log_bayes_factor_null, null_share_posterior
from beliefs.standardise import ConfigMoments, standardisation
from beliefs.types import (
    BeliefPrior,
    CategorySummary,
    EffectSummary,
    Hypothesis,
    Observation,
    Predictive,
    Projection,
)

INTERACTIONS = "interaction"  # the pool name of pairwise interaction terms
SEED = "seed"  # the pool name of the seeds' luck u_s

Key = tuple  # a pool ("category", g) / ("interaction",) / ("seed",) / ("luck", g), or a latent
# effect without a column: ("pair", pair) / ("seed", s) / ("luck", s, hypothesis)


def fresh_seeds(n: int) -> list[tuple[str, int]]:
    """Seed keys of n future runs, each at a seed of its own (no column, no run shares it)."""
    return [("fresh", i) for i in range(n)]


class Beliefs:
    """Posterior over the baseline, per-hypothesis effects (pooled by category) and the noise."""

    def __init__(
        self,
        hypotheses: Sequence[Hypothesis],
        *,
        interactions: bool = False,
        seed_effects: bool = False,
        device_effects: bool = False,
        prior: BeliefPrior | None = None,
    ) -> None:
        self.prior = prior if prior is not None else BeliefPrior()
        self.interactions = interactions
        self.seed_effects = seed_effects
        self.device_effects = device_effects
        self._hypotheses: list[Hypothesis] = []
        self._column: dict[str, int] = {}  # hypothesis name -> feature column; 0 is the baseline
        self._category_column: dict[str, int] = {}  # category -> column of its mean m_g
        self._pair_column: dict[frozenset[str], int] = {}  # interaction pair -> feature column
        self._seed_column: dict[int, int] = {}  # seed -> column of its luck u_s
        self._luck_column: dict[tuple[int, str], int] = {}  # (seed, hypothesis) -> column of v_sj
        self._reference_device: str | None = None  # the first device seen: e = 0
        self._device_column: dict[str, int] = {}  # every other device -> column of its offset
        self._device_moments: dict[str, DeviceMoments] = {}  # each device's share of the sums
        self._noise_multiplier: dict[str, float] = {}  # each device's fitted h
        self._gram = np.zeros((1, 1))
        self._moment = np.zeros(1)
        self._sum_sq = 0.0
        self._reference: float | None = None
        self._config_moments: dict[frozenset[str], ConfigMoments] = {}
        self._observations: list[Observation] = []
        self._tau_sq: dict[Key, float] = {}  # fitted scales; a pool not fitted yet has its prior's
        self._cache: tuple[NIGPosterior, float, float] | None = None
        for h in hypotheses:
            self.add_hypothesis(h)

    # ---- structure -------------------------------------------------------------------------

    @property
    def hypotheses(self) -> list[Hypothesis]:
        return list(self._hypotheses)

    @property
    def categories(self) -> list[str]:
        """Categories in order of first appearance."""
        return list(dict.fromkeys(h.category for h in self._hypotheses))

    @property
    def observations(self) -> list[Observation]:
        return list(self._observations)

    @property
    def n_observations(self) -> int:
        return len(self._observations)

    @property
    def interaction_pairs(self) -> list[frozenset[str]]:
        """Pairs of hypotheses that have an interaction column (pairs observed together)."""
        return list(self._pair_column)

    def add_hypothesis(self, h: Hypothesis) -> None:
        """Add a hypothesis (mid-study allowed): a new zero column, since no past run applied it."""
        if h.name in self._column:
            raise ValueError(f"hypothesis {h.name!r} already exists")
        self._hypotheses.append(h)
        self._column[h.name] = self._add_column()
        if h.category not in self._category_column:
            self._category_column[h.category] = self._add_column()

    def _pooled(self, h: Hypothesis) -> bool:
        return h.name not in self.prior.effect_priors

    def _prior_tau_sq(self, pool: Key) -> float:
        """The centre of a pool's hyperprior, relative to sigma^2."""
        sd = {"category": self.prior.effect_sd, INTERACTIONS: self.prior.interaction_sd,
              SEED: self.prior.seed_sd, "luck": self.prior.seed_sd}[pool[0]]
        return sd**2

    def _scale_sq(self, pool: Key) -> float:
        """tau^2 of a pool: its empirical-Bayes fit, or its prior's centre before any fit."""
        return self._tau_sq.get(pool, self._prior_tau_sq(pool))

    def _category_of(self) -> dict[str, str]:
        return {h.name: h.category for h in self._hypotheses}

    def _latent_variance(self, key: Key, category_of: dict[str, str]) -> float:
        """Prior variance (units of sigma^2) of an effect that has no column yet."""
        if key[0] == "pair":
            return self._scale_sq((INTERACTIONS,))
        if key[0] == SEED:
            return self._scale_sq((SEED,))
        return self._scale_sq(("luck", category_of[key[2]]))

    def _latent_of(self, config: frozenset[str], seed: object) -> set[Key]:
        """The effects without a column that a run of `config` at `seed` adds: its interaction
        pairs without a column and, with seed effects, the luck of a seed that has no column for
        it. A seed of None adds no luck (a run the model gives no seed)."""
        latent: set[Key] = {("pair", pair) for pair in self._unseen_pairs(config)}
        if self.seed_effects and seed is not None:
            if seed not in self._seed_column:
                latent.add((SEED, seed))
            latent.update(("luck", seed, name) for name in config
                          if (seed, name) not in self._luck_column)
        return latent

    def _add_column(self) -> int:
        """Append a zero row and column to the statistics; returns the new column's index."""
        self._gram = np.pad(self._gram, ((0, 1), (0, 1)))
        self._moment = np.pad(self._moment, (0, 1))
        for moments in self._device_moments.values():
            moments.pad()
        self._cache = None
        return len(self._moment) - 1

    def _check_config(self, config: frozenset[str]) -> None:
        unknown = sorted(name for name in config if name not in self._column)
        if unknown:
            raise KeyError(f"unknown hypotheses {unknown} in config {sorted(config)}; "
                           f"known: {[h.name for h in self._hypotheses]}")

    def _features(self, configs: Sequence[frozenset[str]],
                  seeds: Sequence[object] | None = None,
                  devices: Sequence[str | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows x(c) (baseline, hypotheses, category means, known pairs, with `seeds` the luck
        columns of each run's seed, with `devices` each run's device offset) and the prior
        variance (units of sigma^2) of each row's effects without a column (a device not seen
        yet among them). Without `seeds` the rows are of the mean over seeds; without
        `devices`, of runs on the reference device."""
        rows = np.zeros((len(configs), len(self._moment)))
        rows[:, 0] = 1.0
        latent_variance = np.zeros(len(configs))
        pooled_category = {h.name: self._category_column[h.category]
                           for h in self._hypotheses if self._pooled(h)}
        category_of = self._category_of()
        for i, config in enumerate(configs):
            self._check_config(config)
            seed = None if seeds is None else seeds[i]
            for name in config:
                rows[i, self._column[name]] = 1.0
                if name in pooled_category:
                    rows[i, pooled_category[name]] += 1.0
            if self.interactions:
                for pair in combinations(sorted(config), 2):
                    column = self._pair_column.get(frozenset(pair))
                    if column is not None:
                        rows[i, column] = 1.0
            if self.seed_effects and seed is not None:
                if seed in self._seed_column:
                    rows[i, self._seed_column[seed]] = 1.0
                for name in config:
                    column = self._luck_column.get((seed, name))
                    if column is not None:
                        rows[i, column] = 1.0
            latent_variance[i] = sum(self._latent_variance(key, category_of)
                                     for key in self._latent_of(config, seed))
            device = None if devices is None else devices[i]
            if device in self._device_column:
                rows[i, self._device_column[device]] = 1.0
            elif self.device_effects and device not in (None, self._reference_device) \
                    and self._reference_device is not None:
                # a device not seen yet: its offset is still the vague prior's
                latent_variance[i] += self.prior.baseline_sd**2
        return rows, latent_variance

    def _joint_factor(self, rows: np.ndarray, latent: Sequence[dict[Key, float]]) -> np.ndarray:
        """B with B^T B = Cov(q_i, q_k) / sigma^2 for q_i = x_i^T theta + sum_e c_ie e, where theta
        has the slab's posterior and the latent effects e (no column yet) their independent
        priors; `latent[i]` maps each latent effect of q_i to its coefficient c_ie."""
        factor = self.standard_posterior().whiten(rows)
        keys = sorted({key for coefficients in latent for key in coefficients}, key=repr)
        if not keys:
            return factor
        category_of = self._category_of()
        marks = np.array([[coefficients.get(key, 0.0) for coefficients in latent] for key in keys])
        sd = np.sqrt([self._latent_variance(key, category_of) for key in keys])
        return np.vstack([factor, sd[:, None] * marks])

    def _unseen_pairs(self, config: frozenset[str]) -> set[frozenset[str]]:
        """Pairs in `config` with no interaction column yet (their effect is still the prior)."""
        if not self.interactions:
            return set()
        return {frozenset(p) for p in combinations(sorted(config), 2)
                if frozenset(p) not in self._pair_column}

    # ---- data ------------------------------------------------------------------------------

    def update(self, observations: Iterable[Observation]) -> None:
        """Add runs: X^T W X += sum w x x^T etc. (commutative, so any order gives one posterior)."""
        batch = [o if isinstance(o, Observation) else Observation(*o) for o in observations]
        for o in batch:
            self._check_config(o.config)
        if not batch:
            return
        for o in batch:
            # in name order, not the set's: its order follows the process's hash seed, and
            # the column order decides the float sums, so a study would not replay exactly
            for pair in sorted(self._unseen_pairs(o.config), key=sorted):
                self._pair_column[pair] = self._add_column()
            if self.seed_effects and o.seed is not None:
                if o.seed not in self._seed_column:
                    self._seed_column[o.seed] = self._add_column()
                for name in sorted(o.config):
                    if (o.seed, name) not in self._luck_column:
                        self._luck_column[(o.seed, name)] = self._add_column()
            if self.device_effects and o.device is not None:
                if self._reference_device is None:
                    self._reference_device = o.device
                    self._device_moments[o.device] = DeviceMoments.empty(len(self._moment))
                elif o.device != self._reference_device and o.device not in self._device_column:
                    self._device_moments[o.device] = DeviceMoments.empty(len(self._moment))
                    self._device_column[o.device] = self._add_column()
        if self._reference is None:
            self._reference = batch[0].value
        devices = [o.device if self.device_effects else None for o in batch]
        rows, _ = self._features([o.config for o in batch], [o.seed for o in batch], devices)
        weights = np.array([1.0 / o.noise_scale for o in batch])
        shifted = np.array([o.value for o in batch]) - self._reference
        self._gram += (rows * weights[:, None]).T @ rows
        self._moment += rows.T @ (weights * shifted)
        self._sum_sq += float(np.sum(weights * shifted**2))
        for device, moments in self._device_moments.items():
            on = np.array([d == device for d in devices])
            if on.any():
                moments.add(rows[on], weights[on], shifted[on])
        for o, u, w in zip(batch, shifted, weights):
            self._config_moments.setdefault(o.config, ConfigMoments()).add(float(u), float(w))
        self._observations.extend(batch)
        self._cache = None

    def copy(self) -> Beliefs:
        return copy.deepcopy(self)

    def fresh(self, prior: BeliefPrior | None = None) -> Beliefs:
        """The same model (hypotheses, interactions, seed and device effects) with no runs yet,
        under `prior` (default: this one's)."""
        return Beliefs(self._hypotheses, interactions=self.interactions,
                       seed_effects=self.seed_effects, device_effects=self.device_effects,
                       prior=self.prior if prior is None else prior)

    # ---- standardisation -------------------------------------------------------------------

    def standardisation(self) -> tuple[float, float]:
        """(center, scale), metric units: z = (y - center)/scale; see beliefs.standardise."""
        if self.prior.standardisation is not None:
            return self.prior.standardisation
        return standardisation(self._config_moments, self._reference or 0.0)

    def noise_prior(self) -> tuple[float, float]:
        """(a0, b0) of sigma^2 ~ IG(a0, b0), standardised units^2: a0 = noise_df/2 (noise_df runs'
        worth, one by default), prior guess of sigma b0/a0 = noise_sd^2 in units of the
        standardisation's scale (the replicate sd). It never depends on how far apart the
        configurations' means are: a prior widened by the spread of all runs let one bad change
        inflate sigma for every comparison, and the spike's Bayes factor, which must read the
        posterior's own model, then disagreed with it."""
        return self.prior.noise_shape, self.prior.noise_rate

    def to_standard(self, y: float | np.ndarray) -> float | np.ndarray:
        center, scale = self.standardisation()
        return (np.asarray(y) - center) / scale

    def from_standard(self, z: float | np.ndarray) -> float | np.ndarray:
        center, scale = self.standardisation()
        return np.asarray(z) * scale + center

    # ---- posterior -------------------------------------------------------------------------

    def _pool_columns(self) -> dict[Key, list[int]]:
        """Columns sharing one scale tau: each category's deltas, the interaction pairs, the
        seeds' luck u_s, and per category the luck v_sj its hypotheses add."""
        pools: dict[Key, list[int]] = {}
        for h in self._hypotheses:
            if self._pooled(h):
                pools.setdefault(("category", h.category), []).append(self._column[h.name])
        if self._pair_column:
            pools[(INTERACTIONS,)] = list(self._pair_column.values())
        if self._seed_column:
            pools[(SEED,)] = list(self._seed_column.values())
        category_of = self._category_of()
        for (_, name), column in self._luck_column.items():
            pools.setdefault(("luck", category_of[name]), []).append(column)
        return pools

    def _groups(self) -> dict[Key, PoolGroup]:
        shape = self.prior.scale_df / 2
        return {pool: PoolGroup(np.array(columns, dtype=int), shape,
                                shape * self._prior_tau_sq(pool))
                for pool, columns in self._pool_columns().items()}

    def _prior_vectors(self, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Prior mean and precision (units of 1/sigma^2) of every column, standardised units."""
        d = len(self._moment)
        mean = np.zeros(d)
        precision = np.empty(d)
        precision[0] = self.prior.baseline_sd**-2
        precision[list(self._device_column.values())] = self.prior.baseline_sd**-2
        for pool, columns in self._pool_columns().items():
            precision[columns] = 1.0 / self._scale_sq(pool)
        for h in self._hypotheses:
            if not self._pooled(h):
                metric_mean, metric_sd = self.prior.effect_priors[h.name]
                j = self._column[h.name]
                mean[j], precision[j] = metric_mean / scale, (metric_sd / scale) ** -2
        for column in self._category_column.values():
            precision[column] = self.prior.category_mean_sd**-2
        return mean, precision

    def _standard_stats(self, center: float, scale: float, gram: np.ndarray,
                        raw_moment: np.ndarray, raw_sum_sq: float) -> tuple[np.ndarray, float]:
        """X^T W z and z^T W z from raw statistics: z = (u - delta)/scale,
        delta = center - y_ref; X^T W 1 is the baseline column of the Gram matrix."""
        delta = center - (self._reference or 0.0)
        moment = (raw_moment - delta * gram[:, 0]) / scale
        sum_sq = ((raw_sum_sq - 2 * delta * raw_moment[0] + delta**2 * gram[0, 0])
                  / scale**2)
        return moment, max(sum_sq, 0.0)

    def _posterior(self) -> tuple[NIGPosterior, float, float]:
        """(NIG posterior in standardised units, center, scale); EB hyperparameters refitted
        lazily: the pooled scales, and with several devices their noise multipliers."""
        if self._cache is not None:
            return self._cache
        center, scale = self.standardisation()
        noisy = [d for d, m in self._device_moments.items() if m.count > 0]
        if len(noisy) < 2:  # one device: its h is sigma's, nothing to fit
            noisy = []
        if noisy:
            multipliers = fit_noise_multipliers(
                lambda h: self._fit_scales(center, scale, noisy, h)[0], len(noisy),
                self.prior.device_noise_sd)
            self._noise_multiplier = {d: float(h) for d, h in zip(noisy, multipliers)}
        _, post = self._fit_scales(center, scale, noisy,
                                   np.array([self._noise_multiplier[d] for d in noisy]),
                                   final=True)
        self._cache = (post, center, scale)
        return self._cache

    def _fit_scales(self, center: float, scale: float, devices: Sequence[str],
                    multipliers: np.ndarray, final: bool = False) -> tuple[float, NIGPosterior]:
        """The pooled scales' empirical-Bayes fit with the runs of `devices` at noise
        multipliers h: (log evidence + log hyperprior of the scales at the fit, nats; the
        posterior, with the Kass-Steffey term when `final`)."""
        gram, raw_moment, raw_sum_sq, log_weight_change = reweighted(
            self._gram, self._moment, self._sum_sq,
            [self._device_moments[d] for d in devices], multipliers)
        moment, sum_sq = self._standard_stats(center, scale, gram, raw_moment, raw_sum_sq)
        n = len(self._observations)
        sum_log_weight = (float(sum(-math.log(o.noise_scale) for o in self._observations))
                          + log_weight_change)
        a0, b0 = self.noise_prior()

        def evaluate(
            prior_mean: np.ndarray, prior_precision: np.ndarray
        ) -> tuple[float, NIGPosterior]:
            post = nig_posterior(gram, moment, sum_sq, n, prior_mean, prior_precision, a0, b0)
            return log_marginal_likelihood(post, n, sum_log_weight, prior_precision, a0, b0), post

        prior_mean, prior_precision = self._prior_vectors(scale)
        groups = self._groups() if self.prior.empirical_bayes and n > 0 else {}
        hyperprior = 0.0
        if groups:  # none when every hypothesis has a transferred prior: nothing to pool
            names = list(groups)
            tau_sq, log_tau_sq_cov = fit_pool_hyperparameters(
                list(groups.values()), prior_mean, prior_precision, evaluate,
                # Always from the prior's scales, never warm-started: the evidence can have several
                # local optima, and a warm start would make the result depend on the update order.
                np.array([self._prior_tau_sq(k) for k in names]))
            self._tau_sq = {k: float(t) for k, t in zip(names, tau_sq)}
            prior_mean, prior_precision = self._prior_vectors(scale)
            hyperprior = log_scale_hyperprior(list(groups.values()), tau_sq)
        log_evidence, post = evaluate(prior_mean, prior_precision)
        if final and groups and self.prior.hyper_uncertainty:
            post = with_hyperparameter_uncertainty(post, list(groups.values()), tau_sq,
                                                   log_tau_sq_cov)
        return log_evidence + hyperprior, post

    def noise_multiplier(self, device: str | None) -> float:
        """h of a device: its runs' noise variance in units of sigma^2 (1 for a device not
        seen, for None, with one device and without device effects)."""
        if device is None or device not in self._device_moments:
            return 1.0
        self.standard_posterior()
        return self._noise_multiplier.get(device, 1.0)

    def run_noise_scale(self, observation: Observation) -> float:
        """A run's noise variance multiplier: its own h(c) times its device's h_k."""
        device = observation.device if self.device_effects else None
        return observation.noise_scale * self.noise_multiplier(device)

    def device_effects_summary(self) -> dict[str, dict[str, float]]:
        """Per device seen, in the order first seen: "offset", the posterior mean of e_k
        (metric units; 0 for the first), and "noise_multiplier", h_k."""
        if self._reference_device is None:
            return {}
        post, _, scale = self._posterior()
        first = self._reference_device
        result = {first: {"offset": 0.0, "noise_multiplier": self.noise_multiplier(first)}}
        for device, column in self._device_column.items():
            result[device] = {"offset": float(post.mean[column]) * scale,
                              "noise_multiplier": self.noise_multiplier(device)}
        return result

    def hyperparameters(self) -> dict[str, dict[str, float]]:
        """Per category: posterior mean of m_g and the empirical-Bayes tau_g (standardised units,
        relative to sigma); "interaction": tau of the pairwise terms when there are any."""
        post = self.standard_posterior()
        result = {g: {"mean": float(post.mean[self._category_column[g]]),
                      "tau": math.sqrt(self._scale_sq(("category", g)))}
                  for g in self.categories}
        if self._pair_column:
            result[INTERACTIONS] = {"mean": 0.0, "tau": math.sqrt(self._scale_sq((INTERACTIONS,)))}
        return result

    def seed_scales(self) -> dict[str, float]:
        """With seed effects: "seed", the sd of a seed's luck u_s, and per category the sd of the
        luck v_sj each of its hypotheses adds (both relative to sigma, standardised units, fitted
        once the runs have seeds). The share of a seed's luck that one run of hypothesis j and
        one of the base config at that seed have in common is
        tau_seed^2 / sqrt(tau_seed^2 (tau_seed^2 + tau_luck^2)) at sigma = 0."""
        if not self.seed_effects:
            return {}
        self.standard_posterior()
        return {SEED: math.sqrt(self._scale_sq((SEED,))),
                **{g: math.sqrt(self._scale_sq(("luck", g))) for g in self.categories}}

    def column_layout(self) -> dict[str, dict]:
        """Which column of theta holds what: {"hypothesis": {name: col}, "category": {g: col},
        "pairs": {frozenset pair: col}, "seed": {seed: col}, "luck": {(seed, name): col},
        "device": {device: col}};
        column 0 is the baseline."""
        return {"hypothesis": dict(self._column), "category": dict(self._category_column),
                "pairs": dict(self._pair_column), "seed": dict(self._seed_column),
                "luck": dict(self._luck_column), "device": dict(self._device_column)}

    def column_names(self) -> list[str]:
        """What each column of theta is, in column order: "baseline", "effect:<name>" (delta_j),
        "category:<g>" (m_g), "pair:<a>+<b>", "seed:<s>" (u_s), "luck:<s>:<name>" (v_sj),
        "device:<k>" (e_k)."""
        names = ["baseline"] + [""] * (len(self._moment) - 1)
        labelled = [(self._column, "effect:{}"), (self._category_column, "category:{}")]
        for columns, form in labelled:
            for key, column in columns.items():
                names[column] = form.format(key)
        for pair, column in self._pair_column.items():
            names[column] = "pair:" + "+".join(sorted(pair))
        for seed, column in self._seed_column.items():
            names[column] = f"seed:{seed}"
        for (seed, name), column in self._luck_column.items():
            names[column] = f"luck:{seed}:{name}"
        for device, column in self._device_column.items():
            names[column] = f"device:{device}"
        return names

    def pool_scales(self) -> list[tuple[str, np.ndarray, float]]:
        """Every pool of columns with one scale, other than the category deltas: (name, columns,
        fitted tau relative to sigma), name "interaction", "seed" or "seed:<category>"."""
        self.standard_posterior()
        return [(pool[0] if pool[0] != "luck" else f"seed:{pool[1]}", np.array(columns),
                 math.sqrt(self._scale_sq(pool)))
                for pool, columns in self._pool_columns().items() if pool[0] != "category"]

    def effect_contrasts(self, names: Sequence[str] | None = None) -> np.ndarray:
        """Rows u_j with beta_j = u_j^T theta (delta_j plus its category mean when pooled)."""
        names = [h.name for h in self._hypotheses] if names is None else list(names)
        by_name = {h.name: h for h in self._hypotheses}
        rows = np.zeros((len(names), len(self._moment)))
        for i, name in enumerate(names):
            if name not in by_name:
                raise KeyError(f"unknown hypothesis {name!r}; known: {list(by_name)}")
            rows[i, self._column[name]] = 1.0
            if self._pooled(by_name[name]):
                rows[i, self._category_column[by_name[name].category]] = 1.0
        return rows

    def category_contrasts(self) -> np.ndarray:
        """Rows selecting each category mean m_g, in the order of `categories`."""
        rows = np.zeros((len(self._category_column), len(self._moment)))
        for i, g in enumerate(self.categories):
            rows[i, self._category_column[g]] = 1.0
        return rows

    def standard_posterior(self) -> NIGPosterior:
        """The NIG posterior in standardised units (columns: see the module docstring)."""
        return self._posterior()[0]

    def design(self, configs: Sequence[frozenset[str]],
               seeds: Sequence[int | None] | None = None,
               devices: Sequence[str | None] | None = None) -> np.ndarray:
        """Feature rows x(c), columns as in `standard_posterior` (pairs without a column
        dropped); with `seeds`, the rows of runs at those seeds (their luck's columns); with
        `devices`, of runs on those devices (their offsets' columns)."""
        return self._features([frozenset(c) for c in configs], seeds, devices)[0]

    # ---- predictions -----------------------------------------------------------------------

    def _mean_and_r(
        self, configs: Sequence[frozenset[str]], seeds: Sequence[object] | None = None,
        devices: Sequence[str | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, NIGPosterior, float, float]:
        """Standardised mu(c) = x^T m and r(c) = x^T V x (+ the prior variance of the effects
        with no column); with `seeds`, of a run at each seed, luck included; with `devices`,
        on each device, its offset included."""
        post, center, scale = self._posterior()
        rows, latent_variance = self._features([frozenset(c) for c in configs], seeds, devices)
        return rows @ post.mean, post.quad(rows) + latent_variance, post, center, scale

    def predict(self, configs: Sequence[frozenset[str]],
                noise_scale: float | np.ndarray = 1.0,
                seeds: Sequence[int | None] | None = None,
                devices: Sequence[str | None] | None = None) -> Predictive:
        """One future run y(c): t_{2a}(x^T m, (b/a)(h + r)), metric units, at `seeds[i]` (a seed
        already run shares its luck) or, by default, each at a seed of its own; on `devices[i]`
        (its offset, and its noise multiplier times h) or, by default, the reference device."""
        seeds = fresh_seeds(len(configs)) if seeds is None else seeds
        mean, r, post, center, scale = self._mean_and_r(configs, seeds, devices)
        if devices is not None:
            noise_scale = noise_scale * np.array([self.noise_multiplier(d) for d in devices])
        z_scale = np.sqrt(post.noise_var * (np.asarray(noise_scale, dtype=float) + r))
        return Predictive(mean * scale + center, z_scale * scale, np.full(len(mean), 2 * post.a))

    def posterior_mean(self, configs: Sequence[frozenset[str]]) -> Predictive:
        """mu(c), the noise-free mean: t_{2a}(x^T m, (b/a) r), metric units."""
        mean, r, post, center, scale = self._mean_and_r(configs)
        return Predictive(mean * scale + center, np.sqrt(post.noise_var * r) * scale,
                          np.full(len(mean), 2 * post.a))

    def _contrast(self, a: frozenset[str], b: frozenset[str]) -> tuple[np.ndarray, int]:
        """d = x(a) - x(b), and how many pairs without a column are in only one of the configs
        (those keep their prior variance tau_int^2; pairs unseen in both cancel)."""
        a, b = frozenset(a), frozenset(b)
        rows, _ = self._features([a, b])
        return rows[0] - rows[1], len(self._unseen_pairs(a) ^ self._unseen_pairs(b))

    def _contrast_latent(self, a: frozenset[str], b: frozenset[str]) -> dict[Key, float]:
        """The latent pair effects of mu(a) - mu(b): +1 for those of a alone, -1 of b alone."""
        unseen_a, unseen_b = self._unseen_pairs(a), self._unseen_pairs(b)
        return {**{("pair", p): 1.0 for p in unseen_a - unseen_b},
                **{("pair", p): -1.0 for p in unseen_b - unseen_a}}

    def difference(self, a: frozenset[str], b: frozenset[str]) -> Predictive:
        """mu(a) - mu(b) under the slab: t_{2a}(d^T m, (b/a) d^T V d) with d = x(a) - x(b), metric
        units, 0-d arrays."""
        post, _, scale = self._posterior()
        contrast, unseen_only = self._contrast(a, b)
        r = float(post.quad(contrast)[0]) + unseen_only * self._scale_sq((INTERACTIONS,))
        return Predictive(np.asarray(float(contrast @ post.mean) * scale),
                          np.asarray(math.sqrt(post.noise_var * r) * scale), np.asarray(2 * post.a))

    def _prior_scale_sq(self, contrasts: np.ndarray, scale: float) -> np.ndarray:
        """c^T Lambda0^-1 c per row c: the slab's prior variance of c^T theta in units of
        sigma^2."""
        return (contrasts**2) @ (1.0 / self._prior_vectors(scale)[1])

    def _log_bayes_factors_null(self, contrasts: np.ndarray) -> np.ndarray:
        """log BF01 of c^T theta = 0 against the slab for each row c (beliefs.spike),
        standardised."""
        post, _, scale = self._posterior()
        return log_bayes_factor_null(contrasts @ post.mean, post.quad(contrasts),
                                     contrasts @ self._prior_vectors(scale)[0],
                                     self._prior_scale_sq(contrasts, scale), post.noise_var,
                                     post.a)

    def null_share(self) -> np.ndarray:
        """Weights of p(pi0 | data) on beliefs.spike.NULL_SHARE_GRID, from the Bayes factors of
        every hypothesis that has been run (pi0: the share of changes that do nothing)."""
        tested = sorted({name for o in self._observations for name in o.config})
        return null_share_posterior(self._log_bayes_factors_null(self.effect_contrasts(tested)),
                                    self.prior.null_share)

    def spike(self, a: frozenset[str], b: frozenset[str]) -> SpikePrior | None:
        """The spike-and-slab prior of d = mu(a) - mu(b), metric units; None when the spike is
        off."""
        if self.prior.null_share == 0:
            return None
        post, _, scale = self._posterior()
        contrast, unseen_only = self._contrast(a, b)
        prior_quad = (float(self._prior_scale_sq(contrast[None, :], scale)[0])
                      + unseen_only * self._scale_sq((INTERACTIONS,)))
        a, b = frozenset(a), frozenset(b)
        differ = a ^ b
        # d = 0 as "every one of them does nothing" can be no likelier than for any one of them:
        # the one-dimensional Bayes factor of a sum would read opposite effects as all null.
        ceiling = min((self.null_probability(b | {k}, b) if k in a else
                       self.null_probability(a | {k}, a) for k in differ), default=1.0) \
            if len(differ) > 1 else 1.0
        return SpikePrior(float(contrast @ self._prior_vectors(scale)[0]) * scale, prior_quad,
                          post.noise_var * scale**2, post.a, self.null_share(),
                          max(1, len(differ)), ceiling)

    def null_probability(self, a: frozenset[str], b: frozenset[str]) -> float:
        """P(mu(a) = mu(b) | data) under the spike-and-slab prior: the chance that the change from
        b to a does nothing (0 when the spike is off)."""
        spike = self.spike(a, b)
        if spike is None:
            return 0.0
        diff = self.difference(a, b)
        return spike.null_probability(float(diff.mean), float(diff.scale))

    def info_gain(self, configs: Sequence[frozenset[str]], n: int | np.ndarray,
                  noise_scale: float | np.ndarray = 1.0) -> np.ndarray:
        """Nats gained about the parameters from n more runs of each config (sigma known), each
        at a seed of its own: 0.5 log(1 + n r / (h + l)), l the variance of a fresh seed's luck
        (which is noise to the parameters). Dimensionless, so the standardisation does not
        matter. `n` broadcasts against the configs (its last axis), so several run counts cost
        one posterior solve."""
        n_arr = np.asarray(n)
        if np.any(n_arr < 0):
            raise ValueError(f"info_gain: n must be >= 0, got {n!r}")
        _, r, _, _, _ = self._mean_and_r(configs)
        return info_gain_known_sigma(r, n_arr, noise_scale + self._fresh_luck(configs))

    def _fresh_luck(self, configs: Sequence[frozenset[str]]) -> np.ndarray:
        """Prior variance of the luck of a run at a seed of its own, per config (units of
        sigma^2): tau_seed^2 + sum_j tau_luck,g(j)^2; 0 without seed effects."""
        if not self.seed_effects:
            return np.zeros(len(configs))
        category_of = self._category_of()
        return np.array([self._luck_variance(c, category_of) for c in configs])

    def _luck_variance(self, names: Iterable[str], category_of: dict[str, str]) -> float:
        """tau_seed^2 + sum_j tau_luck,g(j)^2 over `names` (units of sigma^2): the prior variance
        of the luck a run at a fresh seed carries from the seed and from those hypotheses."""
        return self._scale_sq((SEED,)) + sum(self._scale_sq(("luck", category_of[j]))
                                             for j in names)

    def _luck_covariance(self, configs: Sequence[frozenset[str]],
                         blocks: Sequence[object]) -> np.ndarray:
        """Cov of the luck of one run of each config (units of sigma^2), the runs of one block at
        one fresh seed and the blocks at seeds of their own: tau_seed^2 + sum over the
        hypotheses both runs apply of tau_luck,g(j)^2 within a block, 0 across blocks (its
        diagonal is `_fresh_luck`)."""
        category_of = self._category_of()
        luck = np.zeros((len(configs), len(configs)))
        for i, (a, block_a) in enumerate(zip(configs, blocks)):
            for k, (b, block_b) in enumerate(zip(configs, blocks)):
                if block_a == block_b:  # sorted: a sum in no hash order
                    luck[i, k] = self._luck_variance(sorted(a & b), category_of)
        return luck

    def batch_info_gain(self, configs: Sequence[frozenset[str]],
                        noise_scale: float | np.ndarray = 1.0,
                        blocks: Sequence[object] | None = None) -> float:
        """Nats from one run of each config, jointly about the slab's parameters (sigma known):
        0.5 log det(H + X V X^T + tau_int^2 Z Z^T) - 0.5 log det(H), where Z marks the pairs of
        each config that have no interaction column yet (each one more effect of prior variance
        tau_int^2, as in `difference_variance_after`) and H = diag(h) + the luck's covariance.
        Each run is at a seed of its own (H diagonal, h + a fresh seed's luck, as in
        `info_gain`), or with `blocks` (one label per run) the runs of one label share a fresh
        seed (`_luck_covariance`): the luck is noise to the parameters, and what the runs of a
        block share of it cancels from their differences."""
        configs = [frozenset(c) for c in configs]
        rows, _ = self._features(configs)
        whitened = self._joint_factor(
            rows, [{("pair", p): 1.0 for p in self._unseen_pairs(c)} for c in configs])
        if blocks is None or not self.seed_effects:
            return batch_info_gain_known_sigma(whitened, noise_scale + self._fresh_luck(configs))
        if len(blocks) != len(configs):
            raise ValueError(f"batch_info_gain: {len(blocks)} blocks for {len(configs)} configs")
        noise = np.broadcast_to(np.asarray(noise_scale, dtype=float), (len(configs),))
        return batch_info_gain_known_sigma(
            whitened, np.diag(noise) + self._luck_covariance(configs, blocks))

    def difference_variance_after(
        self, a: frozenset[str], b: frozenset[str], counts: tuple[int, int],
        seeds: tuple[Sequence[object], Sequence[object]] | None = None,
    ) -> float:
        """Var(mu(a) - mu(b)) / sigma^2 under the slab after counts[0] more runs of a and counts[1]
        of b (dimensionless). A pair with no column yet is one more effect with prior variance
        tau_int^2, seen by the runs of the configs that hold it. With seed effects the runs are at
        `seeds` = (seeds of a's runs, seeds of b's runs): a seed already run shares its known
        luck, one not run yet its prior luck with every run at it. By default the i-th run of a
        and the i-th of b share a new seed (paired runs)."""
        a, b = frozenset(a), frozenset(b)
        if counts[0] < 0 or counts[1] < 0:
            raise ValueError(f"difference_variance_after: counts must be >= 0, got {counts!r}")
        if not self.seed_effects:
            # Without luck n runs of one config act as one run of noise sigma^2 / n.
            runs, weights = [(a, None), (b, None)], np.array(counts, dtype=float)
        else:
            if seeds is None:
                seeds = (fresh_seeds(counts[0]), fresh_seeds(counts[1]))
            if (len(seeds[0]), len(seeds[1])) != tuple(counts):
                raise ValueError(f"difference_variance_after: {len(seeds[0])} and "
                                 f"{len(seeds[1])} seeds for counts {counts!r}")
            runs = [(a, s) for s in seeds[0]] + [(b, s) for s in seeds[1]]
            weights = np.ones(len(runs))
        rows, _ = self._features([c for c, _ in runs], [s for _, s in runs])
        contrast, _ = self._contrast(a, b)
        latent = [dict.fromkeys(self._latent_of(c, s), 1.0) for c, s in runs]
        factor = self._joint_factor(np.vstack([rows, contrast]),
                                    [*latent, self._contrast_latent(a, b)])
        return contrast_variance_after(factor.T @ factor, weights)

    def noise_sd(self) -> float:
        """Posterior mean of sigma, metric units: sqrt(b) Gamma(a - 1/2)/Gamma(a) * scale."""
        post, _, scale = self._posterior()
        return math.exp(0.5 * math.log(post.b) + math.lgamma(post.a - 0.5)
                        - math.lgamma(post.a)) * scale

    def _marginal(self, contrast: np.ndarray) -> Predictive:
        post, _, scale = self._posterior()
        r = post.quad(contrast)
        return Predictive(contrast @ post.mean * scale, np.sqrt(post.noise_var * r) * scale,
                          np.full(len(r), 2 * post.a))

    def effects(self) -> list[EffectSummary]:
        """Each hypothesis's effect beta_j = u_j^T theta: t_{2a}(u^T m, (b/a) u^T V u), metric
        units, 90%."""
        marginal = self._marginal(self.effect_contrasts())
        lo, hi = marginal.interval(0.9)
        sd = marginal.sd()
        return [EffectSummary(h.name, h.category, float(marginal.mean[i]), float(sd[i]),
                              float(lo[i]), float(hi[i]))
                for i, h in enumerate(self._hypotheses)]

    def category_effects(self) -> list[CategorySummary]:
        """Each category mean m_g (the expected effect of a new hypothesis of that category),
        metric units, 90% interval; n_hypotheses counts the category's hypotheses."""
        marginal = self._marginal(self.category_contrasts())
        lo, hi = marginal.interval(0.9)
        sd = marginal.sd()
        counts = Counter(h.category for h in self._hypotheses)
        return [CategorySummary(g, float(marginal.mean[i]), float(sd[i]), float(lo[i]),
                                float(hi[i]), counts[g])
                for i, g in enumerate(self.categories)]

    def projection(self, config: frozenset[str], hypothesis: str) -> Projection:
        """Standardised NIG quantities for effect `hypothesis` (beta_j = u_j^T theta) and one run at
        `config` at a seed of its own: m_j = u^T m, v_jj = u^T V u, cov_jc = u^T V x_c,
        r = x_c^T V x_c, h = 1 plus the fresh seed's luck (`info_gain`)."""
        unit = self.effect_contrasts([hypothesis])[0]
        post = self.standard_posterior()
        config = frozenset(config)
        row, latent_variance = self._features([config])
        v_x = post.solve(row[0])
        r = float(row[0] @ v_x) + float(latent_variance[0])
        return Projection(a=post.a, b=post.b, m_j=float(unit @ post.mean),
                          v_jj=float(unit @ post.solve(unit)), cov_jc=float(unit @ v_x), r=r,
                          h=1.0 + float(self._fresh_luck([config])[0]),
                          mean_c=float(row[0] @ post.mean))

    # ---- predictive log-loss ---------------------------------------------------------------

    def log_loss_of(self, observations: Sequence[Observation], *, exclude_self: bool) -> np.ndarray:
        """-log p(y_i | data) nats per metric unit for each observation; with exclude_self, each
        must be one of the data and is left out by the hat identity (hyperparameters fixed)."""
        observations = list(observations)
        if not observations:
            return np.zeros(0)
        if exclude_self:
            available = Counter(self._observations)
            wanted = Counter(observations)
            missing = [o for o, k in wanted.items() if available[o] < k]
            if missing:
                raise ValueError(f"log_loss_of(exclude_self=True): {missing[:3]} are not among "
                                 "the observed data")
        post, center, scale = self._posterior()
        configs = [o.config for o in observations]
        mean, r, _, _, _ = self._mean_and_r(configs, [o.seed for o in observations],
                                            [o.device for o in observations])
        z = (np.array([o.value for o in observations]) - center) / scale
        h = np.array([self.run_noise_scale(o) for o in observations])
        if exclude_self:
            loc, z_scale, df = loo_predictive_params(z, mean, r, 1.0 / h, post.a, post.b)
        else:
            loc, z_scale, df = mean, np.sqrt(post.noise_var * (h + r)), np.full(len(z), 2 * post.a)
        loss = -Predictive(loc, z_scale, df).logpdf(z) + math.log(scale)
        # A run the others cannot account for has no proper leave-one-out predictive: infinite loss.
        return np.where(np.isnan(z_scale), np.inf, loss)

    def loo_log_loss(self) -> np.ndarray:
        """Leave-one-out predictive log-loss of every past observation (nats, metric units)."""
        return self.log_loss_of(self._observations, exclude_self=True)

