"""The ledger: studies, runs, steps, decisions, transactions, episodes and insights."""

import math
import sqlite3

import pytest

from memory import (
    DuplicateRecordError,
    Ledger,
    StudyMismatchError,
    activation,
    priors_from_insights,
    sd_from_interval,
)
from memory.schema import SCHEMA_VERSION


@pytest.fixture
def ledger(tmp_path):
    with Ledger(tmp_path / "study.db") as opened:
        yield opened


def run_fields(**overrides):
    fields = dict(role="candidate", hypotheses=["b", "a"], config={"a": True, "b": True},
                  seed=1, status="ok", metric=1.25)
    fields.update(overrides)
    return fields


def test_fresh_database_is_wal_at_current_version(ledger):
    assert ledger.schema_version == SCHEMA_VERSION
    journal = sqlite3.connect(ledger.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert journal == "wal"


def test_start_study_resumes_by_name_and_refuses_a_mismatch(ledger):
    first = ledger.start_study("s", {"lr": 0.1}, "env-1", 7)
    ledger.finish_study(first, "stopped", "budget")
    assert ledger.start_study("s", {"lr": 0.1}, "env-1", 7) == first
    assert ledger.study(first)["status"] == "running"  # a stopped study resumes
    with pytest.raises(StudyMismatchError, match="env_fingerprint"):
        ledger.start_study("s", {"lr": 0.1}, "env-2", 7)
    with pytest.raises(StudyMismatchError, match="seed"):
        ledger.start_study("s", {"lr": 0.1}, "env-1", 8)
    ledger.finish_study(first, "finished", "all decided")
    assert ledger.start_study("s", {"lr": 0.1}, "env-1", 7) == first
    row = ledger.study(first)
    assert (row["status"], row["stop_reason"], row["config"]) == ("finished", "all decided",
                                                                  {"lr": 0.1})
    with pytest.raises(ValueError, match="'running'"):
        ledger.finish_study(first, "running")


def test_record_run_round_trips_and_refuses_duplicates(ledger):
    study = ledger.start_study("s", {}, "env", 0)
    run_id = ledger.record_run(study, 3, 1, **run_fields(extra={"peak_vram_mb": 512.0},
                                                          started=0.0, backend="cpu"))
    with pytest.raises(DuplicateRecordError, match="step=3, slot=1"):
        ledger.record_run(study, 3, 1, **run_fields(metric=9.0))
    (run,) = ledger.runs(study)
    assert run["id"] == run_id
    assert run["hypotheses"] == ["a", "b"]  # stored sorted
    assert (run["metric"], run["backend"], run["extra"]) == (1.25, "cpu", {"peak_vram_mb": 512.0})
    assert run["started"].startswith("1970-01-01T00:00:00")
    assert ledger.experiment_time() == 1


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"role": "winner"}, "winner"),
        ({"status": "fine"}, "fine"),
        ({"metric": None}, "needs a metric"),
        ({"metric": math.nan}, "nan"),
    ],
)
def test_record_run_rejects_bad_values(ledger, overrides, message):
    study = ledger.start_study("s", {}, "env", 0)
    with pytest.raises(ValueError, match=message):
        ledger.record_run(study, 0, 0, **run_fields(**overrides))
    assert ledger.runs(study) == []


def test_failed_run_stores_a_non_finite_metric_as_null(ledger):
    study = ledger.start_study("s", {}, "env", 0)
    ledger.record_run(study, 0, 0, **run_fields(status="nan", metric=math.inf))
    assert ledger.runs(study)[0]["metric"] is None


def test_unknown_study_is_refused(ledger):
    with pytest.raises(KeyError, match="99"):
        ledger.record_run(99, 0, 0, **run_fields())


def test_transaction_is_all_or_nothing(ledger):
    study = ledger.start_study("s", {}, "env", 0)
    with pytest.raises(RuntimeError, match="engine died"):
        with ledger.transaction():
            ledger.record_run(study, 1, 0, **run_fields())
            ledger.record_decision(study, 1, "a", "keep", n_runs=1, p_better=0.99)
            raise RuntimeError("engine died")
    assert ledger.runs(study) == [] and ledger.decisions(study) == []
    with ledger.transaction():
        ledger.record_run(study, 1, 0, **run_fields())
        # a failed nested write rolls back alone; the step carries on
        with pytest.raises(DuplicateRecordError):
            ledger.record_run(study, 1, 0, **run_fields())
        ledger.record_step(study, 1, action={"kind": "run"}, appraisal={"surprise": 0.5},
                           incumbent={"mean": 1.0, "interval": [0.9, 1.1]})
    assert len(ledger.runs(study)) == 1
    assert ledger.steps(study)[0]["incumbent"] == {"mean": 1.0, "interval": [0.9, 1.1]}
    assert ledger.last_step(study) == 1


def test_steps_and_decisions_are_unique_per_key(ledger):
    study = ledger.start_study("s", {}, "env", 0)
    assert ledger.last_step(study) is None
    ledger.record_step(study, 0, action={}, appraisal={}, incumbent={})
    with pytest.raises(DuplicateRecordError, match="step=0"):
        ledger.record_step(study, 0, action={}, appraisal={}, incumbent={})
    ledger.record_decision(study, 0, "a", "undecided", n_runs=2, p_better=0.6, lo=-0.1, hi=0.2,
                           reason="more runs")
    with pytest.raises(DuplicateRecordError, match="'a'"):
        ledger.record_decision(study, 0, "a", "keep", n_runs=2)
    with pytest.raises(ValueError, match="maybe"):
        ledger.record_decision(study, 1, "a", "maybe", n_runs=2)
    with pytest.raises(ValueError, match="1.5"):
        ledger.record_decision(study, 1, "a", "keep", n_runs=2, p_better=1.5)
    (decision,) = ledger.decisions(study)
    assert (decision["verdict"], decision["lo"], decision["hi"], decision["reason"]) == (
        "undecided", -0.1, 0.2, "more runs")


def add_episode(ledger, study, hypothesis, category, env, t):
    return ledger.record_episode(study_id=study, env_fingerprint=env, hypothesis=hypothesis,
                                 category=category, outcome={"mean": 1.0}, surprise=0.3,
                                 learntropy=0.1, compression_progress=-0.02, t_now=t)


def test_recall_ranks_by_activation_plus_relevance_and_reinforces(ledger):
    study = ledger.start_study("s", {}, "env", 0)
    old_relevant = add_episode(ledger, study, "h1", "arch", "env", t=0)
    recent_other = add_episode(ledger, study, "h2", "optim", "other-env", t=8)
    recalled = ledger.recall(2, category="arch", env_fingerprint="env", t_now=10)
    # h1: ln(10^-0.5) + 2 matches = 0.85; h2: ln(2^-0.5) + 0 = -0.35
    assert [episode.id for episode in recalled] == [old_relevant, recent_other]
    assert recalled[0].activation == pytest.approx(activation([0.0], 10.0, 0.5))
    assert recalled[0].score == pytest.approx(recalled[0].activation + 2.0)
    stored = {episode.id: episode for episode in ledger.episodes()}
    assert stored[old_relevant].presentations == (0.0, 10.0)
    # reinforcement shows: the same query scores higher now than it did before the recall
    again = ledger.recall(1, category="arch", env_fingerprint="env", t_now=10)
    assert again[0].activation > recalled[0].activation


def test_forgotten_episodes_drop_out_of_recall_but_stay_in_the_ledger(ledger):
    study = ledger.start_study("s", {}, "env", 0)
    add_episode(ledger, study, "h1", "arch", "env", t=0)
    # single presentation, d = 0.5: A = -0.5 ln(age) < -2 once age > e^4 ~ 54.6
    assert len(ledger.recall(5, t_now=54, threshold=-2.0)) == 1
    assert ledger.recall(5, t_now=1000, threshold=-2.0) == []
    assert len(ledger.episodes()) == 1
    assert ledger.recall(0, t_now=1000) == []


def test_episode_time_defaults_to_runs_recorded(ledger):
    study = ledger.start_study("s", {}, "env", 0)
    for slot in range(3):
        ledger.record_run(study, 0, slot, **run_fields())
    episode_id = ledger.record_episode(study_id=study, env_fingerprint="env", hypothesis="h",
                                       category="c", outcome={})
    assert ledger.episodes()[0].id == episode_id
    assert ledger.episodes()[0].t_created == 3.0
    with pytest.raises(ValueError, match="-1"):
        ledger.recall(1, t_now=-1)


def insight_fields(**overrides):
    fields = dict(env_fingerprint="env", kind="effect", subject="rope", statement="rope helps",
                  mean=-0.02, lo=-0.03, hi=-0.01, evidence=6, unit="val_bpb")
    fields.update(overrides)
    return fields


def test_upsert_insight_supersedes_on_new_evidence_and_keeps_history(ledger):
    first = ledger.upsert_insight(**insight_fields(), t_now=5)
    assert ledger.upsert_insight(**insight_fields(), t_now=6) == first  # same evidence
    second = ledger.upsert_insight(**insight_fields(evidence=9, lo=-0.025), t_now=7)
    assert second != first
    active = ledger.insights()
    assert [insight.id for insight in active] == [second]
    history = {insight.id: insight for insight in ledger.insights(include_superseded=True)}
    assert history[first].superseded_by == second and not history[first].active
    assert history[second].presentations == (7.0,) and history[second].evidence == 9
    with pytest.raises(ValueError, match="hunch"):
        ledger.upsert_insight(**insight_fields(kind="hunch"))
    with pytest.raises(ValueError, match="lo <= hi"):
        ledger.upsert_insight(**insight_fields(lo=0.5))


def test_recalled_insights_give_priors_widened_by_the_decay_they_suffered(ledger):
    ledger.upsert_insight(**insight_fields(), t_now=0)
    ledger.upsert_insight(**insight_fields(kind="dead_end", subject="gelu", mean=0.05, lo=0.03,
                                           hi=0.07, statement="gelu hurts"), t_now=0)
    ledger.upsert_insight(**insight_fields(kind="noise", subject="cpu/30s", statement="sd 0.01"),
                          t_now=0)
    ledger.upsert_insight(**insight_fields(env_fingerprint="elsewhere"), t_now=0)
    recalled = ledger.recall_insights(env_fingerprint="env", t_now=4)
    assert {insight.subject for insight in recalled} == {"rope", "gelu", "cpu/30s"}
    priors = priors_from_insights(recalled, t_now=4, decay=0.5)
    assert set(priors) == {"rope", "gelu"}  # noise is not a hypothesis prior
    stored_sd = sd_from_interval(-0.03, -0.01)
    # one presentation 4 experiments old: w = 4^-0.5, sd / sqrt(w) = sd * 4^0.25
    assert priors["rope"] == pytest.approx((-0.02, stored_sd * 4**0.25))
    # the recall reinforced them: recalled again at once, they are at full weight
    fresh = priors_from_insights(ledger.recall_insights(env_fingerprint="env", t_now=4), 4, 0.5)
    assert fresh["rope"] == pytest.approx((-0.02, stored_sd))
    assert ledger.recall_insights(env_fingerprint="env", t_now=10**6) == []


def test_insights_are_kept_per_source_and_a_rewrite_supersedes_only_its_own(ledger):
    many = ledger.upsert_insight(**insight_fields(evidence=15), source="a", t_now=1)
    few = ledger.upsert_insight(**insight_fields(evidence=2, mean=0.01, lo=-0.04, hi=0.06),
                                source="b", t_now=2)
    assert [insight.id for insight in ledger.insights()] == [many, few]  # was: few alone
    assert ledger.upsert_insight(**insight_fields(evidence=15), source="a", t_now=3) == many
    again = ledger.upsert_insight(**insight_fields(evidence=3, mean=0.0, lo=-0.03, hi=0.03),
                                  source="b", t_now=4)
    assert {i.source: i.id for i in ledger.insights()} == {"a": many, "b": again}
    history = {i.id: i for i in ledger.insights(include_superseded=True)}
    assert history[few].superseded_by == again and history[many].active


def test_a_study_recalls_and_reinforces_no_insight_of_its_own(ledger):
    ledger.upsert_insight(**insight_fields(), source="me", t_now=0)
    other = ledger.upsert_insight(**insight_fields(), source="other", t_now=0)
    recalled = ledger.recall_insights(env_fingerprint="env", t_now=4, exclude_source="me")
    assert [insight.id for insight in recalled] == [other]
    presentations = {i.source: i.presentations for i in ledger.insights()}
    assert presentations == {"me": (0.0,), "other": (0.0, 4.0)}


def test_the_priors_a_study_started_with_are_recorded_once(ledger):
    study = ledger.start_study("s", {}, "env", 0)
    assert ledger.study_priors(study) is None
    first = {"rope": (-0.02, 0.011)}
    assert ledger.record_study_priors(study, first) == first
    assert ledger.record_study_priors(study, {"rope": (0.5, 1.0)}) == first  # the first stays
    other = ledger.start_study("t", {}, "env", 0)
    assert ledger.record_study_priors(other, {}) == {} == ledger.study_priors(other)
    with pytest.raises(KeyError):
        ledger.record_study_priors(99, {})
