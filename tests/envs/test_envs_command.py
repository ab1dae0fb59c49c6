"""The command env: placeholders, no-shell argument passing, metric parsing and failure paths."""
from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import pytest

from envs import CommandEnv, make_env
from tests.processes import is_running

PYTHON = shlex.quote(sys.executable)


def python_command(code: str, *arguments: str) -> str:
    """A command template running `python -c code arguments...` (code must contain no braces)."""
    return " ".join([PYTHON, "-c", shlex.quote(code), *arguments])


def test_placeholders_are_filled_from_config_and_seed(tmp_path):
    env = CommandEnv(python_command("import sys; "
                                    "print('loss:', float(sys.argv[1]) + int(sys.argv[2]))",
                                    "{lr}", "{seed}"),
                     "loss", base={"lr": 0.5}, base_dir=tmp_path)
    outcome = env.run({"lr": 0.25}, seed=3)
    assert outcome.status == "ok"
    assert outcome.metric == pytest.approx(3.25)
    assert outcome.seconds > 0


def test_last_metric_line_wins_and_other_names_are_ignored(tmp_path):
    code = "print('loss: 1.0'); print('val_loss: 7.0'); print('  loss :  2.5  '); print('done')"
    outcome = CommandEnv(python_command(code), "loss", base_dir=tmp_path).run({}, seed=0)
    assert (outcome.status, outcome.metric) == ("ok", 2.5)


def test_nonzero_exit_is_a_crash_even_with_a_metric(tmp_path):
    code = "import sys; print('loss: 1.0'); sys.stderr.write('boom trace'); sys.exit(3)"
    outcome = CommandEnv(python_command(code), "loss", base_dir=tmp_path).run({}, seed=0)
    assert outcome.status == "crash" and outcome.metric is None
    assert outcome.extra["returncode"] == 3
    assert "boom trace" in outcome.extra["stderr_tail"]


def test_missing_metric_is_a_crash_with_a_reason(tmp_path):
    outcome = CommandEnv(python_command("print('accuracy: 0.9')"), "loss",
                         base_dir=tmp_path).run({}, seed=0)
    assert outcome.status == "crash"
    assert "no 'loss: <value>' line" in outcome.extra["reason"]


def test_garbage_metric_is_a_crash_naming_the_value(tmp_path):
    code = "print('loss: 1.0'); print('loss: twelve')"
    outcome = CommandEnv(python_command(code), "loss", base_dir=tmp_path).run({}, seed=0)
    assert outcome.status == "crash"
    assert "'twelve'" in outcome.extra["reason"]


@pytest.mark.parametrize("printed", ["nan", "NaN", "inf", "-inf"])
def test_non_finite_metric_is_nan(tmp_path, printed):
    outcome = CommandEnv(python_command(f"print('loss: {printed}')"), "loss",
                         base_dir=tmp_path).run({}, seed=0)
    assert outcome.status == "nan" and outcome.metric is None


def test_hanging_command_times_out_and_its_children_are_killed(tmp_path):
    # The command starts a grandchild that would outlive it; the whole group must die.
    pid_file = tmp_path / "grandchild.pid"
    script = tmp_path / "hang.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    env = CommandEnv(f"{PYTHON} {shlex.quote(str(script))}", "loss", timeout_s=1.5,
                     base_dir=tmp_path)
    started = time.monotonic()
    outcome = env.run({}, seed=0)
    assert outcome.status == "timeout"
    assert time.monotonic() - started < 10
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while is_running(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_running(grandchild)


@pytest.mark.parametrize("hostile", ["x; rm -rf /", "a b 'c' \"d\"", "$(touch pwned)",
                                     "`touch pwned`", "{seed}"])
def test_a_value_arrives_as_one_literal_argument(tmp_path, hostile):
    record = tmp_path / "argv.json"
    script = tmp_path / "record.py"
    script.write_text(
        "import json, sys\n"
        f"open({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
        "print('loss: 1.0')\n"
    )
    command = (f"{PYTHON} {shlex.quote(str(script))} --value {{value}} "
               f"--seed={{seed}} 'two words {{value}}'")
    outcome = CommandEnv(command, "loss", base={"value": "safe"},
                         base_dir=tmp_path).run({"value": hostile}, seed=7)
    assert outcome.status == "ok"
    assert json.loads(record.read_text()) == ["--value", hostile, "--seed=7",
                                              f"two words {hostile}"]
    assert not (tmp_path / "pwned").exists()


def test_placeholder_missing_from_base_is_an_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"\['width'\]"):
        CommandEnv(f"{PYTHON} run.py --lr {{lr}} --width {{width}}", "loss", base={"lr": 1},
                   base_dir=tmp_path)


def test_placeholder_missing_from_a_run_config_is_an_error_naming_it(tmp_path):
    env = CommandEnv(f"{PYTHON} run.py --lr {{lr}}", "loss", base={"lr": 1}, base_dir=tmp_path)
    with pytest.raises(ValueError, match=r"\['lr'\]"):
        env.run({"other": 2}, seed=0)


@pytest.mark.parametrize("template, fragment", [
    ("python run.py {a.b}", "plain name"),
    ("python run.py {x[0]}", "plain name"),
    ("python run.py {}", "plain name"),
    ("python run.py {lr", "bad placeholder"),
    ("python run.py 'unclosed", "cannot be split"),
    ("   ", "empty"),
])
def test_bad_templates_are_rejected(tmp_path, template, fragment):
    with pytest.raises(ValueError, match=fragment):
        CommandEnv(template, "loss", base={"a": 1, "x": [1], "lr": 1}, base_dir=tmp_path)


def test_other_construction_mistakes_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="cwd"):
        CommandEnv(f"{PYTHON} -V", "loss", cwd="no/such/folder", base_dir=tmp_path)
    with pytest.raises(ValueError, match="seed"):
        CommandEnv(f"{PYTHON} -V", "loss", truth_command=f"{PYTHON} t.py {{seed}}",
                   base_dir=tmp_path)
    with pytest.raises(ValueError, match="seed"):
        CommandEnv(f"{PYTHON} -V", "loss", base={"seed": 1}, base_dir=tmp_path)
    with pytest.raises(ValueError, match="metric"):
        CommandEnv(f"{PYTHON} -V", "", base_dir=tmp_path)


def test_truth_command_gives_the_noise_free_value(tmp_path):
    env = CommandEnv(python_command("print('loss: 0')"), "loss", base={"lr": 2.0},
                     base_dir=tmp_path, truth_command=python_command(
                         "import sys; print('loss:', 3 * float(sys.argv[1]))", "{lr}"))
    assert env.truth({"lr": 2.0}) == pytest.approx(6.0)
    assert CommandEnv(python_command("print(1)"), "loss", base_dir=tmp_path).truth({}) is None


def test_make_env_resolves_cwd_against_base_dir_and_fingerprints_the_task(tmp_path):
    (tmp_path / "work").mkdir()
    section = {"kind": "command",
               "command": python_command("import os; print('loss:', len(os.listdir()))"),
               "metric": "loss", "cwd": "work", "base": {}, "timeout_s": 30.0, "direction": "lower",
               "truth_command": ""}
    env = make_env(section, base_dir=tmp_path)
    assert env.cwd == (tmp_path / "work").resolve()
    (tmp_path / "work" / "a.txt").write_text("")
    assert env.run({}, seed=0).metric == 1.0
    assert env.fingerprint() == make_env(section, base_dir=tmp_path).fingerprint()
    assert env.fingerprint() != make_env({**section, "base": {"lr": 1}},
                                         base_dir=tmp_path).fingerprint()


@pytest.mark.parametrize("printed, status", [("1e308", "nan"), ("-2e101", "nan"),
                                             ("1_0.5", "crash"), ("0x1p3", "crash"),
                                             ("\u0661\u0660", "crash"),
                                             ("1e100", "ok"), ("-.5e-3", "ok")])
def test_a_metric_is_a_plain_decimal_within_the_limit(tmp_path, printed, status):
    """An exploding value is a failed run, not a measurement that would overflow the posterior;
    Python's own float() would read "1_0.5" as 10.5."""
    outcome = CommandEnv(python_command(f"print('loss: {printed}')"), "loss",
                         base_dir=tmp_path).run({}, seed=0)
    assert outcome.status == status
    assert outcome.metric == (float(printed) if status == "ok" else None)
    if status != "ok":
        assert repr(printed) in outcome.extra["reason"]


def recording_command(tmp_path: Path, arguments: str) -> tuple[str, Path]:
    """A template running a script that records its argv and prints a metric."""
    record, script = tmp_path / "argv.json", tmp_path / "record.py"
    script.write_text("import json, sys\n"
                      f"open({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
                      "print('loss: 1.0')\n")
    return f"{PYTHON} {shlex.quote(str(script))} {arguments}", record


def test_a_value_that_would_be_an_option_is_refused_before_it_runs(tmp_path):
    command, record = recording_command(tmp_path, "{target}")
    env = CommandEnv(command, "loss", base={"target": "data.txt"}, base_dir=tmp_path)
    problem = env.change_problem({"target": "--out=report.txt"})
    assert problem is not None and "{target:opt}" in problem
    outcome = env.run({"target": "--out=report.txt"}, seed=0)
    assert outcome.status == "refused" and not record.exists()
    with pytest.raises(ValueError, match="begin an argument with '-'"):
        CommandEnv(command, "loss", base={"target": "-x"}, base_dir=tmp_path)


@pytest.mark.parametrize("arguments", ["--shift {shift:opt}", "--shift={shift}"])
def test_an_option_value_may_start_with_a_dash_where_the_template_says_so(tmp_path, arguments):
    command, record = recording_command(tmp_path, arguments)
    env = CommandEnv(command, "loss", base={"shift": 1}, base_dir=tmp_path)
    assert env.change_problem({"shift": -0.5}) is None
    assert env.run({"shift": -0.5}, seed=0).status == "ok"
    assert json.loads(record.read_text())[-1].endswith("-0.5")


def test_a_change_of_a_key_the_command_does_not_use_is_refused(tmp_path):
    command, _ = recording_command(tmp_path, "--lr {lr} {seed}")
    env = CommandEnv(command, "loss", base={"lr": 0.1}, base_dir=tmp_path)
    assert env.change_problem({"lr": 0.2}) is None
    problem = env.change_problem({"learning_rate": 0.2})
    assert "'learning_rate' is no placeholder" in problem and "lr" in problem
    assert env.mutable_knobs() == ("lr",)


@pytest.mark.parametrize("shell", ["sh -c", "/bin/bash -ec", "env sh -c", "bash -e -c",
                                   "busybox sh -c", "bash --norc -c"])
def test_a_template_that_runs_a_shell_is_warned_about(tmp_path, shell):
    env = CommandEnv(f"{shell} 'echo loss: {{x}}'", "loss", base={"x": 1}, base_dir=tmp_path)
    assert any("runs a shell" in warning for warning in env.warnings())
    quiet = CommandEnv(python_command("print('loss: 1')"), "loss", base_dir=tmp_path)
    assert quiet.warnings() == []
