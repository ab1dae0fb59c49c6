"""Export to arviz: groups, coords, netCDF round trip, a readable forest plot."""

import arviz as az
import numpy as np
import pytest

from beliefs import (
    Beliefs,
    Hypothesis,
    Observation,
    plot_effects,
    save_inference_data,
    to_inference_data,
)


@pytest.fixture(scope="module")
def beliefs() -> Beliefs:
    rng = np.random.default_rng(0)
    hypotheses = [Hypothesis("wider", "architecture"), Hypothesis("rope", "architecture"),
                  Hypothesis("muon_lr_up", "optimizer"), Hypothesis("warmdown", "schedule")]
    truth = {"wider": -0.03, "rope": -0.01, "muon_lr_up": 0.02, "warmdown": 0.0}
    obs = [Observation(frozenset(), 1.0 + 0.01 * rng.normal()) for _ in range(4)]
    for name, effect in truth.items():
        obs += [Observation(frozenset({name}), 1.0 + effect + 0.01 * rng.normal())
                for _ in range(4)]
    b = Beliefs(hypotheses)
    b.update(obs)
    return b


def test_inference_data_has_the_documented_groups_and_coords(beliefs, tmp_path):
    history = [frozenset(), frozenset({"wider"}), frozenset({"wider", "rope"})]
    idata = to_inference_data(beliefs, incumbent_history=history, rng=np.random.default_rng(1),
                              n_draws=400)
    post = idata.posterior
    assert {"baseline", "effect", "effect_slab", "null", "category_mean", "category_scale",
            "sigma", "incumbent_mean"} <= set(post.data_vars)
    # grouped by category
    assert list(post["hypothesis"].values) == ["wider", "rope", "muon_lr_up", "warmdown"]
    assert list(post["category_of"].values) == ["architecture", "architecture", "optimizer",
                                                "schedule"]
    assert post["incumbent_mean"].shape == (2, 200, 3)  # exact draws, as two chains
    assert idata.posterior_predictive["y"].shape == (2, 200, beliefs.n_observations)
    # the slab's draws agree with the closed-form summaries (MC error of 400 draws ~ 0.05 sd)
    for e in beliefs.effects():
        draws = post["effect_slab"].sel(hypothesis=e.name).values.ravel()
        assert abs(draws.mean() - e.mean) < 0.2 * e.sd
    mu = beliefs.posterior_mean([frozenset({"wider", "rope"})])
    assert abs(post["incumbent_mean"].values[..., 2].mean() - mu.mean[0]) < 0.2 * mu.sd()[0]
    path = save_inference_data(idata, tmp_path / "beliefs.nc")
    loaded = az.from_netcdf(path)
    assert loaded.posterior.attrs["draws"] == "exact"
    np.testing.assert_allclose(loaded.posterior["effect"].values, post["effect"].values)
    assert list(loaded.posterior["step"].values) == [0, 1, 2]
    np.testing.assert_allclose(loaded.observed_data["y"].values,
                               [o.value for o in beliefs.observations])


def test_forest_plot_labels_effects_by_category_and_name(beliefs, tmp_path):
    import matplotlib.pyplot as plt

    idata = to_inference_data(beliefs, rng=np.random.default_rng(2), n_draws=300)
    path = plot_effects(idata, tmp_path / "effects.png")
    assert path.stat().st_size > 5000
    assert plt.imread(path).shape[0] > 200
    axes = az.plot_forest(idata, var_names=["effect"], combined=True,
                          labeller=az.labels.MapLabeller(
                              coord_map={"hypothesis": {"wider": "architecture: wider"}}))
    labels = " ".join(t.get_text() for t in axes[0].get_yticklabels())
    plt.close("all")
    assert "architecture: wider" in labels and "muon_lr_up" in labels


def test_fast_path_draws_need_a_generator(beliefs):
    with pytest.raises(ValueError, match="rng"):
        to_inference_data(beliefs)


def test_the_exact_draws_summarise_cleanly(beliefs):
    """Independent draws split into chains: az.summary gives a finite r-hat near 1 and a bulk
    ESS near the number of draws (an independent sample's), with no warning."""
    import warnings

    idata = to_inference_data(beliefs, rng=np.random.default_rng(4), n_draws=2000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = az.summary(idata, var_names=["effect"])
    assert np.all(np.abs(summary["r_hat"].to_numpy() - 1.0) < 0.01)
    assert np.all(summary["ess_bulk"].to_numpy() > 1200)


def test_the_effect_is_the_spike_and_slab_the_decisions_use(beliefs):
    """P(effect < 0) over the draws is the keep rule's P(better) of the change against the base
    config (policies.keep, computed there from the t marginal and the Bayes factor) within the
    Monte Carlo error of 4000 draws; the null indicator's mean is P(null); the exact values
    are in the attrs."""
    import json

    from policies.keep import probability_better_than

    idata = to_inference_data(beliefs, rng=np.random.default_rng(5), n_draws=4000)
    post = idata.posterior
    exact = json.loads(post.attrs["p_better"])
    nulls = json.loads(post.attrs["p_null"])
    for h in beliefs.hypotheses:
        p_better = probability_better_than(beliefs, frozenset({h.name}), frozenset())[0]
        p_null = beliefs.null_probability(frozenset({h.name}), frozenset())
        assert exact[h.name] == pytest.approx(p_better, abs=1e-9)
        assert nulls[h.name] == pytest.approx(p_null, abs=1e-12)
        error = 4 * np.sqrt(p_better * (1 - p_better) / 4000) + 1e-3
        drawn = post["effect"].sel(hypothesis=h.name).values
        assert abs(float((drawn < 0).mean()) - p_better) < error
        assert abs(float(post["null"].sel(hypothesis=h.name).mean()) - p_null) < error
        assert np.all(drawn[post["null"].sel(hypothesis=h.name).values == 1] == 0.0)


def test_the_log_likelihood_is_each_runs_normal_density_at_every_draw(beliefs):
    """No seed effects or interactions here, so a run's mean is the baseline plus the slab
    effects it applies: scipy's normal log density at each draw's (baseline, effects, sigma)
    is the stored log likelihood; az.loo runs on it."""
    from scipy import stats

    idata = to_inference_data(beliefs, rng=np.random.default_rng(6), n_draws=200)
    post = idata.posterior
    for i, o in enumerate(beliefs.observations):
        mu = post["baseline"].values + sum(post["effect_slab"].sel(hypothesis=n).values
                                           for n in o.config)
        expected = stats.norm.logpdf(o.value, mu, post["sigma"].values)
        np.testing.assert_allclose(idata.log_likelihood["y"].values[..., i], expected,
                                   rtol=1e-9, atol=1e-9)
    assert np.isfinite(az.loo(idata).elpd_loo)


def test_a_higher_is_better_metric_is_stored_in_its_own_units_with_labelled_runs(beliefs):
    """sign = -1: observed y and the effects are the metric's (the internal values negated);
    each observation is labelled by its step, slot, role, seed and configuration."""
    n = beliefs.n_observations
    labels = [(i // 4, i % 4, "base" if i < 4 else "candidate") for i in range(n)]
    lower = to_inference_data(beliefs, rng=np.random.default_rng(7), n_draws=100)
    higher = to_inference_data(beliefs, rng=np.random.default_rng(7), n_draws=100, sign=-1.0,
                               run_labels=labels)
    np.testing.assert_allclose(higher.observed_data["y"].values,
                               [-o.value for o in beliefs.observations])
    np.testing.assert_allclose(higher.posterior["effect"].values,
                               -lower.posterior["effect"].values)
    assert higher.posterior.attrs["direction"] == "higher"
    y = higher.observed_data["y"]
    assert list(y["obs"].values[:5]) == ["0:0", "0:1", "0:2", "0:3", "1:0"]
    assert list(y["role"].values[3:5]) == ["base", "candidate"]
    assert y["config"].values[4] == "+".join(sorted(beliefs.observations[4].config))
    assert y["config"].values[0] == "base"


def test_the_hdi_is_arviz_s_on_skewed_and_symmetric_draws():
    """The forest plot's intervals (drawn without arviz's plotting, which differs between 0.2x
    and 1.x) against arviz's own hdi."""
    from beliefs.export import highest_density_interval

    rng = np.random.default_rng(8)
    for draws in (rng.normal(size=4001), rng.gamma(2.0, size=3000), rng.standard_t(3, 999)):
        for prob in (0.5, 0.9):
            ours = highest_density_interval(draws, prob)
            np.testing.assert_allclose(ours, az.hdi(draws, hdi_prob=prob), rtol=0, atol=0)
