"""The designed-experiment policy's pieces: balanced blocks, the screened set, crash suspects, and
its choice between screening and confirming on a posterior worked by hand."""

import numpy as np
import pytest

from beliefs import BeliefPrior, Beliefs, Hypothesis, Observation
from policies import RunRecord, StudyView, make_policy
from policies.design import (
    balanced_block,
    crash_suspects,
    screened_set,
    seed_blocked_block,
    without_conflicts,
)

CHANGES = [f"h{i}" for i in range(6)]


@pytest.mark.parametrize("runs", [8, 7])
def test_an_uncapped_block_puts_every_change_in_half_the_runs(runs):
    rng = np.random.default_rng(0)
    for _ in range(20):
        block = balanced_block(CHANGES, runs, 0, rng)
        assert len(block) == runs
        for name in CHANGES:
            assert sum(name in subset for subset in block) in {runs // 2, (runs + 1) // 2}


def test_a_capped_block_applies_that_many_changes_and_uses_each_about_equally():
    rng = np.random.default_rng(1)
    block = balanced_block(CHANGES, 9, 2, rng)
    assert all(len(subset) == 2 for subset in block)
    counts = [sum(name in subset for subset in block) for name in CHANGES]
    assert max(counts) - min(counts) <= 1
    assert all(len(subset) == 1 for subset in balanced_block(CHANGES, 4, 1, rng))
    # A cap at or above the open changes: never every change in every run (nothing separable).
    assert all(len(subset) == 1 for subset in balanced_block(["a", "b", "c"], 4, 5, rng))


class FixedPosterior:
    """P(better) 0.97 for any one change and 0.90 for several together (so a screened set of
    three is not yet confirmed on its own evidence); every block equally informative."""

    interactions = False
    seed_effects = False

    def batch_info_gain(self, configs, blocks=None):
        return float(len(configs))


def test_a_block_leaves_room_for_the_screened_sets_confirmation(monkeypatch):
    import policies.design as design

    def fixed(beliefs, candidate, incumbent, epsilon=0.0):
        return (0.97 if len(frozenset(candidate) ^ frozenset(incumbent)) == 1 else 0.90), None, None

    monkeypatch.setattr(design, "probability_better_than", fixed)
    history = [RunRecord(frozenset(), 1.0, "ok", 0, 0, "base")]
    policy = make_policy("design")
    for left, kind, runs in ((4, "design", 1), (3, "run", None), (12, "design", 8)):
        view = StudyView(incumbent=frozenset(), candidates=["a", "b", "c"], history=history,
                         runs_left=left, step_runs=dict.fromkeys(["a", "b", "c"], (2, 1)))
        action = policy.select(view, FixedPosterior(), np.random.default_rng(0))
        assert action.kind == kind, left
        if runs is not None:  # 3 runs (2 + 1 paired) stay for the confirmation
            assert action.n_runs == runs
        # a set whose confirmation runs all failed is not confirmed again, but shrunk
        failed = [RunRecord(frozenset({"a", "b", "c"}), None, "crash", s, 5, "candidate")
                  for s in (1, 2)]
        failed += [RunRecord(frozenset({n}), 0.9, "ok", 3, 4, "candidate") for n in "abc"]
        shrunk = policy.select(StudyView(**{**view.__dict__, "history": history + failed,
                                            "runs_left": 3}), FixedPosterior(),
                               np.random.default_rng(0))
        assert shrunk.hypothesis == "a + b"


def test_with_runs_in_flight_a_block_keeps_the_confirmations_runs_and_the_last_one_waits(
        monkeypatch):
    """Nothing screened yet (P(better) 0.5 everywhere), 4 runs left, a confirmation of 3: with
    no run in flight the 4 all screen; with runs in flight, whose outcome may screen a set, a
    block of 1 keeps the 3, and with 3 left it waits. A screened set with only its
    confirmation's runs left is confirmed at once, unless runs are in flight: then it waits for
    them."""
    import policies.design as design

    p_better = {"value": 0.5}
    monkeypatch.setattr(design, "probability_better_than",
                        lambda beliefs, candidate, incumbent, epsilon=0.0:
                        (p_better["value"], None, None))
    history = [RunRecord(frozenset(), 1.0, "ok", 0, 0, "base")]
    flying = [RunRecord(frozenset({"a"}), None, "pending", 1, 1, "candidate")]
    policy = make_policy("design")

    def action(left, pending):
        view = StudyView(incumbent=frozenset(), candidates=["a", "b", "c"], history=history,
                         runs_left=left, step_runs=dict.fromkeys(["a", "b", "c"], (2, 1)),
                         pending=pending)
        return policy.select(view, FixedPosterior(), np.random.default_rng(0))

    assert (action(4, []).kind, action(4, []).n_runs) == ("design", 4)
    assert (action(4, flying).kind, action(4, flying).n_runs) == ("design", 1)
    assert action(3, flying).kind == "stop" and "runs in flight" in action(3, flying).reason
    p_better["value"] = 0.97  # every change screened, and the set clear
    assert action(3, []).kind == "run"
    assert action(3, flying).kind == "stop"


def test_conflicting_changes_are_never_applied_together():
    conflicts = frozenset({frozenset({"h0", "h1"})})
    rank = {name: i for i, name in enumerate(CHANGES)}
    assert without_conflicts(frozenset({"h0", "h1", "h2"}), conflicts, rank) == {"h0", "h2"}


def test_the_screened_set_by_hand():
    """Additive: each change's P(better) is its own. Falling P(better): 0.99, 0.97, 0.93 keep the
    mean of 1 - p at 0.01, 0.02, 0.0367 <= 0.05; adding 0.6 would make it
    (0.01 + 0.03 + 0.07 + 0.4) / 4 = 0.1275."""
    p = {"a": 0.99, "b": 0.97, "c": 0.93, "d": 0.6, "e": 0.3}

    def own(members, k):
        return p[k]

    assert screened_set(list(p), own, 0.95, frozenset(), False) == ["a", "b", "c"]
    # b and c set the same key: c is skipped, and d would break the bound.
    assert screened_set(list(p), own, 0.95, frozenset({frozenset({"b", "c"})}), False) == ["a", "b"]
    assert screened_set(["a"], lambda m, k: 0.9, 0.95, frozenset(), False) == []
    assert screened_set(["a"], lambda m, k: 0.9, 0.85, frozenset(), False) == ["a"]


def test_a_synergy_enters_the_screened_set_as_a_pair():
    """x and y each hurt alone (P(better) 0.1) but each is a clear gain beside the other (0.99);
    z helps alone (0.97) whatever else is applied."""
    def within(members, k):
        if k == "z":
            return 0.97
        partner = "y" if k == "x" else "x"
        return 0.99 if partner in members else 0.1

    assert screened_set(["x", "y", "z"], within, 0.95, frozenset(), False) == ["z"]
    assert sorted(screened_set(["x", "y", "z"], within, 0.95, frozenset(), True)) == ["x", "y", "z"]


def test_a_change_whose_every_run_failed_is_a_crash_suspect():
    history = [RunRecord(frozenset(), 1.0, "ok", 0, 0, "base"),
               RunRecord(frozenset({"h0"}), None, "crash", 1, 1, "candidate"),
               RunRecord(frozenset({"h0", "h1"}), None, "crash", 2, 1, "candidate"),
               RunRecord(frozenset({"h1"}), 0.9, "ok", 3, 1, "candidate")]
    view = StudyView(incumbent=frozenset(), candidates=["h0", "h1"], history=history)
    assert crash_suspects(view, ["h0", "h1"]) == ["h0"]


def study_after(effects, runs_each, rng):
    """Beliefs after `runs_each` runs of each single change and of the base (noise sd 1)."""
    names = list(effects)
    beliefs = Beliefs([Hypothesis(n, "x") for n in names], prior=BeliefPrior(null_share=0.0))
    history = [RunRecord(frozenset(), rng.normal(), "ok", s, 0, "base") for s in range(runs_each)]
    for step, name in enumerate(names, start=1):
        history += [RunRecord(frozenset({name}), effects[name] + rng.normal(), "ok", s, step,
                              "candidate") for s in range(runs_each)]
    beliefs.update([Observation(r.config, r.value) for r in history])
    view = StudyView(incumbent=frozenset(), candidates=names, history=history, runs_left=30,
                     step_runs=dict.fromkeys(names, (2, 1)))
    return beliefs, view


def test_it_screens_while_nothing_is_clear_and_confirms_a_clear_set_together():
    rng = np.random.default_rng(4)
    policy = make_policy("design", block_runs=6)
    unclear, view = study_after({"a": 0.0, "b": 0.0, "c": 0.0}, 2, rng)
    action = policy.select(view, unclear, np.random.default_rng(0))
    assert action.kind == "design" and action.n_runs == len(action.configs) == 6
    assert all(config <= {"a", "b", "c"} for config in action.configs)
    clear, view = study_after({"a": -3.0, "b": -3.0, "c": 2.0}, 6, rng)
    action = policy.select(view, clear, np.random.default_rng(0))
    assert action.kind == "run" and action.hypothesis == "a + b"
    assert action.terms["p_better"] >= 0.95 and action.terms["screened"] == 2
    # The same runs at the end of the budget: only a confirmation's runs are left.
    ending = StudyView(**{**view.__dict__, "runs_left": 3})
    assert policy.select(ending, clear, np.random.default_rng(0)).hypothesis == "a + b"


def test_design_settings_are_checked():
    with pytest.raises(ValueError, match="block_runs"):
        make_policy("design", block_runs=0)
    with pytest.raises(ValueError, match="max_changes_per_run"):
        make_policy("design", max_changes_per_run=-1)


def test_a_seed_blocked_block_sets_the_whole_plot_changes_per_block_and_balances_the_rest():
    rng = np.random.default_rng(2)
    whole = ["h0", "h1"]
    drawn = [seed_blocked_block(CHANGES, whole, 8, 2, 0, rng) for _ in range(40)]
    assert sum(d is not None for d in drawn) >= 30  # a draw that would repeat one is refused
    for configs, labels in filter(None, drawn):
        assert len(configs) == len(labels) == 8 and sorted(set(labels)) == [0, 1]
        for label in (0, 1):
            block = [c for c, b in zip(configs, labels) if b == label]
            assert len(set(block)) == len(block) == 4  # no configuration twice at one seed
            assert len({c & set(whole) for c in block}) == 1  # whole-plot: one setting per block
            for name in CHANGES[2:]:  # sub-plot: each in half the block's runs
                assert sum(name in c for c in block) == 2
        for name in whole:  # each whole-plot change in one of the two blocks
            assert sum(name in c for c in configs) == 4


@pytest.mark.parametrize("cap", [1, 2])
def test_a_capped_seed_blocked_block_is_a_randomised_block_design_of_every_change(cap):
    rng = np.random.default_rng(3)
    for blocks in (2, 4):
        configs, labels = seed_blocked_block(CHANGES, [], 8, blocks, cap, rng)
        assert all(len(c) == cap for c in configs)
        counts = [sum(name in c for c in configs) for name in CHANGES]
        assert max(counts) - min(counts) <= 1 and min(counts) >= 1  # every change screened
        assert len(set(zip(labels, configs))) == 8 and sorted(set(labels)) == list(range(blocks))
    # two changes cannot fill a seed block of four one-change runs without repeating one
    assert seed_blocked_block(["a", "b"], [], 8, 2, 1, rng) is None


def _shared_luck_beliefs(seed_effects: bool) -> Beliefs:
    """Beliefs after runs whose seed's luck (sd 3 noise sds) every run at that seed shares."""
    rng = np.random.default_rng(5)
    hypotheses = [Hypothesis(name, "optimizer") for name in CHANGES]
    luck = 3.0 * rng.normal(size=6)
    obs = [Observation(frozenset(rng.choice(CHANGES, 3, replace=False)) if i else frozenset(),
                       luck[s] + rng.normal(), seed=s) for s in range(6) for i in range(4)]
    beliefs = Beliefs(hypotheses, seed_effects=seed_effects, prior=BeliefPrior(null_share=0.0))
    beliefs.update(obs)
    return beliefs


def test_where_runs_at_one_seed_share_its_luck_the_block_is_run_in_seed_blocks():
    """The luck is 3 noise sds and every change keeps all of it: scored by the information a
    block gives about the effects with the luck as noise (which the refit test in
    tests/beliefs/test_beliefs_seed_effects.py checks), the block chosen runs in seed blocks.
    Without seed effects in the model, or with seed_blocks off, nothing is blocked."""
    history = [RunRecord(frozenset(), 0.0, "ok", s, 0, "base") for s in range(2)]
    view = StudyView(incumbent=frozenset(), candidates=list(CHANGES), history=history,
                     runs_left=30, step_runs=dict.fromkeys(CHANGES, (2, 1)))
    policy = make_policy("design", seed_blocks=True)
    beliefs = _shared_luck_beliefs(seed_effects=True)
    action = policy.select(view, beliefs, np.random.default_rng(0))
    assert action.kind == "design" and len(set(action.blocks)) >= 2
    assert not policy.select(view, _shared_luck_beliefs(seed_effects=False),
                             np.random.default_rng(0)).blocks
    assert not make_policy("design").select(
        view, beliefs, np.random.default_rng(0)).blocks
