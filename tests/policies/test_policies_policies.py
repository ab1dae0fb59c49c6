"""Policies, learntropy and compression progress against the real Beliefs posterior."""

import numpy as np
import pytest

from beliefs import BeliefPrior, Beliefs, Hypothesis, Observation
from policies import (
    POLICIES,
    Action,
    KeepRule,
    RunRecord,
    StudyView,
    compression_progress,
    learntropy,
    make_policy,
    realised_learntropy,
)

NAMES = ["wide", "deep", "lr_up", "warmup"]
CATEGORIES = ["architecture", "architecture", "optimizer", "schedule"]


def small_study(rng, prior=None):
    """Beliefs after base runs and a few runs of two candidates; the view the engine would give."""
    beliefs = Beliefs([Hypothesis(n, c) for n, c in zip(NAMES, CATEGORIES)], prior=prior)
    history = []
    for seed in range(3):
        history.append(RunRecord(frozenset(), 2.5 + 0.03 * rng.standard_normal(), "ok", seed, 0,
                                 "base"))
    for step, (name, effect) in enumerate([("wide", -0.05), ("deep", 0.02)], start=1):
        for seed in range(2):
            history.append(RunRecord(frozenset({name}), 2.5 + effect + 0.03 * rng.standard_normal(),
                                     "ok", seed, step, "candidate"))
    beliefs.update([Observation(r.config, r.value) for r in history])
    view = StudyView(incumbent=frozenset(), candidates=list(NAMES), history=history,
                     runs_per_hypothesis={"wide": 2, "deep": 2, "lr_up": 0, "warmup": 0},
                     runs_left=30, expected_seconds=dict.fromkeys(NAMES, 30.0),
                     open_hypothesis="wide")
    return beliefs, view


CONFIG_SECTION = dict(gamma=8.0, preference=1.0, cost_weight=0.0, epistemic=True, pragmatic=True,
                      cost=True, kappa=2.0, ucb_beta=2.0)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_selects_a_valid_action_and_is_seeded(name):
    beliefs, view = small_study(np.random.default_rng(0))
    policy = make_policy(name, **CONFIG_SECTION)
    actions = [policy.select(view, beliefs, np.random.default_rng(s)) for s in (1, 1, 2)]
    assert actions[0] == actions[1]
    for action in actions:
        assert isinstance(action, Action) and action.kind == "run" and action.hypothesis in NAMES
        assert 1 <= action.n_runs <= KeepRule().max_replicates
        assert all(np.isfinite(v) for v in action.terms.values())
    assert len(policy.score(view, beliefs)) == len(NAMES)


def test_make_policy_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        make_policy("nope")
    with pytest.raises(ValueError, match="temperature"):
        make_policy("efe", temperature=1.0)
    with pytest.raises(ValueError, match="gamma"):
        make_policy("efe", gamma=-1.0)
    with pytest.raises(ValueError, match="kappa"):
        make_policy("learntropy", kappa=0.5)


def test_efe_scores_are_neg_efe_and_untried_changes_are_more_informative():
    beliefs, view = small_study(np.random.default_rng(0))
    policy = make_policy("efe", **CONFIG_SECTION)
    terms = policy.terms(view, beliefs)
    assert np.allclose(policy.score(view, beliefs), -terms["efe"])
    # The untried hypotheses are more informative than the ones run twice.
    assert (terms["epistemic"][2] > terms["epistemic"][0]
            and terms["epistemic"][3] > terms["epistemic"][1])
    pragmatic_only = make_policy("efe", epistemic=False)
    # "wide" has the best predicted mean
    assert int(np.argmax(pragmatic_only.score(view, beliefs))) == 0


@pytest.mark.parametrize("planned", [(2, 0), (2, 1), (2, 2), (6, 3)])
def test_the_epistemic_term_is_what_the_planned_runs_tell_about_the_difference(planned):
    """By hand: one change h, k base runs so far, no pooling. Only d = delta_h + m_cat enters, so
    d ~ N(0, v0 sigma^2) with v0 = tau^2 + s_m^2, baseline b ~ N(0, B^2 sigma^2). After n runs of
    {h} and m more base runs the precision of (b, d), in units of 1/sigma^2, is
    [[1/B^2 + k + m + n, n], [n, 1/v0 + n]], so Var(d) = (1/B^2 + k + m + n) / det and the term
    is 0.5 log(v0 / Var(d)) nats; the paired runs add to it, and efe scores the plan's n."""
    prior = BeliefPrior(effect_sd=0.7, category_mean_sd=0.5, baseline_sd=10.0,
                        empirical_bayes=False, hyper_uncertainty=False,
                        standardisation=(2.5, 0.03))
    beliefs = Beliefs([Hypothesis("h", "cat")], prior=prior)
    k, (n, m) = 4, planned
    beliefs.update([Observation(frozenset(), 2.5 + 0.03 * z)
                    for z in np.random.default_rng(1).standard_normal(k)])
    view = StudyView(incumbent=frozenset(), candidates=["h"], runs_left=40,
                     step_runs={"h": planned})
    terms = make_policy("efe", **CONFIG_SECTION).terms(view, beliefs)
    v0, b = 0.7**2 + 0.5**2, 10.0**-2
    precision = np.array([[b + k + m + n, n], [n, 1 / v0 + n]])
    variance_after = precision[0, 0] / np.linalg.det(precision)
    information = 0.5 * np.log(v0 / variance_after)
    assert terms["epistemic"][0] == pytest.approx(information, rel=1e-9)
    assert terms["n_runs"][0] == n
    # efe = -IG - (log lambda - lambda mu) with no cost: mu({h}) is the baseline's posterior
    # mean, sum(z) / (k + 1/B^2), as h's effect has prior mean 0 and no run yet.
    z = np.asarray(beliefs.to_standard(np.array([o.value for o in beliefs.observations])))
    mu = z.sum() / (k + b)
    assert terms["efe"][0] == pytest.approx(-information - (np.log(1.0) - mu), rel=1e-9)


class HandPosterior:
    """A posterior small enough to work by hand: d = mu(incumbent + h) - mu(incumbent) is
    N(mean_h, 1) (a Student-t of huge df), no spike, and Var(d) after n_a + n_b more runs is
    1 / (1 + n_a + n_b) (noise sd 1 and a unit prior)."""

    def __init__(self, means):
        self.means = means

    def difference(self, a, b):
        from scipy import stats
        mean = self.means[next(iter(a - b))]

        class Slab:  # the three numbers and the interval the keep rule reads
            def interval(self, level):
                return stats.norm.interval(level, loc=mean)
        slab = Slab()
        slab.mean, slab.scale, slab.df = mean, 1.0, 1e13
        return slab

    def spike(self, a, b):
        return None

    def difference_variance_after(self, a, b, counts):
        return 1.0 / (1.0 + sum(counts))


def test_voi_scores_the_keep_value_per_run_worked_by_hand():
    """Steps of 2 unpaired candidate runs, threshold 0.95 (z = 1.644854). After k steps the sd
    of d is s_k = 1/sqrt(1 + 2k), the next mean m' ~ N(mean, 1 - s_k^2), and a keep needs
    m' <= -z s_k, so the value per run is (-mean Phi(a) + sqrt(1 - s_k^2) phi(a)) / 2k with
    a = (-z s_k - mean) / sqrt(1 - s_k^2). By hand:
    - mean 0, k = 1: s = 0.57735, a = -1.16309, 0.81650 phi(a) / 2 = 0.082810 (k = 2: 0.063609);
    - mean 1.5 (likely harmful), k = 4: 0.0016443 beats k = 1 (0.0007964) and k = 2 (0.0015925);
      a long shot needs several steps, so a one-step value would undervalue it;
    - mean 6: hopeless, worth nothing."""
    names = ["even", "long-shot", "hopeless"]
    posterior = HandPosterior({"even": 0.0, "long-shot": 1.5, "hopeless": 6.0})
    base_run = RunRecord(frozenset(), 0.0, "ok", 0, 0, "base")
    view = StudyView(incumbent=frozenset(), candidates=names, history=[base_run],
                     runs_per_hypothesis=dict.fromkeys(names, 2), runs_left=40,
                     step_runs=dict.fromkeys(names, (2, 0)))
    policy = make_policy("voi")
    value, horizon = policy.values(view, posterior)
    assert value[0] == pytest.approx(0.082810, rel=1e-4) and horizon[0] == 1
    assert value[1] == pytest.approx(0.0016443, rel=1e-3) and horizon[1] == 4
    assert value[2] < 1e-9
    action = policy.select(view, posterior, np.random.default_rng(0))
    assert (action.hypothesis, action.n_runs) == ("even", 2)
    assert action.terms["value"] == pytest.approx(0.082810, rel=1e-4)


def test_greedy_ucb_and_random_choices():
    beliefs, view = small_study(np.random.default_rng(0))
    greedy = make_policy("greedy").select(view, beliefs, np.random.default_rng(0))
    assert greedy.hypothesis == "wide"
    ucb = make_policy("ucb", ucb_beta=50.0).select(view, beliefs, np.random.default_rng(0))
    assert ucb.hypothesis in {"lr_up", "warmup"}  # huge optimism favours the never-run ones
    picks = {make_policy("random").select(view, beliefs, np.random.default_rng(s)).hypothesis
             for s in range(40)}
    assert picks == set(NAMES)


def test_shared_stopping_and_incumbent_rerun():
    beliefs, view = small_study(np.random.default_rng(0))
    policy = make_policy("efe")
    spent = StudyView(incumbent=frozenset(), candidates=NAMES, history=view.history, runs_left=0)
    assert policy.select(spent, beliefs, np.random.default_rng(0)).kind == "stop"
    empty = StudyView(incumbent=frozenset(), candidates=[], history=view.history, runs_left=5)
    assert "no open candidates" in policy.select(empty, beliefs, np.random.default_rng(0)).reason
    unseen = StudyView(incumbent=frozenset({"deep"}), candidates=["wide"],
                       history=view.history[:3], runs_left=5)
    assert policy.select(unseen, beliefs, np.random.default_rng(0)).kind == "rerun_incumbent"
    costly = make_policy("efe", cost_weight=1.0)  # 1 nat per second: nothing is worth 30 s runs
    stop = costly.select(view, beliefs, np.random.default_rng(0))
    assert stop.kind == "stop" and "justifies its cost" in stop.reason
    cheap = make_policy("efe", cost_weight=1e-9)
    assert cheap.select(view, beliefs, np.random.default_rng(0)).kind == "run"


def test_learntropy_matches_monte_carlo_over_real_updates():
    """Draw the outcome from the predictive, update a copy of Beliefs, average the realised
    value."""
    rng = np.random.default_rng(0)
    beliefs = Beliefs([Hypothesis("h", "c"), Hypothesis("g", "c")],
                      prior=BeliefPrior(empirical_bayes=False, effect_sd=2.0))
    beliefs.update([Observation(frozenset(), 2.5 + 0.03 * rng.standard_normal())
                    for _ in range(3)])
    beliefs.update([Observation(frozenset({"g"}), 2.49 + 0.03 * rng.standard_normal())
                    for _ in range(2)])
    config = frozenset({"h"})
    exact = learntropy(beliefs.projection(config, "h"), 1, 2.0)
    predictive = beliefs.predict([config])
    values = []
    for _ in range(2000):
        y = float(predictive.mean[0] + predictive.scale[0] * rng.standard_t(predictive.df[0]))
        after = beliefs.copy()
        after.update([Observation(config, y)])
        values.append(realised_learntropy(beliefs, after, "h", kappa=2.0))
    estimate, se = float(np.mean(values)), float(np.std(values) / np.sqrt(len(values)))
    print(f"\nlearntropy closed form {exact:.4f}, Monte Carlo {estimate:.4f} +- {se:.4f}")
    assert se < 0.015 * exact
    assert estimate == pytest.approx(exact, rel=0.05)


def test_learntropy_is_near_zero_for_a_well_known_candidate():
    rng = np.random.default_rng(1)
    beliefs = Beliefs([Hypothesis("h", "c")], prior=BeliefPrior(empirical_bayes=False))
    beliefs.update([Observation(frozenset(), 2.5 + 0.03 * rng.standard_normal())
                    for _ in range(200)])
    beliefs.update([Observation(frozenset({"h"}), 2.48 + 0.03 * rng.standard_normal())
                    for _ in range(200)])
    fresh = Beliefs([Hypothesis("h", "c")], prior=BeliefPrior(empirical_bayes=False))
    fresh.update([Observation(frozenset(), 2.5 + 0.03 * rng.standard_normal()) for _ in range(6)])
    known = learntropy(beliefs.projection(frozenset({"h"}), "h"), 2, 2.0)
    unknown = learntropy(fresh.projection(frozenset({"h"}), "h"), 2, 2.0)
    assert abs(known) < 0.01 < unknown


def test_compression_progress_signs():
    rng = np.random.default_rng(3)
    beliefs = Beliefs([Hypothesis("h", "c")], prior=BeliefPrior(empirical_bayes=False))
    past = [Observation(frozenset(), 2.5 + 0.03 * rng.standard_normal()) for _ in range(4)]
    past += [Observation(frozenset({"h"}), 2.46 + 0.03 * rng.standard_normal()) for _ in range(3)]
    beliefs.update(past)
    informative, outlier = beliefs.copy(), beliefs.copy()
    informative.update([Observation(frozenset({"h"}), 2.46), Observation(frozenset(), 2.5)])
    outlier.update([Observation(frozenset(), 2.5 + 30 * 0.03)])
    gained = compression_progress(beliefs, informative, past)
    lost = compression_progress(beliefs, outlier, past)
    print(f"\ncompression progress: informative {gained:.3f} nats, outlier {lost:.3f} nats")
    assert gained > 0
    assert lost < -1.0
