"""results.tsv: autoresearch's columns, derived from runs and decisions, round-tripping."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from memory import Ledger, ResultRow, config_commit, parse_results_tsv
from memory.export import format_results_tsv


def populate(ledger, rng):
    """A study: 2 base runs, 'rope' kept after two batches (an undecided one first), 'gelu'
    reverted, 'huge' crashed, the pair move 'a + b' reverted, 'late' still undecided at the end.
    Returns expected rows."""
    study = ledger.start_study("s", {}, "env", 0)
    metrics = {}
    for step, move in enumerate([None, "rope", "rope", "gelu", "huge", "a + b", "late"]):
        ledger.plan_step(study, step,
                         action={"kind": "run" if move else "base", "hypothesis": move})

    def runs(step, role, hypotheses, n, status="ok", vram=None, first_slot=0, rss=None):
        config = {name: True for name in hypotheses}
        for slot in range(first_slot, first_slot + n):
            value = float(rng.normal(1.0, 0.05))
            extra = {"peak_vram_mb": vram} if vram else {}
            if rss:  # a CPU run: the trainer reports vram 0 and the process's peak RSS
                extra = {"peak_vram_mb": 0.0, "peak_rss_mb": rss}
            ledger.record_run(step=step, slot=slot, study_id=study, role=role,
                              hypotheses=hypotheses, config=config, seed=slot, status=status,
                              metric=value if status == "ok" else None, extra=extra)
            if status == "ok":
                metrics.setdefault((role, tuple(hypotheses)), []).append(value)
        return config

    base = runs(0, "base", [], 2, vram=1536.0)
    runs(1, "candidate", ["rope"], 2)
    # incumbent re-runs are not the candidate's row
    runs(1, "incumbent", [], 2, vram=4096.0, first_slot=2)
    ledger.record_decision(study, 1, "rope", "undecided", n_runs=2, p_better=0.8)
    rope = runs(2, "candidate", ["rope"], 2, vram=2048.0)
    ledger.record_decision(study, 2, "rope", "keep", n_runs=4, p_better=0.97)
    gelu = runs(3, "candidate", ["gelu", "rope"], 3, rss=3072.0)
    ledger.record_decision(study, 3, "gelu", "revert", n_runs=3, p_better=0.01)
    huge = runs(4, "candidate", ["huge", "rope"], 1, status="crash")
    ledger.record_decision(study, 4, "huge", "revert", n_runs=1, reason="crash")
    pair = runs(5, "candidate", ["a", "b", "rope"], 2)
    ledger.record_decision(study, 5, "a + b", "revert", n_runs=2, p_better=0.02)
    late = runs(6, "candidate", ["late", "rope"], 1)
    ledger.record_decision(study, 6, "late", "undecided", n_runs=1, p_better=0.5)
    expected = [
        ResultRow(config_commit(base), np.mean(metrics["base", ()]), 1.5, "keep", "baseline"),
        ResultRow(config_commit(rope), np.mean(metrics["candidate", ("rope",)]), 2.0, "keep",
                  "rope p_better=0.970 n=4"),
        ResultRow(config_commit(gelu), np.mean(metrics["candidate", ("gelu", "rope")]), 3.0,
                  "discard", "gelu p_better=0.010 n=3"),
        ResultRow(config_commit(huge), 0.0, 0.0, "crash", "huge"),
        ResultRow(config_commit(pair), np.mean(metrics["candidate", ("a", "b", "rope")]), 0.0,
                  "discard", "a + b p_better=0.020 n=2"),
        ResultRow(config_commit(late), np.mean(metrics["candidate", ("late", "rope")]), 0.0,
                  "discard", "late (undecided) p_better=0.500 n=1"),
    ]
    return study, expected


def assert_rows_match(actual, expected, tolerance):
    assert [(r.commit, r.status, r.description) for r in actual] == [
        (r.commit, r.status, r.description) for r in expected]
    for got, want in zip(actual, expected):
        assert got.val_bpb == pytest.approx(want.val_bpb, abs=tolerance)
        assert got.memory_gb == pytest.approx(want.memory_gb, abs=0.05)


def test_export_round_trips_against_the_ledger(tmp_path):
    with Ledger(tmp_path / "study.db") as ledger:
        study, expected = populate(ledger, np.random.default_rng(5))
        derived = ledger.results_rows(study)
        assert_rows_match(derived, expected, 1e-12)
        written = ledger.export_results_tsv(study, tmp_path / "results.tsv")
    assert written == derived
    text = (tmp_path / "results.tsv").read_text()
    header, first = text.splitlines()[:2]
    assert header == "commit\tval_bpb\tmemory_gb\tstatus\tdescription"
    assert first.split("\t")[1:4] == [f"{expected[0].val_bpb:.6f}", "1.5", "keep"]
    assert_rows_match(parse_results_tsv(text), derived, 5e-7)


safe_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(st.lists(st.builds(
    ResultRow,
    commit=st.text("0123456789abcdef", min_size=7, max_size=7),
    val_bpb=st.floats(min_value=0, max_value=100),
    memory_gb=st.floats(min_value=0, max_value=200),
    status=st.sampled_from(["keep", "discard", "crash"]),
    description=safe_text,
), max_size=8))
def test_format_and_parse_round_trip_any_rows(rows):
    parsed = parse_results_tsv(format_results_tsv(rows))
    assert len(parsed) == len(rows)
    for got, want in zip(parsed, rows):
        assert (got.commit, got.status) == (want.commit, want.status)
        assert got.description == " ".join(want.description.split())
        assert got.val_bpb == pytest.approx(want.val_bpb, abs=5e-7)
        assert got.memory_gb == pytest.approx(want.memory_gb, abs=0.05)


@pytest.mark.parametrize("metric, column", [("val_bpb", "val_bpb"), ("loss", "loss"),
                                            ("top 1 error", "top_1_error")])
def test_the_metric_column_is_named_after_the_metric_and_reads_back(metric, column):
    rows = [ResultRow("abcdef0", 0.25, 0.0, "keep", "baseline")]
    text = format_results_tsv(rows, metric)
    assert text.splitlines()[0].split("\t") == ["commit", column, "memory_gb", "status",
                                                "description"]
    assert parse_results_tsv(text) == rows


def test_parse_refuses_a_bad_file():
    with pytest.raises(ValueError, match="header"):
        parse_results_tsv("commit,val_bpb\n")
    with pytest.raises(ValueError, match="header"):
        parse_results_tsv("commit\t\tmemory_gb\tstatus\tdescription\n")
    with pytest.raises(ValueError, match="line 2"):
        parse_results_tsv("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
                          "abc\t1.0\t0.0\tmaybe\tx\n")
