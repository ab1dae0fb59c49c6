"""Export beliefs to arviz: InferenceData (arviz 0.2x) or DataTree (arviz 1.x), metric units.

Groups: posterior, log_likelihood (y[obs]), posterior_predictive (y[obs]), observed_data (y[obs]).
Every value is in the metric's units and direction (`sign` = -1 for a higher-is-better metric,
whose internal scale is negated); a change is better where its effect is below 0 for a
lower-is-better metric and above 0 for a higher-is-better one.
- posterior: baseline, effect[hypothesis], effect_slab[hypothesis], null[hypothesis],
  category_mean[category], category_scale[category], sigma, incumbent_mean[step].
  `effect` is what the decisions are made from: draws of the spike-and-slab effect, exactly 0
  where `null` is 1 (the change does nothing, drawn with its P(null), independently of the slab),
  else the slab's draw (`effect_slab`). So `(posterior.effect < 0).mean()` (lower is better) is
  P(better) = (1 - P(null)) P_slab(better) of the change against the base config, up to Monte
  Carlo error; the exact values are in the posterior's attrs `p_null` and `p_better` (JSON).
  A decision's P(better) in report.md is about the change on the incumbent of its time.
- The hypothesis dimension is ordered by category and carries a `category_of` coordinate;
  `obs` is labelled "step:slot" when the runs' steps are given, with coordinates step, slot,
  role, seed, config ("base" or the applied hypotheses joined by "+") and device.
- log_likelihood: log N(y_i; x_i^T theta, sigma^2 h_i) per draw, nats per metric unit, with x_i
  the run's row (its seed's luck and its device's offset included), so az.loo and az.compare work.
Draws come from the fast path's posterior (sigma^2 ~ IG(a, b), theta | sigma^2 ~
N(m, sigma^2 V), scales tau_g at their empirical-Bayes values; `fit_pymc` writes its own, slab
only). They are exact and independent; they are stored as CONJUGATE_CHAINS chains so that
`az.summary` computes r-hat and ESS (near 1 and near the number of draws), and the posterior
group's `draws` attribute says "exact".
"""

from __future__ import annotations

import json
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
    history_steps: Sequence[int] | None = None,
    rng: np.random.Generator | None = None,
    n_draws: int = 1000,
    sign: float = 1.0,
    run_labels: Sequence[tuple[int, int, str]] | None = None,
):
    """Build the arviz object. `incumbent_history` holds the incumbent config after each step
    listed in `history_steps` (default 0, 1, ...); `sign` is -1 for a higher-is-better metric;
    `run_labels` gives (step, slot, role) of each observation, in the order of
    `beliefs.observations`."""
    import arviz as az

    center, scale = beliefs.standardisation()
    obs = beliefs.observations
    # sorted is stable: within a category the hypotheses keep their order
    hypotheses = sorted(beliefs.hypotheses, key=lambda h: beliefs.categories.index(h.category))
    names = [h.name for h in hypotheses]
    if rng is None:
        raise ValueError(
            "to_inference_data: pass rng (a numpy Generator) to draw from the fast path")
    if run_labels is not None and len(run_labels) != len(obs):
        raise ValueError(f"to_inference_data: {len(run_labels)} run labels for "
                         f"{len(obs)} observations")
    per_chain = -(-n_draws // CONJUGATE_CHAINS)
    theta, sigma_std = _fast_path_draws(beliefs, per_chain * CONJUGATE_CHAINS, rng)
    theta = theta.reshape(CONJUGATE_CHAINS, per_chain, -1)
    sigma_std = sigma_std.reshape(CONJUGATE_CHAINS, per_chain)
    tau = np.array([beliefs.hyperparameters()[g]["tau"] for g in beliefs.categories])
    slab = np.einsum("cnd,jd->cnj", theta, beliefs.effect_contrasts(names)) * scale
    p_null = np.array([beliefs.null_probability(frozenset({n}), frozenset()) for n in names])
    null = (rng.random(slab.shape) < p_null).astype(np.int8)
    slab_better = [float(beliefs.difference(frozenset({n}), frozenset()).cdf(0.0))
                   for n in names]
    history = [frozenset(c) for c in incumbent_history]
    incumbent = (np.einsum("cnd,kd->cnk", theta, beliefs.design(history)) * scale + center
                 if history else np.zeros(theta.shape[:2] + (0,)))
    rows = beliefs.design([o.config for o in obs], [o.seed for o in obs],
                          [o.device if beliefs.device_effects else None for o in obs])
    mu = np.einsum("cnd,id->cni", theta, rows)
    noise_sd = sigma_std[..., None] * np.sqrt([beliefs.run_noise_scale(o) for o in obs])
    z = (np.array([o.value for o in obs]) - center) / scale
    log_likelihood = (-0.5 * ((z - mu) / noise_sd) ** 2 - np.log(noise_sd)
                      - 0.5 * np.log(2 * np.pi) - np.log(scale))
    predictive = (mu + noise_sd * rng.normal(size=mu.shape)) * scale + center
    posterior = {
        "baseline": sign * (theta[..., 0] * scale + center),
        "effect": sign * np.where(null == 1, 0.0, slab),
        "effect_slab": sign * slab,
        "null": null,
        "category_mean": sign * np.einsum("cnd,gd->cng", theta,
                                          beliefs.category_contrasts()) * scale,
        "category_scale": tau[None, None, :] * sigma_std[..., None] * scale,
        "sigma": sigma_std * scale,
        "incumbent_mean": sign * incumbent,
    }
    steps = list(history_steps) if history_steps is not None else list(range(len(history)))
    coords = {"hypothesis": names, "category": beliefs.categories, "step": steps,
              "obs": (np.arange(len(obs)) if run_labels is None
                      else [f"{step}:{slot}" for step, slot, _ in run_labels])}
    dims = {"effect": ["hypothesis"], "effect_slab": ["hypothesis"], "null": ["hypothesis"],
            "category_mean": ["category"], "category_scale": ["category"],
            "incumbent_mean": ["step"], "y": ["obs"]}
    groups = {"posterior": posterior, "log_likelihood": {"y": log_likelihood},
              "posterior_predictive": {"y": sign * predictive},
              "observed_data": {"y": sign * np.array([o.value for o in obs])}}
    p_better = [(1 - p) * better for p, better in zip(p_null.tolist(), slab_better)]
    attrs = {"draws": "exact", "direction": "lower" if sign > 0 else "higher",
             "p_null": json.dumps(dict(zip(names, p_null.tolist()))),
             "p_better": json.dumps(dict(zip(names, p_better)))}
    obs_coords = {"seed": ("obs", [-1 if o.seed is None else o.seed for o in obs]),
                  "config": ("obs", ["+".join(sorted(o.config)) or "base" for o in obs]),
                  "device": ("obs", [o.device or "" for o in obs])}
    if run_labels is not None:
        obs_coords |= {"step": ("obs", [step for step, _, _ in run_labels]),
                       "slot": ("obs", [slot for _, slot, _ in run_labels]),
                       "role": ("obs", [role for _, _, role in run_labels])}
    category_of = ("hypothesis", [h.category for h in hypotheses])
    if int(az.__version__.split(".")[0]) >= 1:
        # arviz 1.x: from_dict takes a dict of groups and returns a DataTree.
        result = az.from_dict(groups, coords=coords, dims=dims)
        result["posterior"] = result["posterior"].to_dataset().assign_coords(
            category_of=category_of)
        result["posterior"].attrs.update(attrs)
        for group in ("log_likelihood", "posterior_predictive", "observed_data"):
            result[group] = result[group].to_dataset().assign_coords(obs_coords)
        return result
    result = az.from_dict(**groups, coords=coords, dims=dims)
    result.posterior = result.posterior.assign_coords(category_of=category_of)
    result.posterior.attrs.update(attrs)
    for group in ("log_likelihood", "posterior_predictive", "observed_data"):
        setattr(result, group, getattr(result, group).assign_coords(obs_coords))
    return result


def save_inference_data(obj, path: str | Path) -> Path:
    """Write to netCDF (InferenceData and DataTree both have to_netcdf); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj.to_netcdf(str(path))
    return path


def arviz_group(obj, name: str):
    """A group of an InferenceData (arviz 0.2x) or DataTree (1.x), as an xarray Dataset."""
    group = getattr(obj, name) if hasattr(obj, name) else obj[name]
    return group.to_dataset() if hasattr(group, "to_dataset") else group


def highest_density_interval(draws: np.ndarray, prob: float) -> tuple[float, float]:
    """The narrowest interval [x_i, x_(i+k)] of the sorted draws that holds k = floor(prob n)
    steps of them (the draws' units): the HDI of a unimodal posterior."""
    x = np.sort(np.ravel(draws))
    k = int(np.floor(prob * len(x)))
    i = int(np.argmin(x[k:] - x[:len(x) - k]))
    return float(x[i]), float(x[i + k])


def forest(draws: dict[str, dict[str, np.ndarray]], labels: dict[str, str], path: str | Path,
           title: str) -> Path:
    """A forest plot drawn with matplotlib alone (so it reads the same under arviz 0.2x and
    1.x): per row of `labels` (key -> shown label, top to bottom) and per model of `draws`
    (model -> key -> draws), the median, the 50% HDI (thick) and the 90% HDI (thin); a key to
    the models outside the axes; a line at 0. Returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows, models = list(labels), list(draws)
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.35 * len(rows) * max(1, len(models)) ** 0.5))
    spread = 0.6 / max(1, len(models))
    for k, model in enumerate(models):
        offsets = np.arange(len(rows)) + (k - (len(models) - 1) / 2) * spread
        colour = f"C{k}"
        for y, row in zip(offsets, rows):
            sample = draws[model][row]
            ax.plot(highest_density_interval(sample, 0.9), [y, y], color=colour, linewidth=1)
            ax.plot(highest_density_interval(sample, 0.5), [y, y], color=colour, linewidth=3.5)
        ax.plot([float(np.median(draws[model][row])) for row in rows], offsets, "o",
                color=colour, markerfacecolor="white", markersize=5,
                label=f"{model}: median, 50% and 90% HDI")
    ax.axvline(0.0, color="grey", linewidth=0.8, linestyle="--")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(7))
    ax.set_yticks(np.arange(len(rows)), [labels[row] for row in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_effects(obj, path: str | Path) -> Path:
    """Forest plot of the effects if they do anything (`effect_slab`), labelled "category:
    hypothesis", in the order of the hypothesis dimension (grouped by category); PNG."""
    posterior = arviz_group(obj, "posterior")
    names = [str(n) for n in posterior["hypothesis"].values]
    labels = {name: f"{cat}: {name}" for name, cat in zip(names,
                                                          posterior["category_of"].values)}
    slab = {name: np.asarray(posterior["effect_slab"].sel(hypothesis=name)) for name in names}
    return forest({"conjugate": slab}, labels, path,
                  f"Effects if the change does anything (90% HDI; better is "
                  f"{'below' if posterior.attrs.get('direction', 'lower') == 'lower' else 'above'}"
                  " 0)")
