"""Studies sharing a memory: a study is no evidence for itself, the insights it writes hold only
its own runs' evidence, and the next study pools the studies' evidence by precision.

The report's files are not what is tested: `engine.report.write_outputs` is replaced by a stub,
so each study takes a fraction of a second while its insights are written as in a real study."""
from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path

import pytest

from beliefs import BeliefPrior, Beliefs, Observation
from engine.config import load_config
from engine.insights import source_name
from engine.study import Study
from memory import Insight, activation, sd_from_interval, widened_sd
from memory.records import HYPOTHESIS_KINDS

CONFIG = """
[study]
name = "{name}"
seed = {seed}
budget_trials = {budget}
replicates_per_step = 2
incumbent_runs_per_step = 1
base_runs = 2

[env]
kind = "synthetic"
n_hypotheses = 4
effect_size = 1.0
noise_sd = 0.5
world_seed = 1

[beliefs]
fit_pymc = false

[policy]
kind = "efe"

[memory]
path = "{memory}"
"""


@pytest.fixture
def reports(monkeypatch):
    """Stubs the report's files (plots, PyMC); `reports.kill` makes the next one a Ctrl-C."""

    class Reports:
        kill = False

        def write(self, *args, **kwargs):
            if self.kill:
                self.kill = False
                raise KeyboardInterrupt
            return {}

    stub = Reports()
    monkeypatch.setattr("engine.report.write_outputs", stub.write)
    return stub


def open_study(tmp_path: Path, name: str, budget: int, seed: int) -> Study:
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(CONFIG.format(name=name, seed=seed, budget=budget,
                                                  memory=tmp_path / "memory.db")))
    return Study(load_config(path, out_dir=str(tmp_path / name)))


def run(tmp_path: Path, name: str, budget: int, seed: int, status: str = "finished") -> Study:
    study = open_study(tmp_path, name, budget, seed)
    assert study.run(write_report=True).status == status
    return study


def findings(study: Study) -> tuple:
    summary = study.summary()
    return summary.incumbent.interval, [(e.name, e.mean, e.lo, e.hi) for e in summary.effects]


def insights_of(study: Study) -> list[Insight]:
    source = source_name(study.cfg.study.name, study.out_dir)
    return [i for i in study.shared_memory.insights() if i.source == source]


def check_not_duplicated(insights: list[Insight]) -> None:
    keys = Counter((i.kind, i.subject) for i in insights)
    assert keys and max(keys.values()) == 1, keys


@pytest.mark.parametrize("after_another", [False, True])
def test_rerunning_a_finished_study_leaves_its_findings_and_insights_unchanged(
        tmp_path, reports, after_another):
    # after another study: its insights are this study's priors, and this study's own recall
    # reinforced them, which must not narrow them on a re-run either
    if after_another:
        run(tmp_path, "earlier", budget=12, seed=5)
    study = run(tmp_path, "synth", budget=20, seed=3)
    assert bool(study.state.beliefs.prior.effect_priors) == after_another
    first, written = findings(study), insights_of(study)
    check_not_duplicated(written)
    for _ in range(3):
        again = run(tmp_path, "synth", budget=20, seed=3)
        assert findings(again) == first  # was: the incumbent's interval 0.61 -> 0.44 -> ...
        assert insights_of(again) == written  # not superseded: the same evidence
        check_not_duplicated(again.ledger.insights())


def test_a_kill_while_reporting_then_resume_does_not_count_the_study_twice(tmp_path, reports):
    reports.kill = True  # the insights are in the memory when the report is interrupted
    killed = run(tmp_path, "synth", budget=20, seed=3, status="stopped")
    assert insights_of(killed)
    resumed = run(tmp_path, "synth", budget=20, seed=3)
    assert resumed.state.beliefs.prior.effect_priors == {}
    assert findings(resumed) == findings(killed)
    check_not_duplicated(insights_of(resumed))


def latest_per_subject(insights: list[Insight]) -> dict[str, Insight]:
    """A source's estimate of each hypothesis: its latest effect or dead-end insight."""
    chosen: dict[str, Insight] = {}
    for i in sorted(insights, key=lambda i: (i.t_created, i.id)):
        if i.kind in HYPOTHESIS_KINDS:
            chosen[i.subject] = i
    return chosen


def test_two_studies_evidence_is_kept_and_pooled_by_precision(tmp_path, reports):
    many = run(tmp_path, "many", budget=30, seed=5)
    few = run(tmp_path, "few", budget=4, seed=9)  # the base runs, then 2 runs of one hypothesis
    by_many, by_few = latest_per_subject(insights_of(many)), latest_per_subject(insights_of(few))
    both = sorted(set(by_many) & set(by_few))
    assert both, (by_many, by_few)
    for name in both:  # the 2-run insight replaced nothing
        assert by_few[name].evidence == 2 < by_many[name].evidence, by_many[name]
        assert by_many[name].active and by_few[name].active
    t_now = many.shared_memory.experiment_time()
    third = open_study(tmp_path, "third", budget=10, seed=11)
    priors = third.state.beliefs.prior.effect_priors
    assert set(priors) == set(by_many) | set(by_few)
    for name in both:
        # the closed form, each sd first widened by its own insight's decay
        estimates = [(i.mean, widened_sd(sd_from_interval(i.lo, i.hi),
                                         activation(i.presentations, t_now, 0.5)))
                     for i in (by_many[name], by_few[name])]
        precision = sum(sd**-2 for _, sd in estimates)
        mean = sum(m * sd**-2 for m, sd in estimates) / precision
        assert priors[name] == pytest.approx((third.sign * mean, precision**-0.5), rel=1e-12)
        assert priors[name][1] < min(sd for _, sd in estimates)


def test_insights_of_a_study_that_took_priors_hold_its_own_runs_alone(tmp_path, reports):
    run(tmp_path, "first", budget=16, seed=5)
    second = run(tmp_path, "second", budget=12, seed=9)
    transferred = second.state.beliefs.prior.effect_priors
    assert transferred
    # what second's runs alone say: a fresh fit under the default prior, no transferred priors
    cfg = second.cfg.beliefs
    alone = Beliefs(second.state.beliefs.hypotheses, interactions=cfg.interactions,
                    seed_effects=cfg.seed_effects,
                    prior=BeliefPrior(effect_sd=cfg.prior_effect_sd, noise_df=cfg.prior_noise_df,
                                      null_share=cfg.null_share, seed_sd=cfg.prior_seed_sd))
    alone.update(Observation(frozenset(r["hypotheses"]), second.sign * r["metric"], seed=r["seed"])
                 for r in second.ledger.runs(second.study_id) if r["status"] == "ok")
    expected = {e.name: (e.mean, e.lo, e.hi) for e in alone.effects()}
    informed = {e.name: (e.mean, e.lo, e.hi) for e in second.state.beliefs.effects()}
    written = latest_per_subject(insights_of(second))
    assert written
    for name, insight in written.items():
        assert (insight.mean, insight.lo, insight.hi) == pytest.approx(expected[name], rel=1e-9)
    # the test has teeth: the posterior the study decided with holds first's evidence too
    assert any(informed[name] != pytest.approx(expected[name], rel=1e-3)
               for name in set(written) & set(transferred))
    (noise,) = [i for i in insights_of(second) if i.kind == "noise"]
    assert noise.mean == pytest.approx(alone.noise_sd(), rel=1e-9)
