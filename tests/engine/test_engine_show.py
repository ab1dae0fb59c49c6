"""engine.show: a study read from its folder alone, read-only, as text, JSON or a comparison."""
from __future__ import annotations

import hashlib
import json
import random

import engine
from engine.cli import main as cli_main
from engine.show import main, read_study

HYPOTHESES = [{"name": "a_on", "change": {"a": 1}}, {"name": "b_on", "change": {"b": 1}}]


def objective(config, seed):
    return 1.0 - 0.6 * config["a"] + random.Random(seed).gauss(0.0, 0.3)


def finished(tmp_path, name, policy):
    study = engine.create_study(objective, hypotheses=HYPOTHESES, base={"a": 0, "b": 0},
                                name=name, out_dir=tmp_path / name,
                                study={"budget_trials": 16, "seed": 2},
                                policy={"kind": policy}, beliefs={"fit_pymc": False})
    study.run(write_report=False)
    return study


def test_show_reports_what_the_ledger_holds_and_writes_nothing(tmp_path):
    study = finished(tmp_path, "voi", "voi")
    ledger = tmp_path / "voi" / "study.db"
    before = hashlib.sha256(ledger.read_bytes()).hexdigest()
    shown = read_study(tmp_path / "voi")
    assert hashlib.sha256(ledger.read_bytes()).hexdigest() == before
    records = study.records()
    assert shown["budget"]["runs_used"] == len(records) == study.runs_used
    assert shown["budget"]["budget_trials"] == 16 and shown["status"] == "finished"
    assert shown["incumbent"]["kept"] == study.kept
    latest = {d["hypothesis"]: d for d in study.ledger.decisions(study.study_id)}
    for h in shown["hypotheses"]:
        assert h["runs"] == sum(r.role == "candidate" and h["name"] in r.hypotheses
                                for r in records)
        if h["name"] in latest:
            assert (h["verdict"], h["p_better"]) == (latest[h["name"]]["verdict"],
                                                     latest[h["name"]]["p_better"])


def test_the_command_prints_text_json_and_a_comparison(tmp_path, capsys):
    finished(tmp_path, "voi", "voi")
    finished(tmp_path, "ratchet", "ratchet")
    assert main([str(tmp_path / "voi")]) == 0
    text = capsys.readouterr().out
    assert "16 of 16 runs" in text and "a_on" in text and "b_on" in text
    assert cli_main(["show", str(tmp_path / "voi"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(
        json.dumps(read_study(tmp_path / "voi")))
    assert main([str(tmp_path / "voi"), "--compare", str(tmp_path / "ratchet")]) == 0
    compared = capsys.readouterr().out
    assert "voi" in compared and "ratchet" in compared and "a_on" in compared


def test_a_folder_without_a_study_exits_2_saying_so(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no study.db" in capsys.readouterr().err


def test_a_study_in_flight_can_be_shown(tmp_path):
    study = engine.create_study(None, hypotheses=HYPOTHESES, base={"a": 0, "b": 0},
                                out_dir=tmp_path / "live", beliefs={"fit_pymc": False})
    run = study.ask()  # the folder is locked by ask/tell now
    study.tell(run, 1.0)
    shown = read_study(tmp_path / "live")
    assert shown["status"] == "running" and shown["budget"]["runs_used"] == 1
    study.close()


def test_a_hypothesis_decided_only_in_a_set_shows_the_sets_decision(tmp_path, capsys):
    """The design policy confirms its screened changes together: each member shows that
    decision (verdict, P(better), interval), named as the set's, from the ledger."""
    def two_real(config, seed):
        return (1.0 - 0.8 * config["a"] - 0.8 * config["b"]
                + random.Random(seed).gauss(0.0, 0.2))

    study = engine.create_study(two_real, hypotheses=[
        {"name": f"{k}_on", "change": {k: 1}} for k in "abcd"],
        base=dict.fromkeys("abcd", 0), name="design", out_dir=tmp_path / "design",
        study={"budget_trials": 30, "seed": 2}, policy={"kind": "design"},
        beliefs={"fit_pymc": False})
    study.run(write_report=False)
    sets = [d for d in study.ledger.decisions(study.study_id) if " + " in d["hypothesis"]]
    assert sets, "the design study confirmed no set"
    last = sets[-1]
    shown = {h["name"]: h for h in read_study(tmp_path / "design")["hypotheses"]}
    for name in last["hypothesis"].split(" + "):
        assert shown[name]["via"] == last["hypothesis"]
        assert (shown[name]["verdict"], shown[name]["p_better"]) == (last["verdict"],
                                                                     last["p_better"])
    assert main([str(tmp_path / "design")]) == 0
    assert f"(as {last['hypothesis']})" in capsys.readouterr().out
