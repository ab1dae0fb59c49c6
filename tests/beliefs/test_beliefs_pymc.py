"""The fast path against NUTS on the same model (category scales fixed at the fast path's values).

With the scales fixed, the NUTS posterior is exactly the fast path's normal-inverse-gamma, so any
disagreement beyond Monte Carlo error is a bug in the conjugate algebra, the design or the priors.
MC error at 2 x 1500 draws of independent-looking effects: ~0.04 posterior sd for a 5%/95%
quantile and ~0.03 for a mean, well inside 0.15 and 0.1 (correlated effects need more draws).
(The fully hierarchical fit, which also integrates the scales, is compared in
experiments/bench_beliefs.py; its disagreement is a modelling difference, not an error.)
"""

import numpy as np
import pytest

from beliefs import BeliefPrior, Beliefs, Hypothesis, Observation, fit_pymc


def _study(rng: np.random.Generator) -> Beliefs:
    hypotheses = [Hypothesis(f"h{i:02d}", ["architecture", "optimizer", "schedule", "data"][i % 4])
                  for i in range(30)]
    noise = 0.02
    effects = rng.normal(0, noise, 30)  # noise sd comparable to the effects
    obs = [Observation(frozenset(), 1.0 + noise * rng.normal()) for _ in range(5)]
    for h, effect in zip(hypotheses, effects):
        obs += [Observation(frozenset({h.name}), 1.0 + effect + noise * rng.normal())
                for _ in range(rng.integers(3, 7))]
    beliefs = Beliefs(hypotheses, prior=BeliefPrior(hyper_uncertainty=False))
    beliefs.update(obs)
    return beliefs


@pytest.mark.slow
def test_fast_path_matches_nuts_with_the_same_hyperparameters():
    _check_nuts_agrees(_study(np.random.default_rng(0)))


def _check_nuts_agrees(beliefs: Beliefs, draws: int = 1500) -> None:
    """NUTS with the scales fixed at the fast path's: effect means within 0.1 and 5%/95%
    quantiles within 0.15 posterior sd of the conjugate path's, sigma within 2%."""
    idata = fit_pymc(beliefs, draws=draws, tune=500, chains=2, seed=1, hierarchical=False)
    effects = beliefs.effects()
    draws = idata.posterior["effect"].values.reshape(-1, len(effects))
    sd = np.array([e.sd for e in effects])
    mean_gap = np.abs(draws.mean(axis=0) - [e.mean for e in effects]) / sd
    lo_gap = np.abs(np.quantile(draws, 0.05, axis=0) - [e.lo for e in effects]) / sd
    hi_gap = np.abs(np.quantile(draws, 0.95, axis=0) - [e.hi for e in effects]) / sd
    assert mean_gap.max() < 0.1, mean_gap.max()
    assert max(lo_gap.max(), hi_gap.max()) < 0.15, (lo_gap.max(), hi_gap.max())
    assert float(idata.posterior["sigma"].mean()) == pytest.approx(beliefs.noise_sd(), rel=0.02)


@pytest.mark.slow
def test_fast_path_matches_nuts_with_seed_effects():
    """Runs at 6 shared seeds, luck sd 3 noise sds that half the categories keep: the seed and
    luck columns, fixed at their fitted scales, give NUTS the fast path's posterior too. The
    seed columns correlate the effects' draws, so NUTS's effective sample is smaller here and
    its quantiles need four times the draws to settle inside the same tolerance (at the usual
    draws, the sampler seed alone moved them across it)."""
    rng = np.random.default_rng(2)
    categories = ["keeps", "own"]
    hypotheses = [Hypothesis(f"h{i:02d}", categories[i % 2]) for i in range(12)]
    noise = 0.02
    luck = 3 * noise * rng.normal(size=6)
    obs = [Observation(frozenset(), 1.0 + luck[s] + noise * rng.normal(), seed=s)
           for s in range(6)]
    for i, h in enumerate(hypotheses):
        effect = noise * rng.normal()
        for s in rng.choice(6, 4, replace=False):
            own = 4 * noise * rng.normal() if h.category == "own" else 0.0
            obs.append(Observation(frozenset({h.name}), 1.0 + effect + luck[s] + own
                                   + noise * rng.normal(), seed=int(s)))
    beliefs = Beliefs(hypotheses, seed_effects=True, prior=BeliefPrior(hyper_uncertainty=False))
    beliefs.update(obs)
    _check_nuts_agrees(beliefs, draws=6000)


@pytest.mark.slow
def test_fast_path_matches_nuts_with_device_effects():
    """Half the runs on a second device that reads 3 noise sds higher with twice the noise sd:
    its offset column and its fitted noise multiplier give NUTS the fast path's posterior."""
    rng = np.random.default_rng(3)
    hypotheses = [Hypothesis(f"h{i:02d}", ["a", "b"][i % 2]) for i in range(8)]
    noise = 0.02
    obs = []
    for i in range(40):
        device = "A" if i % 2 == 0 else "B"
        applied = frozenset({hypotheses[i % 8].name}) if i >= 8 else frozenset()
        offset, sd = (0.0, noise) if device == "A" else (3 * noise, 2 * noise)
        obs.append(Observation(applied, 1.0 + offset + sd * rng.normal(), device=device))
    beliefs = Beliefs(hypotheses, device_effects=True, prior=BeliefPrior(hyper_uncertainty=False))
    beliefs.update(obs)
    assert beliefs.noise_multiplier("B") > 1.0
    _check_nuts_agrees(beliefs)


def test_sampler_diagnostics_flag_divergences_disagreeing_chains_and_few_draws():
    """On draws made here: two chains around different means (r-hat far above 1.01), three
    divergent transitions, and strongly autocorrelated draws (AR(1), rho = 0.99: an ESS far
    below 100 a chain); and independent agreeing chains with none of it."""
    import arviz as az

    from beliefs import sampler_diagnostics

    rng = np.random.default_rng(0)

    def fit(shift: float, rho: float, divergent: int):
        draws = np.empty((2, 1000))
        draws[:, 0] = rng.normal(size=2)
        for t in range(1, 1000):
            draws[:, t] = rho * draws[:, t - 1] + np.sqrt(1 - rho**2) * rng.normal(size=2)
        draws[1] += shift
        posterior = {name: draws + k for k, name in enumerate(
            ["baseline", "effect", "category_mean", "category_scale", "sigma"])}
        diverging = np.zeros((2, 1000), dtype=bool)
        diverging[0, :divergent] = True
        return az.from_dict(posterior=posterior, sample_stats={"diverging": diverging})

    bad = sampler_diagnostics(fit(shift=3.0, rho=0.99, divergent=3))
    assert bad.divergences == 3 and bad.max_rhat > 1.5 and bad.min_ess_bulk < 100
    assert len(bad.problems) == 3
    good = sampler_diagnostics(fit(shift=0.0, rho=0.0, divergent=0))
    assert good.max_rhat < 1.01 and good.min_ess_bulk > 1000 and good.problems == []
