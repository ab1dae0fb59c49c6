"""Seed effects: calibration on data simulated with seed luck (fully shared, shared by one
category only, absent), what the pairing buys, and the planning variance against a refit."""

import numpy as np
import pytest
from scipy import stats

from beliefs import BeliefPrior, Beliefs, Hypothesis, Observation

SIGMA, BASE, PANEL, PER_CATEGORY, SEEDS_PER_CHANGE = 0.03, 1.0, 6, 25, 3
CASES = {  # (tau_seed, tau_luck of category "keeps", tau_luck of category "own"), units of sigma
    "shared": (3.0, 0.0, 0.0),
    "some categories": (3.0, 0.0, 3.0 * np.sqrt(2)),  # "own" changes draw luck anew
    "absent": (0.0, 0.0, 0.0),
}
CATEGORIES = ("keeps", "own")


def _world(rng: np.random.Generator, case: str):
    """One study drawn from the model with seed effects, metric ~ val_bpb: category means
    m_g ~ N(0, 0.5^2) and scales tau_g ~ U(0.2, 1.5) (units of sigma); effects
    beta_j ~ N(m_g, tau_g^2 sigma^2); the base runs once at each of 6 panel seeds and each change
    at 3 of them; a run of c at seed s adds u_s + sum_{j in c} v_sj + eps. 25 changes per
    category, as in test_beliefs_calibration (fewer under-cover with or without seed effects:
    the plug-in category scales)."""
    tau_seed, *tau_luck = CASES[case]
    luck = SIGMA * tau_seed * rng.normal(size=PANEL)
    hypotheses, effects, obs, scales = [], [], [], []
    obs += [Observation(frozenset(), BASE + luck[s] + SIGMA * rng.normal(), seed=s)
            for s in range(PANEL)]
    for g, category in enumerate(CATEGORIES):
        m_g, tau_g = rng.normal(0, 0.5), rng.uniform(0.2, 1.5)
        for k in range(PER_CATEGORY):
            name = f"{category}{k}"
            hypotheses.append(Hypothesis(name, category))
            effect = SIGMA * rng.normal(m_g, tau_g)
            effects.append(effect)
            scales.append(tau_g)
            for s in rng.choice(PANEL, SEEDS_PER_CHANGE, replace=False):
                own_luck = SIGMA * tau_luck[g] * rng.normal()
                obs.append(Observation(frozenset({name}), BASE + effect + luck[s] + own_luck
                                       + SIGMA * rng.normal(), seed=int(s)))
    return hypotheses, np.array(effects), obs, np.array(scales)


def _slab_marginals(beliefs: Beliefs, contrasts: np.ndarray):
    post = beliefs.standard_posterior()
    _, scale = beliefs.standardisation()
    return stats.t(2 * post.a, loc=contrasts @ post.mean * scale,
                   scale=np.sqrt(post.noise_var * post.quad(contrasts)) * scale)


def _posteriors(case: str, seed: int, n_worlds: int):
    """Truths, 90% intervals and P(< 0) of every effect and of every contrast between a change
    of one category and one of the other, over n_worlds simulated studies."""
    rng = np.random.default_rng(seed)
    rows = {"truth": [], "lo": [], "hi": [], "p_negative": [], "world": []}
    for world in range(n_worlds):
        hypotheses, effects, obs, _ = _world(rng, case)
        beliefs = Beliefs(hypotheses, seed_effects=True, prior=BeliefPrior(null_share=0.0))
        beliefs.update(obs)
        units = beliefs.effect_contrasts()
        half = PER_CATEGORY
        contrasts = np.vstack([units, units[:half] - units[half:]])
        truth = np.concatenate([effects, effects[:half] - effects[half:]])
        marginal = _slab_marginals(beliefs, contrasts)
        rows["truth"].append(truth)
        rows["lo"].append(marginal.ppf(0.05))
        rows["hi"].append(marginal.ppf(0.95))
        rows["p_negative"].append(marginal.cdf(0.0))
        rows["world"].append(np.full(len(truth), world))
    return {k: np.concatenate(v) for k, v in rows.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_intervals_and_probabilities_are_calibrated_with_seed_luck(case):
    """90% intervals of effects and contrasts cover at the nominal rate, within 3 standard
    errors of the mean of the worlds' coverages (the effects of one world share its fitted
    scales, so they are not independent trials), and P(better) in each fifth of [0, 1] matches
    the share that truly is better (within 3 binomial sd)."""
    result = _posteriors(case, seed=list(CASES).index(case), n_worlds=20)
    truth = result["truth"]
    inside = (truth >= result["lo"]) & (truth <= result["hi"])
    per_world = np.array([inside[result["world"] == w].mean() for w in range(20)])
    standard_error = per_world.std(ddof=1) / np.sqrt(len(per_world))
    assert abs(per_world.mean() - 0.9) < 3 * standard_error, (case, per_world.mean(),
                                                              standard_error)
    p = result["p_negative"]
    bins = np.clip(np.digitize(p, np.linspace(0, 1, 6)) - 1, 0, 4)
    table = []
    for k in range(5):
        in_bin = bins == k
        if in_bin.sum() < 20:
            continue
        predicted, observed = p[in_bin].mean(), np.mean(truth[in_bin] < 0)
        sd = np.sqrt(predicted * (1 - predicted) / in_bin.sum())
        table.append((k, int(in_bin.sum()), round(predicted, 3), round(observed, 3)))
        assert abs(observed - predicted) < 3 * sd + 1e-3, (case, table)
    assert len(table) >= 3, table


def _oracle_sd(obs, hypotheses, scales, case) -> np.ndarray:
    """Posterior sd of each effect for a Bayesian who knows the world's scales: the generative
    prior (m_g ~ N(0, (0.5 sigma)^2), delta_j ~ N(0, (tau_g sigma)^2), a flat-ish baseline) and
    the true covariance of luck and noise, by dense Gaussian conditioning."""
    tau_seed, *tau_luck = CASES[case]
    names = [h.name for h in hypotheses]
    n_h = len(names)
    design = np.zeros((len(obs), 1 + 2 + n_h))  # baseline, m_g, delta_j
    design[:, 0] = 1.0
    noise = np.diag(np.full(len(obs), SIGMA**2))
    for i, o in enumerate(obs):
        for name in o.config:
            j = names.index(name)
            design[i, 1 + CATEGORIES.index(hypotheses[j].category)] = 1.0
            design[i, 3 + j] = 1.0
            noise[i, i] += (SIGMA * tau_luck[CATEGORIES.index(hypotheses[j].category)]) ** 2
        for k, other in enumerate(obs):
            if other.seed == o.seed:
                noise[i, k] += (SIGMA * tau_seed) ** 2
    prior = np.diag([1.0, *(0.5 * SIGMA,) * 2, *(SIGMA * scales)]) ** 2
    effect_rows = np.hstack([np.zeros((n_h, 1)),
                             np.array([[h.category == g for g in CATEGORIES]
                                       for h in hypotheses], dtype=float), np.eye(n_h)])
    gain = prior @ design.T @ np.linalg.inv(design @ prior @ design.T + noise)
    posterior = prior - gain @ design @ prior
    return np.sqrt(np.diag(effect_rows @ posterior @ effect_rows.T))


def test_the_pairing_is_credited_as_far_as_each_category_shares_the_luck():
    """Where category "keeps" shares the luck and "own" draws it anew, the effects' posterior
    sds are those of a Bayesian who knows the true scales (median ratio near 1 in each
    category); without seed effects the shared luck is taken for noise, so the changes that
    keep it are known far worse than the pairing allows."""
    rng = np.random.default_rng(7)
    ratios = {"keeps": [], "own": [], "keeps without seed effects": []}
    for _ in range(4):
        hypotheses, _, obs, scales = _world(rng, "some categories")
        oracle = _oracle_sd(obs, hypotheses, scales, "some categories")
        with_seeds = Beliefs(hypotheses, seed_effects=True, prior=BeliefPrior(null_share=0.0))
        without = Beliefs(hypotheses, prior=BeliefPrior(null_share=0.0))
        for b in (with_seeds, without):
            b.update(obs)
        sd_with = np.array([e.sd for e in with_seeds.effects()]) / oracle
        sd_without = np.array([e.sd for e in without.effects()]) / oracle
        ratios["keeps"].append(np.median(sd_with[:PER_CATEGORY]))
        ratios["own"].append(np.median(sd_with[PER_CATEGORY:]))
        ratios["keeps without seed effects"].append(np.median(sd_without[:PER_CATEGORY]))
    means = {k: float(np.mean(v)) for k, v in ratios.items()}
    assert 0.75 < means["keeps"] < 1.33 and 0.75 < means["own"] < 1.33, means
    assert means["keeps without seed effects"] > 1.5, means


def test_the_luck_scales_are_learnt_per_category():
    rng = np.random.default_rng(3)
    hypotheses, _, obs, _ = _world(rng, "some categories")
    beliefs = Beliefs(hypotheses, seed_effects=True)
    beliefs.update(obs)
    scales = beliefs.seed_scales()
    assert scales["seed"] > 1.5 and scales["own"] > 1.5 and scales["keeps"] < 1.0, scales


FIXED = BeliefPrior(empirical_bayes=False, hyper_uncertainty=False, null_share=0.0)


@pytest.mark.parametrize("seeds", [None, ([0, 1, 7], [7]), ([7, 8], [])])
def test_the_variance_after_planned_runs_is_that_of_a_refit_with_them(seeds):
    """With the scales fixed the posterior variance does not depend on the values, so the
    planned-run variance must equal the refit's variance after those runs at those seeds
    (seeds 0 and 1 already run, 7 and 8 new; by default a's i-th run and b's share a new
    seed)."""
    hypotheses = [Hypothesis("a", "x"), Hypothesis("b", "y"), Hypothesis("c", "x")]
    rng = np.random.default_rng(0)
    obs = [Observation(config, float(rng.normal()), seed=s)
           for s in (0, 1) for config in (frozenset(), frozenset("b"), frozenset("ab"))]
    beliefs = Beliefs(hypotheses, seed_effects=True, prior=FIXED)
    beliefs.update(obs)
    a, b = frozenset("ab"), frozenset("b")
    counts = (3, 1) if seeds is None else (len(seeds[0]), len(seeds[1]))
    planned = beliefs.difference_variance_after(a, b, counts, seeds=seeds)
    future_a, future_b = ((["new0", "new1", "new2"], ["new0"]) if seeds is None else seeds)
    refit = Beliefs(hypotheses, seed_effects=True, prior=FIXED)
    refit.update([*obs, *(Observation(a, 0.0, seed=s) for s in future_a),
                  *(Observation(b, 0.0, seed=s) for s in future_b)])
    contrast = refit.design([a])[0] - refit.design([b])[0]
    assert planned == pytest.approx(float(refit.standard_posterior().quad(contrast)[0]),
                                    rel=1e-9)
    if seeds is None:  # the refit above is the model's own; this says the pairing matters
        unpaired = beliefs.difference_variance_after(
            a, b, counts, seeds=(["u0", "u1", "u2"], ["u3"]))
        assert planned < unpaired


@pytest.mark.parametrize("blocks", [["n0", "n0", "n1", "n1"], ["n0", "n0", "n0", "n1"],
                                    ["n0", "n1", "n2", "n3"]])
def test_block_information_is_the_log_det_shrink_of_a_refit_with_those_runs(blocks):
    """Runs whose seeds are labelled by `blocks` (each label a seed no run has used): the
    information about the parameters the model already has must be 0.5 log det of their
    covariance before over after a refit with those runs at those seeds, the seeds' luck then
    columns of the refit (scales fixed, so the covariance does not depend on the values)."""
    hypotheses = [Hypothesis("a", "x"), Hypothesis("b", "y"), Hypothesis("c", "x")]
    rng = np.random.default_rng(1)
    obs = [Observation(config, float(rng.normal()), seed=s)
           for s in (0, 1) for config in (frozenset(), frozenset("b"), frozenset("ab"))]
    prior = BeliefPrior(empirical_bayes=False, hyper_uncertainty=False, null_share=0.0,
                        seed_sd=2.0)
    beliefs = Beliefs(hypotheses, seed_effects=True, prior=prior)
    beliefs.update(obs)
    configs = [frozenset("b"), frozenset("bc"), frozenset("a"), frozenset("abc")]
    refit = Beliefs(hypotheses, seed_effects=True, prior=prior)
    refit.update([*obs, *(Observation(c, 0.0, seed=s) for c, s in zip(configs, blocks))])
    known = beliefs.standard_posterior().whiten(np.eye(beliefs.standard_posterior().mean.size))
    after = refit.standard_posterior().whiten(
        np.eye(refit.standard_posterior().mean.size)[:known.shape[1]])
    shrink = 0.5 * (np.linalg.slogdet(known.T @ known)[1] - np.linalg.slogdet(after.T @ after)[1])
    assert beliefs.batch_info_gain(configs, blocks=blocks) == pytest.approx(shrink, rel=1e-9)
    if len(set(blocks)) == len(blocks):  # a seed per run: the independent-runs form
        assert beliefs.batch_info_gain(configs) == pytest.approx(shrink, rel=1e-9)
