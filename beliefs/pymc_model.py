"""Full Bayes: the fast path's model in PyMC (non-centred), sampled with NUTS.

Same standardisation, design matrix and priors as `Beliefs` (standardised units):
  sigma^2 ~ InvGamma(a0, b0); b0 = baseline_sd sigma e0; m_g = category_mean_sd sigma e_g;
  delta_j = tau_g sigma e_j (transferred priors: mu_j + sd_j sigma e_j); pairs: tau_int sigma e_p;
  with seed effects, a seed's luck tau_seed sigma e_s and each change's tau_luck,g sigma e_sj;
  with device effects, a device's offset baseline_sd sigma e_k, and h_i times its device's
  empirical-Bayes noise multiplier (fixed at the fast path's fit in both modes);
  z_i ~ N(x_i^T theta, sigma^2 h_i); all e ~ N(0, 1).
`hierarchical=True` gives tau_g^2 (and the other pools' tau^2) their inverse-gamma hyperprior,
integrating over them (the study report). `hierarchical=False` fixes them at the fast path's
empirical-Bayes values: then the posterior is exactly the fast path's NIG, which makes it a check
of the conjugate algebra.
Returned draws are in metric units: baseline, effect[hypothesis], category_mean[category],
category_scale[category] (= tau_g sigma, the sd of effects around their category mean), sigma,
plus `coefficients[column]` (standardised theta) for derived quantities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from beliefs.model import Beliefs


def fit_pymc(
    beliefs: Beliefs,
    *,
    draws: int = 500,
    tune: int = 500,
    chains: int = 2,
    seed: int,
    hierarchical: bool = True,
    target_accept: float = 0.9,
):
    """NUTS fit of the model on `beliefs.observations`; returns arviz InferenceData (DataTree on
    1.x)."""
    import pymc as pm
    import pytensor.tensor as pt

    if beliefs.n_observations == 0:
        raise ValueError("fit_pymc: there are no observations to fit")
    for key, value in (("draws", draws), ("tune", tune), ("chains", chains)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"fit_pymc: {key} must be an int >= 1, got {value!r}")
    prior = beliefs.prior
    center, scale = beliefs.standardisation()
    beliefs.standard_posterior()  # fits the empirical-Bayes scales used when not hierarchical
    hyper = beliefs.hyperparameters()
    obs = beliefs.observations
    devices = [o.device if beliefs.device_effects else None for o in obs]
    design = beliefs.design([o.config for o in obs], [o.seed for o in obs], devices)
    z = (np.array([o.value for o in obs]) - center) / scale
    noise_sd_factor = np.sqrt([beliefs.run_noise_scale(o) for o in obs])
    hypotheses = beliefs.hypotheses
    categories = beliefs.categories
    layout = beliefs.column_layout()
    coords = {"hypothesis": [h.name for h in hypotheses], "category": categories,
              "column": beliefs.column_names()}

    with pm.Model(coords=coords):
        noise_shape, noise_rate = beliefs.noise_prior()
        sigma_sq = pm.InverseGamma("sigma_sq_std", alpha=noise_shape, beta=noise_rate)
        sigma_std = pt.sqrt(sigma_sq)
        shape, rate = prior.scale_df / 2, prior.scale_df / 2 * prior.effect_sd**2
        if hierarchical:
            tau = pt.sqrt(pm.InverseGamma("tau_sq", alpha=shape, beta=rate, dims="category"))
        else:
            tau = pt.as_tensor_variable(np.array([hyper[g]["tau"] for g in categories]))
        raw = pm.Normal("raw", 0.0, 1.0, dims="column")
        # Per-column prior mean and sd (units of sigma), as in Beliefs._prior_vectors.
        prior_mean = np.zeros(design.shape[1])
        column_sd = pt.zeros(design.shape[1])
        column_sd = pt.set_subtensor(column_sd[0], prior.baseline_sd)
        for j in layout["device"].values():
            column_sd = pt.set_subtensor(column_sd[j], prior.baseline_sd)
        for g in categories:
            column_sd = pt.set_subtensor(column_sd[layout["category"][g]], prior.category_mean_sd)
        for h in hypotheses:
            j = layout["hypothesis"][h.name]
            if h.name in prior.effect_priors:
                metric_mean, metric_sd = prior.effect_priors[h.name]
                prior_mean[j] = metric_mean / scale
                column_sd = pt.set_subtensor(column_sd[j], metric_sd / scale)
            else:
                column_sd = pt.set_subtensor(column_sd[j], tau[categories.index(h.category)])
        # The other pools (interaction pairs, seeds' luck): one scale each, as in Beliefs.
        for name, columns, fitted_tau in beliefs.pool_scales():
            pool_prior_sd = {"interaction": prior.interaction_sd}.get(name, prior.seed_sd)
            pool_tau = (pt.sqrt(pm.InverseGamma(f"tau_sq_{name}", alpha=shape,
                                                beta=shape * pool_prior_sd**2))
                        if hierarchical else fitted_tau)
            column_sd = pt.set_subtensor(column_sd[columns], pool_tau)
        theta = pm.Deterministic("coefficients", prior_mean + column_sd * sigma_std * raw,
                                 dims="column")
        pm.Normal("z", mu=pt.dot(design, theta), sigma=sigma_std * noise_sd_factor, observed=z)
        effect_rows = beliefs.effect_contrasts()
        pm.Deterministic("baseline", theta[0] * scale + center)
        pm.Deterministic("effect", pt.dot(effect_rows, theta) * scale, dims="hypothesis")
        pm.Deterministic("category_mean", pt.dot(beliefs.category_contrasts(), theta) * scale,
                         dims="category")
        pm.Deterministic("category_scale", tau * sigma_std * scale, dims="category")
        pm.Deterministic("sigma", sigma_std * scale)
        return pm.sample(draws=draws, tune=tune, chains=chains, random_seed=seed,
                         target_accept=target_accept, progressbar=False,
                         compute_convergence_checks=False, cores=1)


# Vehtari et al. (2021): r-hat below 1.01 and a bulk ESS of at least 100 per chain.
RHAT_LIMIT = 1.01
ESS_PER_CHAIN = 100


@dataclass(frozen=True)
class SamplerDiagnostics:
    """Whether a NUTS fit can be trusted: divergent transitions after tuning, the largest
    r-hat (NaN with one chain, where it is not defined) and the smallest bulk ESS over the
    reported variables (baseline, effect, category_mean, category_scale, sigma), and the
    number of chains."""

    divergences: int
    max_rhat: float
    min_ess_bulk: float
    chains: int

    @property
    def problems(self) -> list[str]:
        """What makes the fit untrustworthy, one phrase each ([] for none)."""
        found = []
        if self.divergences:
            found.append(f"{self.divergences} divergent transitions")
        if self.chains > 1 and not self.max_rhat <= RHAT_LIMIT:
            found.append(f"r-hat up to {self.max_rhat:.3f} (> {RHAT_LIMIT})")
        if not self.min_ess_bulk >= ESS_PER_CHAIN * self.chains:
            found.append(f"bulk ESS down to {self.min_ess_bulk:.0f} (< {ESS_PER_CHAIN} per "
                         f"chain, {ESS_PER_CHAIN * self.chains} in all)")
        return found


def sampler_diagnostics(idata) -> SamplerDiagnostics:
    """The diagnostics of a `fit_pymc` result (arviz 0.2x InferenceData or 1.x DataTree)."""
    import arviz as az

    names = ["baseline", "effect", "category_mean", "category_scale", "sigma"]
    from beliefs.export import arviz_group

    stats, posterior = arviz_group(idata, "sample_stats"), arviz_group(idata, "posterior")
    chains = int(posterior.sizes["chain"])
    ess = az.ess(idata, var_names=names, method="bulk")
    max_rhat = math.nan
    if chains > 1:
        rhat = az.rhat(idata, var_names=names)
        max_rhat = float(max(np.nanmax(np.asarray(rhat[n])) for n in names))
    return SamplerDiagnostics(
        divergences=int(np.asarray(stats["diverging"]).sum()),
        max_rhat=max_rhat,
        min_ess_bulk=float(min(np.nanmin(np.asarray(ess[n])) for n in names)),
        chains=chains)
