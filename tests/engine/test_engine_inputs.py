"""Values that once stalled a study or gave a traceback: each is refused up front (exit 2, with
nothing written) or becomes a recorded failure of one run or one proposal."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from engine.config import ConfigError, load_config
from engine.proposer import parse_hypotheses
from engine.study import Study, main

STUDY = """
[study]
name = {name}
seed = 1
budget_trials = 8
base_runs = 2

[env]
kind = "command"
command = "{command}"
metric = "loss"
base = {base}

[[hypotheses]]
name = "a"
category = "knobs"
change = {change}

[beliefs]
fit_pymc = false
"""
PRINTS_LOSS = f"{sys.executable} -c 'print(1.0)' {{x}}"


def write(tmp_path: Path, *, name='"inputs"', command=PRINTS_LOSS, base="{ x = 0 }",
          change="{ x = 1 }") -> Path:
    path = tmp_path / "inputs.toml"
    path.write_text(STUDY.format(name=name, command=command, base=base, change=change))
    return path


@pytest.mark.parametrize("field, value, message", [
    ("change", "{ seed = 4 }", "without seed (the engine sets it per run)"),
    ("change", '{ x = "a\\u0000b" }', "without seed"),
    ("change", '{ x = "' + "y" * 3_000_000 + '" }', "at most 1000 characters"),
    ("base", "{ x = 0, seed = 3 }", "[env] base"),
    ("name", '"' + "n" * 300 + '"', "at most 100 characters"),
])
def test_a_bad_value_is_refused_before_anything_is_written(tmp_path, capsys, field, value,
                                                           message):
    path = write(tmp_path, **{field: value})
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not (out / "study.db").exists()
    with pytest.raises(ConfigError):
        load_config(path)


@pytest.mark.parametrize("change, problem", [
    ({"x": math.nan}, "x = nan is not a finite number"),
    ({"seed": 2}, "sets `seed`"),
    ({"x": "a\x00b"}, "not printable text"),
    ({"x": [1, 2]}, "x = [1, 2] is not a finite number"),
])
def test_a_bad_proposed_change_is_refused_and_the_others_kept(change, problem):
    items = [{"name": "bad", "category": "k", "change": change},
             {"name": "good", "category": "k", "change": {"x": 2}}]
    proposal = parse_hypotheses(items, set(), limit=3)
    assert [h.name for h in proposal.accepted] == ["good"]
    assert problem in proposal.rejected[0]


def test_a_missing_program_is_a_failed_run_and_the_study_goes_on(tmp_path):
    path = write(tmp_path, command="/nonexistent/program {x}")
    study = Study(load_config(path, out_dir=str(tmp_path / "out")))
    result = study.run(write_report=False)
    assert result.status == "finished"
    runs = study.ledger.runs(study.study_id)
    assert runs and all(r["status"] == "crash" for r in runs)
    assert "could not start '/nonexistent/program'" in runs[0]["extra"]["stderr_tail"]
