"""Export beliefs to arviz: InferenceData (arviz 0.2x) or DataTree (arviz 1.x), metric units.

Groups: posterior (baseline, effect[hypothesis], category_mean[category], category_scale[category],
sigma, incumbent_mean[decision]), observed_data (y[obs]), posterior_predictive (y[obs]).
The hypothesis dimension is ordered by category and carries a `category_of` coordinate.
Draws come from a `fit_pymc` result when given, else from the fast path's posterior
(sigma^2 ~ IG(a, b), theta | sigma^2 ~ N(m, sigma^2 V), scales tau_g at their empirical-Bayes
values). Those draws are exact and independent; they are stored as CONJUGATE_CHAINS chains so
that `az.summary` computes r-hat and ESS (near 1 and near the number of draws), and the
posterior group's `draws` attribute says "exact" (or "nuts" for a PyMC fit).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import linalg

from beliefs.model import Beliefs

CONJUGATE_CHAINS = 2


def _fast_path_draws(
    beliefs: Beliefs, n_draws: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(theta draws (n, d) standardised, sigma draws (n,) standardised) from the NIG posterior."""
    post = beliefs.standard_posterior()
    sigma = np.sqrt(post.b / rng.gamma(post.a, 1.0, size=n_draws))
    # theta = m + sigma * B eps with B B^T = V: L^-T eps (+ F eps' for the scale uncertainty).
    noise = linalg.solve_triangular(post.chol, rng.normal(size=(len(post.mean), n_draws)),
                                    lower=True, trans="T")
    if post.extra is not None:
        noise = noise + post.extra @ rng.normal(size=(post.extra.shape[1], n_draws))
    return post.mean + (sigma * noise).T, sigma


def to_inference_data(
    beliefs: Beliefs,
    *,
    incumbent_history: Sequence[frozenset[str]] = (),
    posterior_draws=None,
    rng: np.random.Generator | None = None,
    n_draws: int = 1000,
):
    """Build the arviz object; `incumbent_history` holds the incumbent config after each
    decision."""
    import arviz as az

    center, scale = beliefs.standardisation()
    obs = beliefs.observations
    # sorted is stable: within a category the hypotheses keep their order
    hypotheses = sorted(beliefs.hypotheses, key=lambda h: beliefs.categories.index(h.category))
    names = [h.name for h in hypotheses]
    draws = "exact" if posterior_draws is None else "nuts"
    if posterior_draws is None:
        if rng is None:
            raise ValueError(
                "to_inference_data: pass rng (a numpy Generator) to draw from the fast path")
        per_chain = -(-n_draws // CONJUGATE_CHAINS)
        theta, sigma_std = _fast_path_draws(beliefs, per_chain * CONJUGATE_CHAINS, rng)
        theta = theta.reshape(CONJUGATE_CHAINS, per_chain, -1)
        sigma_std = sigma_std.reshape(CONJUGATE_CHAINS, per_chain)
        tau = np.array([beliefs.hyperparameters()[g]["tau"] for g in beliefs.categories])
        category_scale = tau[None, None, :] * sigma_std[..., None] * scale
    else:
        theta = posterior_draws.posterior["coefficients"].values
        sigma_std = posterior_draws.posterior["sigma"].values / scale
        category_scale = posterior_draws.posterior["category_scale"].values
        rng = rng if rng is not None else np.random.default_rng(0)
    effect = np.einsum("cnd,jd->cnj", theta, beliefs.effect_contrasts(names)) * scale
    history = [frozenset(c) for c in incumbent_history]
    incumbent = (np.einsum("cnd,kd->cnk", theta, beliefs.design(history)) * scale + center
                 if history else np.zeros(theta.shape[:2] + (0,)))
    mu = np.einsum("cnd,id->cni", theta, beliefs.design([o.config for o in obs]))
    noise_sd = sigma_std[..., None] * np.sqrt([o.noise_scale for o in obs])
    predictive = (mu + noise_sd * rng.normal(size=mu.shape)) * scale + center
    posterior = {
        "baseline": theta[..., 0] * scale + center,
        "effect": effect,
        "category_mean": np.einsum("cnd,gd->cng", theta, beliefs.category_contrasts()) * scale,
        "category_scale": category_scale,
        "sigma": sigma_std * scale,
        "incumbent_mean": incumbent,
    }
    coords = {"hypothesis": names, "category": beliefs.categories,
              "decision": np.arange(len(history)), "obs": np.arange(len(obs))}
    dims = {"effect": ["hypothesis"], "category_mean": ["category"], "category_scale": ["category"],
            "incumbent_mean": ["decision"], "y": ["obs"]}
    observed = {"y": np.array([o.value for o in obs])}
    if int(az.__version__.split(".")[0]) >= 1:
        # arviz 1.x: from_dict takes a dict of groups and returns a DataTree.
        result = az.from_dict({"posterior": posterior, "posterior_predictive": {"y": predictive},
                               "observed_data": observed}, coords=coords, dims=dims)
        result["posterior"] = result["posterior"].to_dataset().assign_coords(
            category_of=("hypothesis", [h.category for h in hypotheses]))
        result["posterior"].attrs["draws"] = draws
        return result
    result = az.from_dict(posterior=posterior, posterior_predictive={"y": predictive},
                          observed_data=observed, coords=coords, dims=dims)
    result.posterior = result.posterior.assign_coords(
        category_of=("hypothesis", [h.category for h in hypotheses]))
    result.posterior.attrs["draws"] = draws
    return result


def save_inference_data(obj, path: str | Path) -> Path:
    """Write to netCDF (InferenceData and DataTree both have to_netcdf); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj.to_netcdf(str(path))
    return path


def plot_effects(obj, path: str | Path) -> Path:
    """Forest plot of the effects, labelled "category: hypothesis", grouped by category; PNG."""
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    posterior = obj.posterior if hasattr(obj, "posterior") else obj["posterior"]
    labels = {name: f"{cat}: {name}" for name, cat in zip(posterior["hypothesis"].values,
                                                          posterior["category_of"].values)}
    axes = az.plot_forest(obj, var_names=["effect"], combined=True, hdi_prob=0.9,
                          labeller=az.labels.MapLabeller(coord_map={"hypothesis": labels}),
                          figsize=(7, 1.5 + 0.3 * len(labels)))
    axes[0].axvline(0.0, color="grey", lw=0.8)
    axes[0].set_title("Effects (metric units; lower is better), 90% HDI")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.savefig(path, dpi=100, bbox_inches="tight")
    plt.close("all")
    return path
