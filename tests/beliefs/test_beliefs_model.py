"""The Beliefs class: standardisation, predictives, difference, projection, LOO, structure."""

import math

import numpy as np
import pytest

from beliefs import BeliefPrior, Beliefs, Hypothesis, Observation


def _hypotheses(n: int, n_categories: int = 3) -> list[Hypothesis]:
    return [Hypothesis(f"h{i}", f"cat{i % n_categories}") for i in range(n)]


def _simulate(rng: np.random.Generator, n_hyp: int, reps: int, base: float, noise: float,
              effect: float):
    effects = rng.normal(0, effect, n_hyp)
    obs = [Observation(frozenset(), base + rng.normal(0, noise)) for _ in range(reps)]
    for i in range(n_hyp):
        obs += [Observation(frozenset({f"h{i}"}), base + effects[i] + rng.normal(0, noise))
                for _ in range(reps)]
    return effects, obs


def test_affine_change_of_metric_units_changes_nothing_but_units():
    rng = np.random.default_rng(0)
    _, obs = _simulate(rng, 8, 3, 0.0, 1.0, 1.0)
    small, large = Beliefs(_hypotheses(8)), Beliefs(_hypotheses(8))
    small.update(obs)
    large.update([Observation(o.config, 1000.0 + 0.01 * o.value) for o in obs])
    for e_small, e_large in zip(small.effects(), large.effects()):
        assert e_large.mean == pytest.approx(0.01 * e_small.mean, rel=1e-6, abs=1e-12)
        assert e_large.sd == pytest.approx(0.01 * e_small.sd, rel=1e-6)
    assert large.noise_sd() == pytest.approx(0.01 * small.noise_sd(), rel=1e-6)
    np.testing.assert_allclose(large.loo_log_loss(), small.loo_log_loss() + math.log(0.01),
                               rtol=1e-6, atol=1e-8)


def test_standardisation_centres_on_base_runs_and_scales_by_replicate_spread():
    beliefs = Beliefs(_hypotheses(2))
    beliefs.update([Observation(frozenset(), v) for v in (10.0, 12.0)]
                   + [Observation(frozenset({"h0"}), v) for v in (20.0, 24.0)])
    center, scale = beliefs.standardisation()
    assert center == pytest.approx(11.0)
    # pooled within-config variance: (2 + 8) / 2 = 5
    assert scale == pytest.approx(math.sqrt(5.0))
    assert beliefs.from_standard(beliefs.to_standard(17.5)) == pytest.approx(17.5)


def test_one_far_worse_change_does_not_inflate_the_noise_or_sink_a_good_one():
    """sigma is learnt from the replicates, not from how far apart the configs are: adding two
    runs of a change 20 sigma worse leaves the posterior sigma and a good change's P(better)
    where the replicates put them (the old prior, centred on the sd of all runs, raised sigma to
    2.9x the truth here and pushed P(better) from 0.78 to 0.65)."""
    rng = np.random.default_rng(3)
    sigma = 1.0
    good = [Observation(frozenset(), 10.0 + sigma * rng.normal()) for _ in range(4)]
    good += [Observation(frozenset({"h0"}), 9.4 + sigma * rng.normal()) for _ in range(4)]
    good += [Observation(frozenset({"h2"}), 10.0 + sigma * rng.normal()) for _ in range(2)]
    bad = [Observation(frozenset({"h1"}), 30.0 + sigma * rng.normal()) for _ in range(2)]

    def fitted(observations):
        beliefs = Beliefs(_hypotheses(3), prior=BeliefPrior(null_share=0))
        beliefs.update(observations)
        p_better = float(beliefs.difference(frozenset({"h0"}), frozenset()).cdf(np.array(0.0)))
        return beliefs.noise_sd(), p_better

    (sd_without, p_without), (sd_with, p_with) = fitted(good), fitted(good + bad)
    replicates: dict[frozenset, list[float]] = {}
    for o in good + bad:
        replicates.setdefault(o.config, []).append(o.value)
    pooled = math.sqrt(sum(np.sum((np.array(v) - np.mean(v)) ** 2) for v in replicates.values())
                       / sum(len(v) - 1 for v in replicates.values()))
    assert sd_with / pooled == pytest.approx(1.0, abs=0.15)
    assert sd_with / sd_without == pytest.approx(1.0, abs=0.1)
    assert p_with == pytest.approx(p_without, abs=0.03)
    # The prior is the declared one: noise_df/2, and a guess of noise_sd in the scale's units.
    beliefs = Beliefs(_hypotheses(3), prior=BeliefPrior(noise_df=3.0, noise_sd=2.0))
    beliefs.update(good + bad)
    assert beliefs.noise_prior() == pytest.approx((1.5, 1.5 * 4.0))


def test_difference_is_the_effect_when_one_hypothesis_is_added():
    rng = np.random.default_rng(1)
    _, obs = _simulate(rng, 5, 4, 3.0, 0.5, 0.5)
    beliefs = Beliefs(_hypotheses(5))
    beliefs.update(obs)
    diff = beliefs.difference(frozenset({"h2"}), frozenset())
    effect = beliefs.effects()[2]
    assert diff.mean.shape == ()
    assert float(diff.mean) == pytest.approx(effect.mean, rel=1e-9)
    assert float(diff.sd()) == pytest.approx(effect.sd, rel=1e-9)
    same = beliefs.difference(frozenset({"h1"}), frozenset({"h1"}))
    assert float(same.mean) == 0.0 and float(same.scale) == 0.0
    assert float(same.cdf(0.0)) == 1.0  # a point mass at 0, no NaN


def test_predictive_adds_noise_to_the_posterior_mean():
    rng = np.random.default_rng(2)
    _, obs = _simulate(rng, 4, 3, 0.0, 1.0, 1.0)
    beliefs = Beliefs(_hypotheses(4))
    beliefs.update(obs)
    configs = [frozenset(), frozenset({"h0", "h3"})]
    run, mean = beliefs.predict(configs), beliefs.posterior_mean(configs)
    np.testing.assert_allclose(run.mean, mean.mean)
    post = beliefs.standard_posterior()
    _, scale = beliefs.standardisation()
    np.testing.assert_allclose(run.scale**2 - mean.scale**2, post.b / post.a * scale**2, rtol=1e-9)
    lo, hi = run.interval(0.9)
    np.testing.assert_allclose(run.cdf(hi) - run.cdf(lo), 0.9, rtol=1e-9)


def test_projection_predicts_the_known_sigma_update_exactly():
    rng = np.random.default_rng(3)
    _, obs = _simulate(rng, 6, 3, 0.0, 1.0, 1.0)
    prior = BeliefPrior(empirical_bayes=False, standardisation=(0.2, 1.3))
    before = Beliefs(_hypotheses(6), prior=prior)
    before.update(obs)
    config = frozenset({"h1", "h4"})
    proj = before.projection(config, "h1")
    n, ybar_std = 3, 0.4
    after = before.copy()
    after.update([Observation(config, float(before.from_standard(ybar_std))) for _ in range(n)])
    post = after.standard_posterior()
    effect = after.effect_contrasts(["h1"])[0]  # beta_h1 = delta_h1 + m_cat1
    gain = proj.h + n * proj.r
    assert float(effect @ post.solve(effect)) == pytest.approx(
        proj.v_jj - n * proj.cov_jc**2 / gain, rel=1e-9)
    assert float(effect @ post.mean) == pytest.approx(
        proj.m_j + n * proj.cov_jc * (ybar_std - proj.mean_c) / gain, rel=1e-9)


def test_loo_log_loss_matches_refitting_without_each_point():
    rng = np.random.default_rng(4)
    _, obs = _simulate(rng, 4, 3, 5.0, 0.7, 0.7)
    beliefs = Beliefs(_hypotheses(4), prior=BeliefPrior(empirical_bayes=False))
    beliefs.update(obs)
    loo = beliefs.loo_log_loss()
    # LOO holds the hyperparameters, the standardisation and the noise prior at their full-data
    # values.
    noise_shape, noise_rate = beliefs.noise_prior()
    held = BeliefPrior(empirical_bayes=False, standardisation=beliefs.standardisation(),
                       noise_sd=float(np.sqrt(noise_rate / noise_shape)))
    for i in (0, 5, len(obs) - 1):
        rest = Beliefs(_hypotheses(4), prior=held)
        rest.update(obs[:i] + obs[i + 1:])
        expected = -float(rest.predict([obs[i].config]).logpdf(obs[i].value)[0])
        assert loo[i] == pytest.approx(expected, rel=1e-8)
    plain = beliefs.log_loss_of(obs, exclude_self=False)
    assert np.all(plain < loo)  # seeing a point can only make it more probable under a Gaussian fit
    with pytest.raises(ValueError, match="not among the observed"):
        beliefs.log_loss_of([Observation(frozenset(), 123.0)], exclude_self=True)


def test_add_hypothesis_mid_study_starts_at_its_category_prior():
    rng = np.random.default_rng(5)
    _, obs = _simulate(rng, 6, 3, 0.0, 1.0, 1.0)
    beliefs = Beliefs(_hypotheses(6))
    beliefs.update(obs)
    beliefs.add_hypothesis(Hypothesis("late", "cat1"))
    beliefs.add_hypothesis(Hypothesis("novel", "brand_new"))
    effects = {e.name: e for e in beliefs.effects()}
    hyper = beliefs.hyperparameters()
    _, scale = beliefs.standardisation()
    assert effects["late"].mean == pytest.approx(hyper["cat1"]["mean"] * scale, rel=1e-6)
    assert "brand_new" in beliefs.categories
    beliefs.update([Observation(frozenset({"late"}), 0.3),
                    Observation(frozenset({"late", "novel"}), 0.1)])
    assert beliefs.n_observations == len(obs) + 2
    with pytest.raises(ValueError, match="already exists"):
        beliefs.add_hypothesis(Hypothesis("late", "cat0"))
    with pytest.raises(KeyError, match="unknown hypotheses"):
        beliefs.update([Observation(frozenset({"nope"}), 1.0)])


def test_effect_prior_from_memory_is_used_in_metric_units():
    prior = BeliefPrior(effect_priors={"h0": (-0.5, 0.01)}, empirical_bayes=False)
    beliefs = Beliefs(_hypotheses(3), prior=prior)
    beliefs.update([Observation(frozenset(), v) for v in (1.0, 1.2, 0.8, 1.1)])
    effect = beliefs.effects()[0]
    assert effect.mean == pytest.approx(-0.5, rel=1e-9)


def test_interactions_learn_a_pair_effect_that_additive_model_misses():
    rng = np.random.default_rng(6)
    obs = []
    truth = {frozenset(): 0.0, frozenset({"h0"}): -1.0, frozenset({"h1"}): -1.0,
             frozenset({"h0", "h1"}): 0.0}
    for config, mean in truth.items():
        obs += [Observation(config, mean + rng.normal(0, 0.2)) for _ in range(8)]
    additive, pairwise = Beliefs(_hypotheses(2)), Beliefs(_hypotheses(2), interactions=True)
    additive.update(obs)
    pairwise.update(obs)
    both = frozenset({"h0", "h1"})
    assert pairwise.interaction_pairs == [both]
    assert abs(float(pairwise.posterior_mean([both]).mean[0])) < 0.2
    assert float(additive.posterior_mean([both]).mean[0]) < -0.5
    # A pair never observed together keeps the prior variance of its interaction.
    pairwise.add_hypothesis(Hypothesis("h2", "cat2"))
    unseen = pairwise.posterior_mean([frozenset({"h0", "h2"})])
    assert np.isfinite(unseen.scale).all()
    assert pairwise.info_gain([frozenset({"h0", "h2"})], 1)[0] > 0
    # A batch's joint information counts an unseen pair as one more effect of prior variance
    # tau_int^2, as the predictive does: for one run it is 0.5 log(1 + r) with r from the
    # predictive's path, and two runs sharing the pair tell less than twice one.
    config = frozenset({"h0", "h2"})
    one = pairwise.batch_info_gain([config])
    assert one == pytest.approx(pairwise.info_gain([config], 1)[0], rel=1e-9)
    other = frozenset({"h0", "h1", "h2"})
    assert one < pairwise.batch_info_gain([config, other]) < one + pairwise.batch_info_gain([other])


def test_info_gain_and_bad_inputs():
    beliefs = Beliefs(_hypotheses(3))
    beliefs.update([Observation(frozenset(), 1.0), Observation(frozenset({"h0"}), 2.0)])
    gains = beliefs.info_gain([frozenset({"h0"}), frozenset({"h1"})], np.array([1, 1]))
    assert gains[1] > gains[0] > 0  # the unobserved hypothesis is the more informative run
    # Several run counts at once (rows) give the same nats as one call per row.
    configs, grid = [frozenset({"h0"}), frozenset({"h1"})], np.array([[1, 2], [3, 1], [5, 4]])
    assert np.allclose(beliefs.info_gain(configs, grid),
                       [beliefs.info_gain(configs, row) for row in grid])
    with pytest.raises(ValueError, match="n must be >= 0"):
        beliefs.info_gain([frozenset()], -1)
    with pytest.raises(ValueError, match="finite"):
        Observation(frozenset(), float("nan"))
    with pytest.raises(ValueError, match="noise_scale"):
        Observation(frozenset(), 1.0, noise_scale=0.0)
    with pytest.raises(ValueError, match="effect_sd"):
        BeliefPrior(effect_sd=-1.0)


def test_every_hypothesis_with_a_transferred_prior_leaves_nothing_to_pool():
    """A warm start can give every hypothesis its own prior; empirical Bayes then has no group."""
    beliefs = Beliefs([Hypothesis("h0", "a")], prior=BeliefPrior(effect_priors={"h0": (-0.5, 0.2)}))
    beliefs.update([Observation(frozenset(), 10.0), Observation(frozenset(), 10.5),
                    Observation(frozenset({"h0"}), 9.7)])
    difference = beliefs.difference(frozenset({"h0"}), frozenset())
    assert np.isfinite(difference.mean) and float(difference.mean) < 0


def test_difference_variance_after_matches_the_posterior_after_those_runs():
    """Exact, unseen interaction pairs included, when the hyperparameters stay fixed."""
    rng = np.random.default_rng(4)
    prior = BeliefPrior(empirical_bayes=False)
    beliefs = Beliefs(_hypotheses(4, 2), interactions=True, prior=prior)
    beliefs.update([Observation(frozenset(), rng.normal()) for _ in range(3)]
                   + [Observation(frozenset({"h0"}), rng.normal() - 1) for _ in range(3)]
                   + [Observation(frozenset({"h0", "h1"}), rng.normal()) for _ in range(2)])

    def r_of(b, candidate, incumbent):
        unit = float(b.from_standard(1.0) - b.from_standard(0.0))
        return (float(b.difference(candidate, incumbent).scale) ** 2
                / (b.standard_posterior().noise_var * unit**2))

    # (h0,h2), (h1,h2) unseen in the candidate only; then (h0,h3) unseen in both, (h2,h3) in one
    for candidate, incumbent in ((frozenset({"h0", "h1", "h2"}), frozenset({"h0"})),
                                 (frozenset({"h0", "h2", "h3"}), frozenset({"h0", "h3"}))):
        assert beliefs.difference_variance_after(candidate, incumbent, (0, 0)) == pytest.approx(
            r_of(beliefs, candidate, incumbent), rel=1e-9)
        for counts in ((2, 1), (1, 3), (3, 0)):
            after = beliefs.copy()
            after.update([Observation(candidate, 0.3)] * counts[0]
                         + [Observation(incumbent, 0.1)] * counts[1])
            assert beliefs.difference_variance_after(candidate, incumbent, counts) == pytest.approx(
                r_of(after, candidate, incumbent), rel=1e-9)
