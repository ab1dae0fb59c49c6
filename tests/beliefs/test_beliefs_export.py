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
    assert {"baseline", "effect", "category_mean", "category_scale", "sigma",
            "incumbent_mean"} <= set(post.data_vars)
    # grouped by category
    assert list(post["hypothesis"].values) == ["wider", "rope", "muon_lr_up", "warmdown"]
    assert list(post["category_of"].values) == ["architecture", "architecture", "optimizer",
                                                "schedule"]
    assert post["incumbent_mean"].shape == (2, 200, 3)  # exact draws, as two chains
    assert idata.posterior_predictive["y"].shape == (2, 200, beliefs.n_observations)
    # draws agree with the closed-form summaries (MC error of 400 draws ~ 0.05 sd)
    for e in beliefs.effects():
        draws = post["effect"].sel(hypothesis=e.name).values.ravel()
        assert abs(draws.mean() - e.mean) < 0.2 * e.sd
    mu = beliefs.posterior_mean([frozenset({"wider", "rope"})])
    assert abs(post["incumbent_mean"].values[..., 2].mean() - mu.mean[0]) < 0.2 * mu.sd()[0]
    path = save_inference_data(idata, tmp_path / "beliefs.nc")
    loaded = az.from_netcdf(path)
    assert loaded.posterior.attrs["draws"] == "exact"
    np.testing.assert_allclose(loaded.posterior["effect"].values, post["effect"].values)
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
