"""Designed experiments end to end: screening blocks and confirmation through the real engine,
with a command env whose truth the test knows."""

import json
import re
import sys

from engine.config import load_config
from engine.study import Study
from policies.types import move_members
from tests.engine.test_engine_study import (
    COMMAND,
    FAKE_EXPERIMENT,
    SYNERGY,
    SYNERGY_EXPERIMENT,
    check_outputs_agree,
    ledger_rows,
    write,
)


def design_study(tmp_path, script_text, config_text, budget, **policy):
    """A study of `config_text` with the design policy (and `policy` settings) on `budget` runs."""
    script = write(tmp_path / "experiment.py", script_text)
    text = config_text.format(python=sys.executable, script=script, budget=budget, sleep=0.0)
    settings = "".join(f"{key} = {value}\n" for key, value in policy.items())
    # both configs name a one-at-a-time policy of their own
    text = re.sub(r'kind = "(efe|voi)"', f'kind = "design"\n{settings}', text)
    config = write(tmp_path / "design.toml", text)
    cfg = load_config(config, out_dir=str(tmp_path / "out"))
    return cfg, Study(cfg)


def test_a_synergy_is_kept_only_with_its_partner_and_replays_exactly(tmp_path):
    """a and b are each 0.4 worse alone and 1.2 better together; c is worse. The screen sees
    them through every run, and the confirmation judges the configuration that is kept: a is never
    kept without b. A study reopened from its ledger is in the same state."""
    cfg, study = design_study(tmp_path, SYNERGY_EXPERIMENT, SYNERGY, 60)
    study.run()
    decisions = study.ledger.decisions(study.study_id)
    for d in decisions:
        if d["verdict"] == "keep":
            assert not ({"a", "b"} & move_members(d["hypothesis"])) or \
                {"a", "b"} <= move_members(d["hypothesis"]) | study.incumbent
    assert {"a", "b"} <= study.incumbent and "c" not in study.incumbent
    plans = ledger_rows(tmp_path / "out" / "study.db", "plans")
    kinds = [json.loads(p["action_json"])["kind"] for p in plans]
    assert "design" in kinds and "run" in kinds  # screening, then confirmation
    runs = ledger_rows(tmp_path / "out" / "study.db", "runs")
    design_steps = {p["step"] for p, kind in zip(plans, kinds) if kind == "design"}
    applied = [set(json.loads(r["hypotheses_json"])) for r in runs if r["step"] in design_steps]
    assert any(len(c) >= 2 for c in applied)  # several changes in one run
    replayed = Study(cfg)
    assert (replayed.incumbent, replayed.kept, replayed.closed) == (
        study.incumbent, study.kept, study.closed)
    assert replayed.view() == study.view()
    check_outputs_agree(tmp_path / "out")


def test_a_change_that_always_crashes_is_left_out_and_blamed_alone(tmp_path):
    """`crashes` makes every run that applies it fail. The design drops it once every run of it
    has failed, names it, and never keeps it; the 5-sd `boost` is still found."""
    cfg, study = design_study(tmp_path, FAKE_EXPERIMENT, COMMAND, 40)
    result = study.run(write_report=False)
    assert "boost" in result.kept and "crashes" not in result.kept
    plans = [json.loads(p["action_json"]) for p in
             ledger_rows(tmp_path / "out" / "study.db", "plans")]
    assert any("every run failed: crashes" in p["reason"] for p in plans)
    runs = ledger_rows(tmp_path / "out" / "study.db", "runs")
    crashed = [r for r in runs if r["status"] == "crash"]
    assert crashed and all("crashes" in json.loads(r["hypotheses_json"]) for r in crashed)
    flagged = next(i for i, p in enumerate(plans) if "every run failed" in p["reason"])
    later = [p for p in plans[flagged:] if p["kind"] == "design"]
    assert all("crashes" not in config for p in later for config in p["configs"])


def test_one_change_per_run_when_capped(tmp_path):
    cfg, study = design_study(tmp_path, FAKE_EXPERIMENT, COMMAND, 24, max_changes_per_run=1)
    study.run(write_report=False)
    runs = ledger_rows(tmp_path / "out" / "study.db", "runs")
    incumbent_free = [set(json.loads(r["hypotheses_json"])) for r in runs]
    kept = set(study.kept)
    assert all(len(applied - kept) <= 1 for applied in incumbent_free)


CRASH_TOGETHER = """
import random, sys
args = dict(a.split("=", 1) for a in sys.argv[1:])
a, b, c = (int(args[k]) for k in "abc")
if a and b:
    sys.exit(3)
rng = random.Random(int(args["seed"]))
print("loss:", 5.0 - 0.8 * a - 0.8 * b + rng.gauss(0, 0.15))
"""


def test_a_set_whose_confirmation_crashes_is_shrunk_not_retried(tmp_path):
    """a and b each help, but crash together. Once the confirmation of a + b has failed, the
    engine does not confirm it again: it confirms less, and keeps one of them."""
    cfg, study = design_study(tmp_path, CRASH_TOGETHER, SYNERGY, 60)
    study.run(write_report=False)
    plans = [json.loads(p["action_json"]) for p in
             ledger_rows(tmp_path / "out" / "study.db", "plans")]
    confirmations = [p["hypothesis"] for p in plans if p["kind"] == "run"]
    assert confirmations.count("a + b") <= 1
    assert len(study.incumbent & {"a", "b"}) == 1


def test_seed_blocks_run_each_at_one_seed_that_none_of_their_configurations_has_run_at(tmp_path):
    """The synergy experiment's noise is all seed luck (random.Random(seed)), so screening runs
    in seed blocks: the runs of one label share a seed, two labels of a step never do, and no
    configuration runs twice at one seed."""
    cfg, study = design_study(tmp_path, SYNERGY_EXPERIMENT, SYNERGY, 40, seed_blocks="true")
    study.run()
    plans = [json.loads(p["action_json"])
             for p in ledger_rows(tmp_path / "out" / "study.db", "plans")]
    blocked = [p for p in plans if p.get("blocks")]
    assert blocked
    for plan in blocked:
        seeds = {label: {r["seed"] for r, b in zip(plan["runs"], plan["blocks"]) if b == label}
                 for label in plan["blocks"]}
        assert all(len(s) == 1 for s in seeds.values())
        assert len(set.union(*seeds.values())) == len(seeds)
    runs = ledger_rows(tmp_path / "out" / "study.db", "runs")
    at_seed = [(r["seed"], frozenset(json.loads(r["hypotheses_json"]))) for r in runs]
    assert len(set(at_seed)) == len(at_seed)
