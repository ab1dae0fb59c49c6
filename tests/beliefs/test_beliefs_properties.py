"""Property tests (hypothesis): order invariance, variance monotonicity, no NaN for finite input."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beliefs import BeliefPrior, Beliefs, Hypothesis, Observation

NAMES = ["a", "b", "c", "d"]
HYPOTHESES = [Hypothesis("a", "x"), Hypothesis("b", "x"), Hypothesis("c", "y"),
              Hypothesis("d", "z")]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

configs = st.frozensets(st.sampled_from(NAMES), max_size=3)
observations = st.builds(
    Observation,
    config=configs,
    value=st.floats(-1e3, 1e3, allow_nan=False),
    noise_scale=st.sampled_from([0.5, 1.0, 2.0]),
)
extreme_observations = st.builds(
    Observation,
    config=configs,
    value=st.floats(-1e100, 1e100, allow_nan=False, allow_infinity=False),
)


def _summary(beliefs: Beliefs) -> np.ndarray:
    effects = beliefs.effects()
    probe = [frozenset(), frozenset({"a", "c"})]
    return np.concatenate([[e.mean for e in effects], [e.sd for e in effects], [beliefs.noise_sd()],
                           beliefs.predict(probe).mean, beliefs.predict(probe).scale])


@SETTINGS
@given(st.lists(observations, min_size=1, max_size=25), st.randoms(use_true_random=False),
       st.booleans(), st.booleans())
def test_update_order_and_batching_do_not_matter(obs, random, empirical_bayes, interactions):
    prior = BeliefPrior(empirical_bayes=empirical_bayes)
    in_order = Beliefs(HYPOTHESES, interactions=interactions, prior=prior)
    in_order.update(obs)
    shuffled = list(obs)
    random.shuffle(shuffled)
    one_by_one = Beliefs(HYPOTHESES, interactions=interactions, prior=prior)
    for o in shuffled:
        one_by_one.update([o])
        # query mid-way: the lazily refitted hyperparameters must not leave a trace
        one_by_one.effects()
    # Hyperparameters are a numerical optimum (gradient tolerance 1e-6): agreement to 1e-4 relative,
    # and to 1e-5 of the largest quantity for values near 0.
    expected = _summary(in_order)
    np.testing.assert_allclose(_summary(one_by_one), expected, rtol=1e-4,
                               atol=1e-5 * np.max(np.abs(expected)))


@SETTINGS
@given(st.lists(observations, min_size=0, max_size=15), observations)
def test_an_observation_never_increases_an_effect_variance_when_sigma_is_known(obs, extra):
    # sigma known and hyperparameters held: beta's covariance is sigma^2 V, and V depends on X only.
    prior = BeliefPrior(empirical_bayes=False, standardisation=(0.0, 1.0))
    before = Beliefs(HYPOTHESES, prior=prior)
    before.update(obs)
    after = before.copy()
    after.update([extra])
    v_before = before.standard_posterior().cov_diag()
    v_after = after.standard_posterior().cov_diag()
    assert np.all(v_after <= v_before * (1 + 1e-12) + 1e-15)


@SETTINGS
@given(st.one_of(
    st.lists(extreme_observations, min_size=1, max_size=12),
    st.builds(lambda o, k: [o] * k, extreme_observations, st.integers(1, 6)),  # identical runs
), st.booleans())
def test_no_nan_for_any_finite_input(obs, interactions):
    beliefs = Beliefs(HYPOTHESES, interactions=interactions)
    beliefs.update(obs)
    configs = [frozenset(), frozenset({"a"}), frozenset({"b", "d"})]
    outputs = [
        beliefs.predict(configs).mean, beliefs.predict(configs).scale,
        beliefs.posterior_mean(configs).scale,
        beliefs.info_gain(configs, 3), [beliefs.noise_sd()], beliefs.loo_log_loss(),
        [e.mean for e in beliefs.effects()], [e.lo for e in beliefs.effects()],
        [c.mean for c in beliefs.category_effects()],
        [float(beliefs.difference(frozenset({"a"}), frozenset()).cdf(0.0))],
        list(vars(beliefs.projection(frozenset({"a", "c"}), "a")).values()),
    ]
    for out in outputs:
        assert not np.any(np.isnan(np.asarray(out, dtype=float))), out
