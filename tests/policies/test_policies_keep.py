"""The keep rule and the ratchet, run on simulated trainer-like noise with the real Beliefs."""

import functools

import numpy as np
import pytest
from scipy import stats

from beliefs import BeliefPrior, Beliefs, Hypothesis, Observation
from policies import KeepRule, RunRecord, StudyView, decide, make_policy
from policies.keep import look_thresholds
from policies.types import ClosedTrial, MoveMenu

# Trainer benchmark magnitudes (DESIGN.md section 7): val_bpb ~ 2.5, seed-to-seed sd ~ 0.03.
BASE_VALUE, NOISE_SD = 2.5, 0.03
BASE_RUNS, CANDIDATE_RUNS_PER_STEP = 2, 2
# Paired design: every candidate run has an incumbent run on the same seed.
INCUMBENT_RUNS_PER_STEP = 2
# The effect prior matches the scale of real changes (~1 noise sd); empirical Bayes is off because
# each simulated study holds a single hypothesis, which would pool with nothing but itself.
EFFECT_SD = 0.75
PRIOR = BeliefPrior(effect_sd=EFFECT_SD, empirical_bayes=False)  # with the spike (null_share 0.5)
SLAB_PRIOR = BeliefPrior(effect_sd=EFFECT_SD, empirical_bayes=False, null_share=0.0)
# The slab of one hypothesis's effect, in noise sds: its own scale and its category mean's,
# beta = m_g + delta with m_g ~ N(0, category_mean_sd^2) and delta ~ N(0, effect_sd^2).
SLAB_SD = float(np.hypot(EFFECT_SD, PRIOR.category_mean_sd))
CANDIDATE, INCUMBENT = frozenset({"change"}), frozenset()


def run_keep_rule(effect, rule, rng, prior=PRIOR):
    """One hypothesis evaluated as the engine does: base runs, then batches of candidate runs with
    paired incumbent runs, a decision after each batch until keep, revert or max_replicates runs
    (then undecided: the study's budget would go elsewhere)."""
    beliefs = Beliefs([Hypothesis("change", "architecture")], prior=prior)
    beliefs.update([Observation(INCUMBENT, BASE_VALUE + NOISE_SD * rng.standard_normal())
                    for _ in range(BASE_RUNS)])
    n_runs = 0
    while True:
        batch = [Observation(CANDIDATE, BASE_VALUE + effect + NOISE_SD * rng.standard_normal())
                 for _ in range(CANDIDATE_RUNS_PER_STEP)]
        batch += [Observation(INCUMBENT, BASE_VALUE + NOISE_SD * rng.standard_normal())
                  for _ in range(INCUMBENT_RUNS_PER_STEP)]
        beliefs.update(batch)
        n_runs += CANDIDATE_RUNS_PER_STEP
        decision = decide(beliefs, CANDIDATE, INCUMBENT, rule, n_runs)
        if decision.verdict != "undecided" or n_runs >= rule.max_replicates:
            assert n_runs <= rule.max_replicates
            return decision


def run_ratchet(effect, rng):
    """Vanilla autoresearch on the same hypothesis: the base runs, one candidate run, the ratchet's
    verdict."""
    history = [RunRecord(INCUMBENT, BASE_VALUE + NOISE_SD * rng.standard_normal(), "ok", seed, 0,
                         "base")
               for seed in range(BASE_RUNS)]
    history.append(RunRecord(CANDIDATE, BASE_VALUE + effect + NOISE_SD * rng.standard_normal(),
                             "ok", 9, 1, "candidate"))
    view = StudyView(incumbent=INCUMBENT, candidates=["change"], history=history,
                     runs_per_hypothesis={"change": 1})
    return make_policy("ratchet").decide(view, None, "change")


def binomial_upper(rate, trials):
    return rate + 2 * np.sqrt(rate * (1 - rate) / trials)


def keep_rate(effect, rule, trials, seed, prior=PRIOR):
    rng = np.random.default_rng(seed)
    decisions = [run_keep_rule(effect, rule, rng, prior) for _ in range(trials)]
    rate = float(np.mean([d.verdict == "keep" for d in decisions]))
    print(f"\neffect {effect / NOISE_SD:+.0f} sd, {rule.spending}, null_share {prior.null_share}, "
          f"max_replicates {rule.max_replicates} ({trials} trials, seed {seed}): keeps {rate:.3f}, "
          f"mean runs {np.mean([d.n_runs for d in decisions]):.2f}")
    return rate


# ---- the default rule: spike-and-slab posterior, its threshold at every look -----------------


def world_from_the_prior(rule, trials=2000, seed=11):
    """Half the changes do nothing (the spike's prior share), the rest are drawn from the slab:
    (keeps, false keeps, improvements over 1 sd, those kept)."""
    rng = np.random.default_rng(seed)
    keeps = false_keeps = large = large_kept = 0
    for _ in range(trials):
        effect = 0.0 if rng.random() < 0.5 else SLAB_SD * NOISE_SD * rng.standard_normal()
        kept = run_keep_rule(effect, rule, rng).verdict == "keep"
        keeps += kept
        false_keeps += kept and effect >= 0
        large += effect < -NOISE_SD
        large_kept += kept and effect < -NOISE_SD
    print(f"\nworld from the prior ({trials} changes, seed {seed}): "
          f"{keeps} keeps, {false_keeps} false, share {false_keeps / keeps:.3f}; "
          f"improvements over 1 sd kept {large_kept} of {large}")
    return keeps, false_keeps, large, large_kept


def test_the_rule_bounds_the_share_of_false_keeps_in_a_world_drawn_from_its_prior():
    """Among the keeps, the share of changes that do not truly improve stays at most 1 - threshold,
    whatever the looks."""
    keeps, false_keeps, large, large_kept = world_from_the_prior(KeepRule())
    assert false_keeps / keeps <= binomial_upper(0.05, keeps)
    assert large_kept > 0.6 * large  # not bought by keeping nothing


def test_the_rule_rarely_keeps_nulls_and_keeps_most_one_sd_improvements():
    assert keep_rate(0.0, KeepRule(), 400, 2024) <= 0.05
    one_sd = keep_rate(-NOISE_SD, KeepRule(), 400, 7)
    assert one_sd - 2 * np.sqrt(0.25 / 400) > 0.45
    assert keep_rate(-2 * NOISE_SD, KeepRule(), 200, 8) > 0.9


def test_the_spike_lowers_p_better_for_the_same_data():
    rng = np.random.default_rng(3)
    runs = ([Observation(INCUMBENT, BASE_VALUE + NOISE_SD * rng.standard_normal())
             for _ in range(6)]
            + [Observation(CANDIDATE,
                           BASE_VALUE - 0.5 * NOISE_SD + NOISE_SD * rng.standard_normal())
               for _ in range(4)])
    with_spike, slab_only = (Beliefs([Hypothesis("change", "architecture")], prior=p)
                             for p in (PRIOR, SLAB_PRIOR))
    for beliefs in (with_spike, slab_only):
        beliefs.update(runs)
    p_spike = decide(with_spike, CANDIDATE, INCUMBENT, KeepRule(), 4).p_better
    p_slab = decide(slab_only, CANDIDATE, INCUMBENT, KeepRule(), 4).p_better
    null = with_spike.null_probability(CANDIDATE, INCUMBENT)
    assert 0 < null < 1 and slab_only.null_probability(CANDIDATE, INCUMBENT) == 0.0
    assert p_spike == pytest.approx((1 - null) * p_slab, rel=1e-9)


# ---- the group-sequential alternative: slab only, O'Brien-Fleming spending ---------------------
# `threshold` is then the overall confidence. max_replicates = 10: at 8 the 1-sd keep rate is only
# ~0.53 (0.50-0.54 over seeds 7-9, 1000 trials each), because 8 paired runs give too little
# information under the 0.75-sd effect prior.
SEQUENTIAL_MAX_REPLICATES = 10


def sequential_rule(max_replicates=SEQUENTIAL_MAX_REPLICATES):
    return KeepRule(threshold=0.95, epsilon=0.0, max_replicates=max_replicates, min_replicates=2,
                    spending="obrien_fleming")


@functools.lru_cache(maxsize=None)
def null_keep_rates(trials, seed, max_replicates=SEQUENTIAL_MAX_REPLICATES):
    rng = np.random.default_rng(seed)
    decisions = [run_keep_rule(0.0, sequential_rule(max_replicates), rng, SLAB_PRIOR)
                 for _ in range(trials)]
    rate = float(np.mean([d.verdict == "keep" for d in decisions]))
    ratchet_rate = float(np.mean([run_ratchet(0.0, rng).verdict == "keep" for _ in range(trials)]))
    print(f"\nnull changes ({trials} trials, seed {seed}, max_replicates {max_replicates}): "
          f"sequential rule keeps {rate:.3f}, ratchet keeps {ratchet_rate:.3f} "
          f"(mean runs {np.mean([d.n_runs for d in decisions]):.2f})")
    return rate, ratchet_rate


def test_the_ratchet_keeps_far_more_null_changes_than_the_posterior_rule():
    trials = 600
    rate, ratchet_rate = null_keep_rates(trials, 2024, SEQUENTIAL_MAX_REPLICATES)
    # With two base runs a single null result beats the best of three draws 1/3 of the time.
    assert ratchet_rate == pytest.approx(1 / 3, abs=2 * np.sqrt(2 / 9 / trials))
    assert ratchet_rate > 3 * rate
    assert ratchet_rate > 3 * keep_rate(0.0, KeepRule(), trials, 2024)


@pytest.mark.parametrize("max_replicates", [8, SEQUENTIAL_MAX_REPLICATES])
def test_the_sequential_rule_keeps_at_most_five_percent_of_null_changes(max_replicates):
    """Looks after every batch (2, 4, ... runs), decisions at each: the sequential thresholds hold
    the overall chance of keeping a null change to 1 - threshold."""
    trials = 600
    rate, _ = null_keep_rates(trials, 2024, max_replicates)
    assert rate <= binomial_upper(0.05, trials)


def test_the_sequential_rule_keeps_most_improvements_of_one_noise_sd():
    trials = 400
    rate = keep_rate(-NOISE_SD, sequential_rule(), trials, 7, SLAB_PRIOR)
    assert rate - 2 * np.sqrt(0.25 / trials) > 0.5  # a majority, by more than the binomial error


def test_decision_fields_and_min_replicates():
    rng = np.random.default_rng(0)
    beliefs = Beliefs([Hypothesis("change", "architecture")], prior=SLAB_PRIOR)
    # Enough incumbent runs that one candidate run can already pass 0.95 (the noise prior, centred
    # on the sd of all runs, keeps P(better) lower when there are fewer).
    beliefs.update([Observation(INCUMBENT, BASE_VALUE + NOISE_SD * rng.standard_normal())
                    for _ in range(8)])
    beliefs.update([Observation(CANDIDATE, BASE_VALUE - 0.3 + NOISE_SD * rng.standard_normal())
                    for _ in range(1)])
    early = decide(beliefs, CANDIDATE, INCUMBENT, KeepRule(min_replicates=2), 1)
    # never keep before min_replicates
    assert early.verdict == "undecided" and early.p_better > 0.95
    beliefs.update([Observation(CANDIDATE, BASE_VALUE - 0.3 + NOISE_SD * rng.standard_normal())])
    # With looks up to 8 runs the first look (2 runs) needs P(better) >= 0.9999: undecided, not
    # kept.
    rule = KeepRule(max_replicates=8, spending="obrien_fleming")
    looks, thresholds = look_thresholds(rule)
    strict = decide(beliefs, CANDIDATE, INCUMBENT, rule, 2)
    assert strict.verdict == "undecided" and 0.95 < strict.p_better < thresholds[0]
    assert f"look 1 of {len(looks)}, overall 0.95" in strict.reason
    # A single look at 2 runs is the plain rule at the stated threshold; so is the default rule.
    for kept in (decide(beliefs, CANDIDATE, INCUMBENT,
                        KeepRule(max_replicates=2, spending="obrien_fleming"), 2),
                 decide(beliefs, CANDIDATE, INCUMBENT, KeepRule(), 2)):
        assert kept.verdict == "keep" and kept.n_runs == 2
        assert kept.reason.startswith(f"P(better)={kept.p_better:.3f} >= 0.950 (look 1 of ")
        lo, hi = kept.interval
        assert lo < -0.2 < hi < 0
    worse = Beliefs([Hypothesis("change", "architecture")], prior=PRIOR)
    worse.update([Observation(INCUMBENT, BASE_VALUE + NOISE_SD * rng.standard_normal())
                  for _ in range(4)])
    worse.update([Observation(CANDIDATE, BASE_VALUE + 0.3 + NOISE_SD * rng.standard_normal())
                  for _ in range(2)])
    reverted = decide(worse, CANDIDATE, INCUMBENT, KeepRule(), 2)
    assert reverted.verdict == "revert" and reverted.p_better < 0.05


class FixedDifference:
    """A stand-in slab-only posterior whose difference is t_df(mean, 1) with P(d < 0) = p_better."""

    def __init__(self, p_better, df=30.0):
        self.mean, self.scale, self.df = -float(stats.t.ppf(p_better, df)), 1.0, df

    def difference(self, a, b):
        return self

    def spike(self, a, b):
        return None

    def interval(self, level):
        return stats.t.interval(level, self.df, loc=self.mean, scale=self.scale)


def test_per_look_thresholds_are_strict_early_and_the_threshold_applies_per_look():
    rule = KeepRule(threshold=0.95, max_replicates=8, min_replicates=2, batch=2,
                    spending="obrien_fleming")
    looks, thresholds = look_thresholds(rule)
    assert looks == (2, 4, 6, 8)
    assert all(later < earlier for earlier, later in zip(thresholds, thresholds[1:]))
    assert thresholds[0] > 0.999 and 0.95 < thresholds[-1] < 0.97  # near-nominal at the last look
    # One look only: the fixed rule at the stated threshold; without spending, every look's.
    assert look_thresholds(KeepRule(threshold=0.9, max_replicates=3, min_replicates=3,
                                    spending="obrien_fleming"))[1] == pytest.approx((0.9,))
    assert look_thresholds(KeepRule(threshold=0.9, max_replicates=6, batch=2))[1] == (0.9, 0.9, 0.9)
    # p_better between the last look's threshold and the first's: keep only at the last look.
    between = FixedDifference((thresholds[-1] + thresholds[-2]) / 2)
    assert decide(between, CANDIDATE, INCUMBENT, rule, 4).verdict == "undecided"
    last = decide(between, CANDIDATE, INCUMBENT, rule, 8)
    assert last.verdict == "keep" and "look 4 of 4, overall 0.95" in last.reason
    # Off the declared schedule (5 runs with batch 2): the preceding look's (stricter) threshold.
    assert "look 2 of 4" in decide(between, CANDIDATE, INCUMBENT, rule, 5).reason
    # Below the last look's threshold at max_replicates: undecided, no more runs, saying which
    # threshold applied.
    short = decide(FixedDifference(0.955), CANDIDATE, INCUMBENT, rule, 8)
    assert short.verdict == "undecided" and f"< {thresholds[-1]:.3f}" in short.reason
    assert "max_replicates=8 runs reached" in short.reason


def test_keep_rule_validates():
    with pytest.raises(ValueError, match="threshold"):
        KeepRule(threshold=1.0)
    with pytest.raises(ValueError, match="min_replicates"):
        KeepRule(max_replicates=2, min_replicates=3)
    with pytest.raises(ValueError, match="batch"):
        KeepRule(batch=0)
    with pytest.raises(ValueError, match="spending"):
        KeepRule(spending="haybittle")


def test_ratchet_reproduces_autoresearch_on_a_scripted_sequence():
    """Autoresearch: baseline 1.000; keep iff a result is strictly below the best kept so far."""
    script = [("a", 0.990), ("b", 0.995), ("c", 0.990), ("d", 0.980), ("e", None), ("b", 0.975),
              ("f", 0.981)]
    # c ties 0.990: discarded
    expected = ["keep", "revert", "revert", "keep", "revert", "keep", "revert"]
    history = [RunRecord(frozenset(), 1.000, "ok", 0, 0, "base")]
    incumbent: frozenset[str] = frozenset()
    runs: dict[str, int] = {}
    ratchet = make_policy("ratchet")
    verdicts = []
    for step, (name, value) in enumerate(script, start=1):
        history.append(RunRecord(incumbent | {name}, value, "ok" if value is not None else "crash",
                                 step, step, "candidate"))
        runs[name] = runs.get(name, 0) + 1
        view = StudyView(incumbent=incumbent, candidates=sorted({n for n, _ in script} - incumbent),
                         history=list(history), runs_per_hypothesis=dict(runs))
        decision = ratchet.decide(view, None, name)
        assert decision.p_better is None and decision.interval is None
        verdicts.append(decision.verdict)
        if decision.verdict == "keep":
            incumbent = incumbent | {name}
    assert verdicts == expected
    assert incumbent == {"a", "d", "b"}


def test_ratchet_passes_through_every_hypothesis_before_repeating():
    ratchet = make_policy("ratchet")
    names = ["a", "b", "c", "d"]
    orders = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        runs = dict.fromkeys(names, 0)
        history = [RunRecord(frozenset(), 1.0, "ok", 0, 0, "base")]
        chosen = []
        for _ in range(8):
            view = StudyView(incumbent=frozenset(), candidates=names, history=history,
                             runs_per_hypothesis=dict(runs))
            action = ratchet.select(view, None, rng)
            assert action.kind == "run" and action.n_runs == 1
            chosen.append(action.hypothesis)
            runs[action.hypothesis] += 1
        assert sorted(chosen[:4]) == names and sorted(chosen[4:]) == names
        orders.append(tuple(chosen[:4]))
    assert len(set(orders)) > 1  # the order is shuffled by the seed
    assert ratchet.incumbent_runs(3) == 0  # never re-runs the incumbent beside a candidate
    # a discarded hypothesis is open again in the next pass, and no pair is offered
    closed = {"a": ClosedTrial("revert", 1, frozenset(), True)}
    menu = MoveMenu(tuple(names), frozenset(), closed, interactions=True)
    assert ratchet.open_moves(menu, None) == (names, frozenset())
