"""Per-device offsets and noise multipliers (beliefs.devices), with synthetic device labels:
checked against a direct refit, a brute-force evidence maximum and a Monte Carlo from the model."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from beliefs import BeliefPrior, Beliefs, Hypothesis, Observation

FIXED = BeliefPrior(empirical_bayes=False, hyper_uncertainty=False, null_share=0.0,
                    standardisation=(0.0, 1.0))


def runs(rng: np.random.Generator, plan: list[tuple[bool, str, int]], effect: float,
         offsets: dict[str, float], noise_sd: dict[str, float]) -> list[Observation]:
    """n runs of (applies a?, device) each: 1 + effect·a + offset(device) + N(0, sd(device)^2)."""
    out = []
    for applied, device, n in plan:
        for _ in range(n):
            value = (1.0 + effect * applied + offsets[device]
                     + noise_sd[device] * float(rng.normal()))
            out.append(Observation(frozenset({"a"} if applied else ()), value, device=device))
    return out


def beliefs_of(observations, prior=FIXED, device_effects=True) -> Beliefs:
    beliefs = Beliefs([Hypothesis("a", "x")], device_effects=device_effects, prior=prior)
    beliefs.update(observations)
    return beliefs


# Confounded on purpose: most base runs on the reference device, most candidate runs on "B".
CONFOUNDED = [(False, "A", 9), (False, "B", 3), (True, "A", 3), (True, "B", 9)]


def test_a_device_offset_is_a_column_of_the_refit_with_each_device_weighted_by_its_h():
    """The posterior mean of the effect is the ridge solution (X^T W X + P)^-1 X^T W y computed
    here from a design built by hand (baseline, delta_a, m_x, offset of B) with the priors'
    precisions and W = 1/h of each run's device at the model's fitted h."""
    observations = runs(np.random.default_rng(1), CONFOUNDED, -0.3, {"A": 0.0, "B": 1.0},
                        {"A": 0.2, "B": 0.5})
    beliefs = beliefs_of(observations)
    h = {d: beliefs.noise_multiplier(d) for d in "AB"}
    assert h["B"] > h["A"]
    x = np.array([[1.0, float("a" in o.config), float("a" in o.config), float(o.device == "B")]
                  for o in observations])
    y = np.array([o.value for o in observations])
    w = np.array([1.0 / h[o.device] for o in observations])
    precision = np.diag([FIXED.baseline_sd**-2, FIXED.effect_sd**-2, FIXED.category_mean_sd**-2,
                         FIXED.baseline_sd**-2])
    theta = np.linalg.solve(x.T @ (w[:, None] * x) + precision, x.T @ (w * y))
    assert beliefs.effects()[0].mean == pytest.approx(theta[1] + theta[2], abs=1e-9)
    summary = beliefs.device_effects_summary()
    assert list(summary) == ["A", "B"] and summary["A"] == {"offset": 0.0,
                                                            "noise_multiplier": h["A"]}
    assert summary["B"]["offset"] == pytest.approx(theta[3], abs=1e-9)


def test_the_noise_multiplier_is_the_maximum_of_the_evidence_computed_directly():
    """Scales fixed, so the two devices' h are the only things fitted: they maximise
    log p(y | h) + sum_k log N(log h_k; 0, s^2), where y ~ multivariate t_{2 a0}(0,
    (b0/a0)(W^-1 + X P^-1 X^T)) is the evidence written out over all runs at once (theta and
    sigma^2 integrated out), on a grid around the fit."""
    observations = runs(np.random.default_rng(2), CONFOUNDED, -0.3, {"A": 0.0, "B": 0.5},
                        {"A": 0.2, "B": 0.6})
    beliefs = beliefs_of(observations)
    fitted = np.log([beliefs.noise_multiplier("A"), beliefs.noise_multiplier("B")])
    a0, b0 = beliefs.noise_prior()
    x = np.array([[1.0, float("a" in o.config), float("a" in o.config), float(o.device == "B")]
                  for o in observations])
    y = np.array([o.value for o in observations])
    prior_cov = np.diag([FIXED.baseline_sd**2, FIXED.effect_sd**2, FIXED.category_mean_sd**2,
                         FIXED.baseline_sd**2])
    on_b = np.array([o.device == "B" for o in observations])

    def log_posterior(log_h: np.ndarray) -> float:
        noise = np.diag(np.exp(np.where(on_b, log_h[1], log_h[0])))
        shape = (b0 / a0) * (noise + x @ prior_cov @ x.T)
        evidence = stats.multivariate_t(np.zeros(len(y)), shape, df=2 * a0).logpdf(y)
        return float(evidence) - float(np.sum(log_h**2)) / (2 * FIXED.device_noise_sd**2)

    steps = np.linspace(-0.3, 0.3, 31)
    values = [[log_posterior(fitted + np.array([da, db])) for db in steps] for da in steps]
    i, j = np.unravel_index(np.argmax(values), (31, 31))
    assert abs(steps[i]) <= steps[1] - steps[0] and abs(steps[j]) <= steps[1] - steps[0]


def test_device_effects_remove_the_bias_of_confounded_devices_over_many_worlds():
    """Monte Carlo from the model: device B reads 1.0 higher and is 3x as noisy, and most
    candidate runs ran on it. The effect has a vague prior of its own (not pooled, which would
    shrink it), so its posterior mean estimates it without bias: over 60 worlds, with device
    effects, the mean is the true -0.3 within 3 standard errors; without them it is biased by
    about half the offset (the share of the candidate's runs on B less the base's), of the
    wrong sign."""
    effect, offsets, noise = -0.3, {"A": 0.0, "B": 1.0}, {"A": 0.2, "B": 0.6}
    rng = np.random.default_rng(3)
    prior = BeliefPrior(null_share=0.0, effect_priors={"a": (0.0, 10.0)})
    with_devices, without = [], []
    for _ in range(60):
        observations = runs(rng, CONFOUNDED, effect, offsets, noise)
        with_devices.append(beliefs_of(observations, prior).effects()[0].mean)
        without.append(beliefs_of(observations, prior, device_effects=False).effects()[0].mean)
    with_devices, without = np.array(with_devices), np.array(without)
    standard_error = with_devices.std(ddof=1) / np.sqrt(len(with_devices))
    assert abs(with_devices.mean() - effect) < 3 * standard_error
    assert without.mean() > 0.0  # the change looks harmful: its runs were on the slow device


def test_a_noisier_device_is_found_noisier_and_one_device_adds_nothing():
    """Empirical Bayes recovers a ratio h_B / h_A of 9 (three times the sd) within the sampling
    error of a variance ratio over 40 runs a device (log sd sqrt(2/40 + 2/40) ~ 0.32, 3 of them
    allowed); with every run on one device the model is the one without devices, exactly."""
    observations = runs(np.random.default_rng(4), [(False, "A", 20), (True, "A", 20),
                                                   (False, "B", 20), (True, "B", 20)],
                        -0.3, {"A": 0.0, "B": 0.4}, {"A": 0.2, "B": 0.6})
    fitted = beliefs_of(observations, BeliefPrior())
    ratio = fitted.noise_multiplier("B") / fitted.noise_multiplier("A")
    assert abs(np.log(ratio) - np.log(9.0)) < 3 * np.sqrt(2 / 40 + 2 / 40)
    alone = [o for o in observations if o.device == "A"]
    one, none = beliefs_of(alone, BeliefPrior()), beliefs_of(alone, BeliefPrior(), False)
    assert one.standard_posterior().mean.shape == none.standard_posterior().mean.shape
    assert np.array_equal(one.standard_posterior().mean, none.standard_posterior().mean)


def test_the_fit_hardly_depends_on_which_device_came_first():
    """Every device's h is under one hyperprior, so reversing the runs (B first) changes only
    the offsets' reference, whose prior (sd 10 noise sds) pulls on an estimate by about a
    hundredth of its variance: the h agree to 1%, the effect to a twentieth of its sd."""
    observations = runs(np.random.default_rng(5), CONFOUNDED, -0.3, {"A": 0.0, "B": 1.0},
                        {"A": 0.2, "B": 0.5})
    forward = beliefs_of(observations, BeliefPrior())
    backward = Beliefs([Hypothesis("a", "x")], device_effects=True)
    for o in observations[::-1]:
        backward.update([o])
    assert list(backward.device_effects_summary()) == ["B", "A"]
    for device in "AB":
        assert forward.noise_multiplier(device) == pytest.approx(
            backward.noise_multiplier(device), rel=0.01)
    effect, reversed_effect = forward.effects()[0], backward.effects()[0]
    assert abs(effect.mean - reversed_effect.mean) < 0.05 * effect.sd


def test_a_run_on_a_device_not_seen_yet_is_predicted_with_its_offset_unknown():
    """Its offset is still the vague prior's (sd baseline_sd noise sds), so the predictive
    variance grows by exactly that; a seen device's prediction has its fitted offset."""
    observations = runs(np.random.default_rng(6), CONFOUNDED, -0.3, {"A": 0.0, "B": 1.0},
                        {"A": 0.2, "B": 0.5})
    beliefs = beliefs_of(observations, BeliefPrior())
    config = [frozenset({"a"})]
    on_a = beliefs.predict(config, seeds=[None], devices=["A"])
    on_c = beliefs.predict(config, seeds=[None], devices=["C"])
    _, scale = beliefs.standardisation()
    noise_var = beliefs.standard_posterior().noise_var * scale**2
    extra = float(on_c.scale[0] ** 2 - on_a.scale[0] ** 2) / noise_var
    h_a = beliefs.noise_multiplier("A")  # C, unseen, has h = 1
    assert extra == pytest.approx(BeliefPrior().baseline_sd**2 + 1.0 - h_a, rel=1e-9)
    on_b = beliefs.predict(config, seeds=[None], devices=["B"])
    offset = beliefs.device_effects_summary()["B"]["offset"]
    assert float(on_b.mean[0] - on_a.mean[0]) == pytest.approx(offset, rel=1e-9)
