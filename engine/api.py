"""The Python API for a notebook or a script: a study of a Python objective built from
arguments, Optuna's `create_study`; the Study it returns runs (`run`) or is driven run by run
(`ask` and `tell`).

    study = create_study(objective, hypotheses=[...], base={...}, direction="minimize")
    study.run()                      # objective(config, seed) -> metric, called per run
    with create_study(None, hypotheses=[...], base={...}) as study:  # runs made elsewhere
        while (run := study.ask()) is not None:
            study.tell(run, train_somewhere(run.config, run.seed))
    study.records(), study.to_dataframe()
"""
from __future__ import annotations

from pathlib import Path

from engine.config import parse_config
from engine.study import Study

__all__ = ["create_study"]


def create_study(objective=None, *, hypotheses, base=None, direction: str = "lower",
                 metric: str = "value", name: str = "study", out_dir: str | Path | None = None,
                 **sections) -> Study:
    """A study of a Python objective, built from arguments rather than a TOML file (Optuna's
    create_study); calling it again with the same arguments resumes the study in `out_dir`.

    Args:
        objective: `objective(config, seed) -> metric`, called once per run in this process; a
            returned NaN is a "nan" run and an exception a "crash" run. None: the runs are made
            elsewhere and told (`Study.ask` and `Study.tell`).
        hypotheses: the changes to test, each a dict as a [[hypotheses]] block has it
            (name, change, and optionally category and description).
        base: the objective's knobs and their default values; a hypothesis may change only these.
        direction: "lower"/"minimize" or "higher"/"maximize".
        metric: the metric's name in the report.
        name: the study's name.
        out_dir: the study folder (default studies/NAME, relative to the current directory).
        **sections: any other config section as a dict, e.g. study={"budget_trials": 60},
            policy={"kind": "voi"}, decision={"threshold": 0.9}.

    Returns:
        The Study (nothing has run yet). ConfigError lists every bad argument.
    """
    study = dict(sections.pop("study", {}))
    study.setdefault("name", name)
    if out_dir is not None:
        study["out_dir"] = str(out_dir)
    raw = {"study": study, "env": {"kind": "python", "base": dict(base or {}),
                                   "direction": direction, "metric": metric},
           "hypotheses": [dict(h) for h in hypotheses], **sections}
    cfg = parse_config(raw, source="<python>")
    return Study(cfg, objective=objective,
                 resume_hint=f"create_study(..., name={study['name']!r}) again, then .run()")
