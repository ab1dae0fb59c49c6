"""The Python API: create_study, run, ask/tell with several pending asks, and the records."""
from __future__ import annotations

import math
import random

import pytest

import engine
from engine.config import ConfigError
from engine.folder import FolderError

HYPOTHESES = [{"name": "a_on", "change": {"a": 1}}, {"name": "b_on", "change": {"b": 1}},
              {"name": "c_on", "change": {"c": 1}}]
BASE = {"a": 0, "b": 0, "c": 0}
SECTIONS = dict(study={"budget_trials": 24, "seed": 5}, beliefs={"fit_pymc": False})


def objective(config, seed):
    """A known world: a lowers the value by two noise sd, b and c do nothing."""
    return 1.0 - 0.6 * config["a"] + random.Random(seed).gauss(0.0, 0.3)


def make(tmp_path, name="api", function=objective, **sections):
    return engine.create_study(function, hypotheses=HYPOTHESES, base=BASE,
                               direction="minimize", name=name, out_dir=tmp_path / name,
                               **{**SECTIONS, **sections})


def run_keys(study):
    return [(r.step, r.slot, r.role, r.hypotheses, r.seed, r.status, r.metric)
            for r in study.records()]


def test_run_calls_the_objective_once_per_recorded_run_and_keeps_the_real_change(tmp_path):
    calls = []

    def counted(config, seed):
        calls.append((dict(config), seed))
        return objective(config, seed)

    study = make(tmp_path, function=counted)
    result = study.run(write_report=False)
    records = study.records()
    assert result.status == "finished" and result.runs_used == len(records) == len(calls) <= 24
    assert result.kept == ["a_on"]
    # each record holds what the objective returned for its own config and seed
    assert sorted((r.seed, r.metric) for r in records) == \
        sorted((seed, objective(config, seed)) for config, seed in calls)
    for r in records:
        assert dict(r.config) == {**BASE, **{k: 1 for k in "abc" if f"{k}_on" in r.hypotheses}}
        assert r.started <= r.finished
    frame = study.to_dataframe()
    assert list(frame["metric"]) == [r.metric for r in records]
    assert {"step", "slot", "role", "hypotheses", "seed", "status"} <= set(frame.columns)


def tell_in_rounds(study, reorder) -> list[list]:
    """Ask every run the study will hand out, tell them all in the order `reorder` gives, and
    again until it asks for nothing; the rounds of runs pending at once."""
    rounds = []
    while pending := list(iter(study.ask, None)):
        rounds.append(pending)
        for run in reorder(pending):
            study.tell(run, objective(run.config, run.seed))
    return rounds


def test_ask_tell_with_every_run_of_a_step_pending_gives_the_ledger_run_gives(tmp_path):
    reference = make(tmp_path, "reference")
    reference.run(write_report=False)
    study = make(tmp_path, "told", function=None)
    rounds = tell_in_rounds(study, lambda pending: reversed(pending))  # not in the asked order
    assert study.stop_reason is not None
    assert max(len(pending) for pending in rounds) > 1
    assert run_keys(study) == run_keys(reference) and study.kept == reference.kept


def test_ask_tell_with_four_workers_asks_runs_of_several_steps_and_gives_the_same_ledger(tmp_path):
    """With [runner] workers = 4 the runs of several steps are pending at once, and told in
    any order they make the study the runner makes on four simulated workers."""
    runner = {"kind": "simulated", "workers": 4}
    reference = make(tmp_path, "reference", runner=runner)
    reference.run(write_report=False)
    study = make(tmp_path, "told", function=None, runner=runner)
    rng = random.Random(3)
    rounds = tell_in_rounds(study, lambda pending: rng.sample(pending, len(pending)))
    assert max(len({run.step for run in pending}) for pending in rounds) > 1
    assert run_keys(study) == run_keys(reference) and study.kept == reference.kept


def test_a_study_closed_with_runs_untold_asks_for_them_again_and_loses_or_repeats_none(tmp_path):
    reference = make(tmp_path, "reference")
    reference.run(write_report=False)
    study = make(tmp_path, "told", function=None)
    told = 0
    while told < 7:
        run = study.ask()
        study.tell(run, objective(run.config, run.seed))
        told += 1
    untold = study.ask()
    assert untold is not None
    study.close()  # as a killed notebook would leave it
    with make(tmp_path, "told", function=None) as again:
        first = again.ask()
        assert (first.step, first.slot, first.seed) == (untold.step, untold.slot, untold.seed)
        again.tell(first, objective(first.config, first.seed))
        while (run := again.ask()) is not None:
            again.tell(run, objective(run.config, run.seed))
        keys = run_keys(again)
    assert keys == run_keys(reference)
    assert len({k[:2] for k in keys}) == len(keys)


def test_a_study_told_failures_records_them_and_goes_on(tmp_path):
    study = make(tmp_path, function=None)
    statuses = iter(["crash", "timeout", None, "nan"])
    while (run := study.ask()) is not None:
        status = next(statuses, None)
        if status is None:
            study.tell(run, objective(run.config, run.seed))
        else:
            study.tell(run, status=status)
    records = study.records()
    assert [r.status for r in records[:4]] == ["crash", "timeout", "ok", "nan"]
    assert all(r.metric is None for r in records if r.status != "ok")


def test_tell_refuses_what_it_was_not_waiting_for(tmp_path):
    study = make(tmp_path, function=None)
    first, second = study.ask(), study.ask()
    with pytest.raises(ValueError, match="no metric"):
        study.tell(first, 1.0, status="crash")
    with pytest.raises(ValueError, match="needs the run's metric"):
        study.tell(first)
    with pytest.raises(ValueError, match="not a number"):
        study.tell(first, "0.5")
    with pytest.raises(ValueError, match="not one of"):
        study.tell(first, status="exploded")
    study.tell(first, 1.0)
    with pytest.raises(ValueError, match="told already"):
        study.tell(first, 1.0)
    never = type(second)(second.step, second.slot + 50, second.role, second.hypotheses,
                         second.config, second.seed)
    with pytest.raises(ValueError, match="never asked"):
        study.tell(never, 1.0)
    study.tell(second, math.nan)  # a NaN metric is a nan run, not an error
    assert [r.status for r in study.records()] == ["ok", "nan"]
    study.close()


def test_ask_tell_holds_the_folder_until_closed(tmp_path):
    study = make(tmp_path, function=None)
    study.ask()
    with pytest.raises(FolderError):
        make(tmp_path, function=None).ask()
    study.close()
    other = make(tmp_path, function=None)
    assert other.ask() is not None
    other.close()


def test_a_study_with_no_objective_cannot_run_and_says_how_to_drive_it(tmp_path):
    with pytest.raises(RuntimeError, match="ask"):
        make(tmp_path, function=None).run(write_report=False)


def test_bad_arguments_are_refused_up_front_naming_each(tmp_path):
    with pytest.raises(ConfigError) as info:
        engine.create_study(objective, hypotheses=[{"name": "x", "change": {"nope": 1}}],
                            base=BASE, direction="sideways", out_dir=tmp_path / "bad",
                            study={"budget_trials": 0})
    text = str(info.value)
    assert "direction" in text and "budget_trials" in text
    with pytest.raises(ConfigError, match="'nope' is not a knob"):
        engine.create_study(objective, hypotheses=[{"name": "x", "change": {"nope": 1}}],
                            base=BASE, out_dir=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
