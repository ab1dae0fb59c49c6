"""Values that once stalled a study or gave a traceback: each is refused up front (exit 2, with
nothing written) or becomes a recorded failure of one run or one proposal."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from engine.config import ConfigError, load_config
from engine.progress import Progress
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


GPT_STUDY = """
[study]
seed = 1
budget_trials = 8

[env]
kind = "gpt"
steps = 3
base = {{ n_layer = 1, n_embd = 32, n_head = 2 }}

[[hypotheses]]
name = "a"
change = {change}

[beliefs]
fit_pymc = false
"""


@pytest.mark.parametrize("change, message", [
    ('{ data = "leak.txt" }', "'data' is pinned: it sets the training data"),
    ("{ untimed_steps = 100000 }", "'untimed_steps' is pinned: it sets the budget"),
    ("{ matix_lr = 0.1 }", "did you mean 'matrix_lr'?"),
])
def test_a_change_the_env_does_not_allow_is_refused_before_anything_is_written(
        tmp_path, capsys, change, message):
    path = tmp_path / "gpt.toml"
    path.write_text(GPT_STUDY.format(change=change))
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("setting, message", [
    ({"change": "{ y = 1 }"}, "'y' is no placeholder of [env] command"),
    ({"change": '{ x = "--out=report.txt" }'}, "would begin an argument with '-'"),
    ({"command": f"{sys.executable} -c 'print(1)' {{x}} --cwd", "base": "{ x = 0 }"}, None),
])
def test_a_command_change_the_run_would_ignore_or_misread_is_refused(tmp_path, capsys, setting,
                                                                     message):
    if message is None:  # a cwd that does not exist: refused up front, nothing written
        path = write(tmp_path)
        path.write_text(path.read_text().replace('metric = "loss"',
                                                 'metric = "loss"\ncwd = "no/such/dir"'))
        message = "cwd = 'no/such/dir' is not a directory"
    else:
        path = write(tmp_path, **setting)
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_shell_template_is_warned_about_even_when_quiet(tmp_path, capsys):
    path = write(tmp_path, command="sh -c 'echo loss: {x}'")
    Study(load_config(path, out_dir=str(tmp_path / "out")))
    assert "warning: [env] command runs a shell (sh -c)" in capsys.readouterr().err


def test_a_failed_runs_stderr_is_shown_and_kept(tmp_path, capsys):
    script = tmp_path / "refuses.py"
    script.write_text("import sys\nprint('loading', file=sys.stderr)\n"
                      "sys.exit('unknown key matix_lr')\n")
    path = write(tmp_path, command=f"{sys.executable} {script} {{x}}")
    study = Study(load_config(path, out_dir=str(tmp_path / "out")),
                  progress=Progress(enabled=True))
    study.run(write_report=False)
    err = capsys.readouterr().err
    assert "crash | exited with status 1 | stderr: unknown key matix_lr" in err
    runs = study.ledger.runs(study.study_id)
    assert "unknown key matix_lr" in runs[0]["extra"]["stderr_tail"]


def test_a_base_that_trains_on_the_validation_text_is_refused_before_any_run(
        tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRAIN_DATA_DIR", str(tmp_path / "cache"))
    documents = [f"line {i}: the quick brown fox, {i * 7919}" for i in range(300)]
    (tmp_path / "leak.txt").write_text("\n\n".join(documents[:40] * 3 + documents[40:]))
    path = tmp_path / "gpt.toml"
    path.write_text(GPT_STUDY.format(change="{ matrix_lr = 0.1 }").replace(
        "n_head = 2 }", 'n_head = 2, data = "leak.txt", eval_tokens = 1024, eval_seq_len = 32 }'))
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out), "--quiet"]) == 2
    assert "the trainer refuses its data: REFUSED: the training data holds validation" in \
        capsys.readouterr().err
    assert not out.exists()
