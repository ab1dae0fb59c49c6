"""A study: a thin handle on its ledger, and the command that runs one.

    python -m engine.study CONFIG.toml [--out DIR] [--quiet | --verbose] [--rewrite]

From Python, `engine.create_study` (engine.api) builds one from arguments; `Study.run`,
`Study.ask` and `Study.tell` drive it and `Study.records` reads it.

The ledger (SQLite) is the state. Opening a study builds its parts from the config (env, policy,
runner, proposer, memories) and replays the ledger into a `StudyState` (engine.state); running
it hands the loop (engine.loop) the core's commands (engine.core). Re-running the same command
replays the ledger and carries on from the first unconcluded step, so a study killed at any
instant loses no finished run and runs nothing twice.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from threadpoolctl import threadpool_limits

from beliefs import BeliefPrior
from engine.asktell import AskedRun, AskTell
from engine.config import (
    ConfigError,
    StudyConfig,
    as_made,
    config_record,
    load_config,
    stored_changes,
)
from engine.folder import (
    FolderError,
    FolderLock,
    check_name,
    check_runs,
    read_marker,
    run_owner,
)
from engine.insights import source_name
from engine.loop import StudyResult, run_study
from engine.progress import Progress
from engine.proposer import BuiltinProposer, Hypothesis, LLMProposer
from engine.records import StepDecision, StudyRun
from engine.rules import config_for, replay, view
from engine.runners import make_runner
from engine.state import StudyRules, StudyState
from engine.summary import StudySummary, summarise
from engine.validate import change_problems
from envs import Env, make_env
from memory import Ledger, StudyMismatchError, priors_from_insights
from policies import StudyView, make_policy
from policies.types import ClosedTrial

__all__ = ["AskedRun", "Study", "StudyResult", "StudyRun", "main"]


class Study:
    """One study's parts and its current state (replayed from the ledger when opened).

    Args:
        cfg: the validated config (engine.config.load_config or parse_config).
        objective: for a python env, the callable `objective(config, seed) -> metric` that
            makes a run; none for a study whose runs are told (`ask` and `tell`).
        progress: what to tell the person watching (nothing by default).
        resume_hint: the command that resumes the study, for the interruption message.
    """

    def __init__(self, cfg: StudyConfig, *, objective=None, progress: Progress | None = None,
                 resume_hint: str | None = None):
        self.cfg = cfg
        self._objective = objective
        self._driver: AskTell | None = None
        self.progress = progress or Progress(enabled=False)
        self.resume_hint = (resume_hint or
                            f"python -m engine.study {cfg.source_path} --out {cfg.study.out_dir}")
        self.env = self._make_env()  # before the folder: a refused env leaves nothing behind
        self.out_dir = Path(cfg.study.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.env.owner = run_owner(self.out_dir)
        self.ledger = Ledger(self.out_dir / "study.db")
        params = {k: v for k, v in dataclasses.asdict(cfg.policy).items() if k != "kind"}
        policy = make_policy(cfg.policy.kind, keep_rule=cfg.decision.keep_rule(), **params)
        self.rules = StudyRules.from_config(cfg, policy, patch_problem=self.env.patch_problem)
        self.runner = make_runner(cfg.runner)
        self.shared_memory = Ledger(Path(cfg.memory.path)) if cfg.memory.path else None
        self.proposer = self._make_proposer()
        with FolderLock(self.out_dir):  # no other process checks or writes meanwhile
            self.check_folder()
            existing = self.ledger.find_study(cfg.study.name)
            if existing is not None:  # a resume keeps the model the study was made with
                self.cfg = cfg = as_made(cfg, self.ledger.study(existing)["config"])
            self.study_id = self._open_study(self.ledger, cfg.study.name)
        self.finished_at_open = self.ledger.study(self.study_id)["status"] == "finished"
        self.shared_study_id = None
        if self.shared_memory is not None:  # the long-term memory keeps its own copy of each step
            self.shared_study_id = self._open_study(self.shared_memory,
                                                    source_name(cfg.study.name, self.out_dir))
        fresh = StudyState.start(self.proposer.initial(), self._prior(), cfg.beliefs.interactions,
                                 cfg.beliefs.seed_effects, cfg.beliefs.device_effects)
        with threadpool_limits(limits=1, user_api="blas"):  # as run_study does (engine.loop)
            self.state = replay(self.ledger, self.study_id, fresh, self.rules)
        self.runs_at_open = self.state.runs_used
        pinned = next((r["eval_hash"] for r in self.ledger.runs(self.study_id)
                       if r["status"] == "ok" and r["eval_hash"]), None)
        if pinned and hasattr(self.env, "pinned_eval_hash"):
            self.env.pinned_eval_hash = pinned

    def run(self, *, write_report: bool = True, rewrite: bool = False,
            handle_signals: bool = False) -> StudyResult:
        """Run (or resume) until a budget is spent, the policy stops, or everything is decided.

        `write_report=False` (the benchmark) skips plots and the PyMC fit; the ledger is complete.
        A study that was finished when opened and made no run since keeps the outputs it wrote
        (no refit, no rewrite) unless `rewrite`. `handle_signals` (the command line's): SIGTERM
        stops the study cleanly too, as Ctrl-C always does.
        """
        self.close()  # a study part-driven by ask/tell hands the folder to the loop
        return run_study(self, write_report=write_report, rewrite=rewrite,
                         handle_signals=handle_signals)

    # ----------------------------------------------------------------------- ask and tell
    def ask(self) -> AskedRun | None:
        """The next run to make elsewhere, or None: when the study has stopped (`stop_reason`
        says why) or when every run of the steps in flight is asked and not all are told. The
        study's folder is locked from the first ask until it stops or `close`."""
        return self._ask_tell().ask()

    def tell(self, run: AskedRun, metric: float | None = None, *, status: str | None = None,
             seconds: float | None = None) -> None:
        """Record an asked run's `metric`, or a failed run's `status` (crash, nan, timeout,
        refused) with no metric; the oldest step concludes once its runs are all told, and the
        next steps are planned then."""
        self._ask_tell().tell(run, metric, status=status, seconds=seconds)

    @property
    def stop_reason(self) -> str | None:
        """Why the study stopped (ask/tell), or None while it goes on."""
        result = self._driver.result if self._driver is not None else None
        return None if result is None else result.stop_reason

    def close(self) -> None:
        """Release the folder's lock held by ask/tell; untold runs are asked for again later."""
        if self._driver is not None:
            self._driver.close()
            self._driver = None

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _ask_tell(self) -> AskTell:
        if self._driver is None:
            self._driver = AskTell(self)
        return self._driver

    # ------------------------------------------------------------------------ the records
    def records(self) -> list[StudyRun]:
        """Every run in the ledger, by step and slot, as frozen records."""
        return [StudyRun.from_row(row) for row in self.ledger.runs(self.study_id)]

    def to_dataframe(self):
        """The runs as a pandas DataFrame, one row per run (needs pandas)."""
        try:
            import pandas
        except ImportError:
            raise ImportError("Study.to_dataframe needs pandas (pip install pandas); "
                              "Study.records() gives the same runs without it") from None
        return pandas.DataFrame([dataclasses.asdict(run) for run in self.records()])

    # ------------------------------------------------------------------ what the state says
    @property
    def sign(self) -> float:
        """+1 when the metric is lower-is-better, -1 when higher is (the engine's values are
        sign * metric)."""
        return self.rules.sign

    @property
    def hypotheses(self) -> dict[str, Hypothesis]:
        return dict(self.state.hypotheses)

    @property
    def incumbent(self) -> frozenset[str]:
        return self.state.incumbent

    @property
    def kept(self) -> list[str]:
        return list(self.state.kept)

    @property
    def closed(self) -> dict[str, ClosedTrial]:
        return dict(self.state.closed)

    @property
    def runs_used(self) -> int:
        return self.state.runs_used

    def view(self) -> StudyView:
        """What the policy sees now."""
        return view(self.state, self.rules)

    def config_for(self, applied: frozenset[str]) -> dict:
        """The base config with each applied hypothesis's change merged in, in declaration order."""
        return config_for(self.state, self.rules, applied)

    def summary(self) -> StudySummary:
        """The findings so far, in the metric's own units."""
        budget = self.cfg.env.get("time_budget") if self.cfg.env["kind"] == "gpt" else None
        return summarise(
            self.state, self.rules, name=self.cfg.study.name, out_dir=self.out_dir,
            env_kind=self.cfg.env["kind"], backend=self.env.backend,
            env_fingerprint=self.env.fingerprint(), metric=self.cfg.env["metric"],
            time_budget=budget, policy=self.cfg.policy.kind,
            decisions=tuple(map(StepDecision.from_json, self.ledger.decisions(self.study_id))),
            steps=tuple(self.ledger.steps(self.study_id)),
            runs=tuple(self.ledger.runs(self.study_id)),
            proposer_calls=tuple(self.ledger.proposer_calls(self.study_id)),
            proposals=tuple(self.ledger.proposals(self.study_id)))

    # ----------------------------------------------------------------------------- set-up
    def _make_env(self) -> Env:
        """The env, refusing (ConfigError) a set-up it rejects, any hypothesis change it does
        not allow and data no run could use (`Env.preflight_problem`); its warnings are printed
        even when quiet."""
        source = str(self.cfg.source_path)
        try:
            env = make_env(self.cfg.env, base_dir=self.cfg.source_path.parent,
                           objective=self._objective)
        except ValueError as exc:
            raise ConfigError(source, [str(exc)]) from None
        problems = change_problems(self.cfg.hypotheses, env.change_problem, env.patch_problem)
        preflight = None if problems else env.preflight_problem()
        problems += [preflight] if preflight else []
        if problems:
            raise ConfigError(source, problems)
        for warning in env.warnings():
            self.progress.say(f"warning: {warning}", always=True)
        return env

    def _make_proposer(self) -> BuiltinProposer:
        specs = list(self.cfg.hypotheses)  # config.parse_config builds them as Hypothesis
        if not specs:  # synthetic worlds define their own hypothesis space
            specs = [Hypothesis(h["name"], h["category"], dict(h["change"]),
                                h.get("description", "")) for h in self.env.hypotheses() or []]
        if self.cfg.proposer.kind == "llm":
            return LLMProposer(specs, model=self.cfg.proposer.model,
                               max_new=self.cfg.proposer.max_new, every=self.cfg.proposer.every,
                               mock_response=self.cfg.proposer.mock_response,
                               base_config=dict(self.rules.base_config),
                               knobs=self.env.mutable_knobs(),
                               change_problem=self.env.change_problem,
                               max_calls=self.cfg.proposer.max_calls,
                               max_cost_usd=self.cfg.proposer.max_cost_usd,
                               api_base=self.cfg.proposer.api_base)
        return BuiltinProposer(specs)

    def check_folder(self) -> None:
        """Refuse another study's folder, and a ledger that lost what its marker counts
        (engine.folder); run again by the loop once it holds the folder's lock."""
        marker, name = read_marker(self.out_dir), self.cfg.study.name
        check_name(self.out_dir, marker, name, next(iter(self.ledger.study_names()), None))
        existing = self.ledger.find_study(name)
        runs = 0 if existing is None else len(self.ledger.runs(existing))
        check_runs(self.out_dir, marker, existing, runs)

    def _open_study(self, ledger: Ledger, name: str) -> int:
        """Study `name` in `ledger` (the folder's, or the shared memory's copy), created or
        resumed; a different config is refused naming what changed."""
        try:
            return ledger.start_study(name, config_record(self.cfg, self._patch_base()),
                                      self.env.fingerprint(),
                                      self.cfg.study.seed, same_config=self._same_config)
        except StudyMismatchError as exc:
            what = ("; ".join(stored_changes(json.loads(exc.stored), self.cfg,
                                             self._patch_base()))
                    if exc.column == "config_json" else str(exc))
            raise ConfigError(str(self.cfg.source_path), [
                f"{ledger.path} holds study {name!r} made with a different config ({what}); "
                "resume with the original config or choose another --out"]) from None

    def _same_config(self, stored: dict) -> bool:
        """Whether a stored config record describes this study (engine.config.stored_changes)."""
        return not stored_changes(stored, self.cfg, self._patch_base())

    def _patch_base(self) -> str:
        """The hash of the code the study's patches apply to, where it may have patches (from
        the config or an LLM): "" otherwise, so other studies resume on edited code as before."""
        may_patch = any(h.patch for h in self.cfg.hypotheses) or self.cfg.proposer.kind == "llm"
        return self.env.patch_base() if may_patch else ""

    def _prior(self) -> BeliefPrior:
        """Default priors, or priors recalled from the shared memory of other studies on this
        env, pooled (for the hypotheses known at the start).

        The study's own insights are no evidence for it, and the priors it first opened with are
        recorded in its ledger and reused on every re-run or resume: its replay stays the one the
        live study made, whatever the memory learnt since (its own recall's reinforcement too)."""
        effect_priors: dict[str, tuple[float, float]] = {}
        if self.shared_memory is not None and self.cfg.memory.transfer:
            recorded = self.ledger.study_priors(self.study_id)
            if recorded is None:
                decay, memory = self.cfg.memory.decay, self.shared_memory
                recalled = memory.recall_insights(
                    env_fingerprint=self.env.fingerprint(), decay=decay,
                    exclude_source=source_name(self.cfg.study.name, self.out_dir))
                priors = priors_from_insights(recalled, t_now=memory.experiment_time(),
                                              decay=decay)
                known = {h.name for h in self.proposer.initial()}
                recorded = self.ledger.record_study_priors(self.study_id, {
                    name: (self.rules.sign * mean, sd)
                    for name, (mean, sd) in priors.items() if name in known})
            effect_priors = recorded
        return BeliefPrior(effect_sd=self.cfg.beliefs.prior_effect_sd,
                           noise_df=self.cfg.beliefs.prior_noise_df, effect_priors=effect_priors,
                           null_share=self.cfg.beliefs.null_share,
                           seed_sd=self.cfg.beliefs.prior_seed_sd)


def main(argv: list[str] | None = None, invoked_as: str = "python -m engine.study") -> int:
    """The CLI; `invoked_as` is the command the resume hint repeats (engine.cli passes its own)."""
    parser = argparse.ArgumentParser(prog="python -m engine.study",
                                     description="Run (or resume) a study described by a TOML "
                                                 "config.")
    parser.add_argument("config", help="the study's TOML config")
    parser.add_argument("--out", help="the study folder (overrides [study] out_dir)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--verbose", action="store_true",
                        help="show the numerical libraries' own messages too (PyTensor, PyMC)")
    parser.add_argument("--rewrite", action="store_true",
                        help="write a finished study's outputs again (refits PyMC)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, out_dir=args.out)
        hint = f"{invoked_as} {args.config}" + (f" --out {args.out}" if args.out else "")
        progress = Progress(enabled=not args.quiet, live=sys.stderr.isatty(),
                            verbose=args.verbose)
        study = Study(cfg, progress=progress,
                      resume_hint=hint)
        if not study.env.makes_runs:
            raise ConfigError(str(cfg.source_path), [
                "[env] kind = 'python' needs function = 'module:name' (or 'file.py:name') to "
                "run from the command line"])
        result = study.run(rewrite=args.rewrite, handle_signals=True)
    except (ConfigError, FolderError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.status == "finished":
        kept = ", ".join(result.kept) or "nothing (the base config stands)"
        print(f"Stopped: {result.stop_reason}. Kept: {kept}. Outputs in {result.out_dir}",
              file=sys.stderr)
    return 0 if result.status == "finished" else 130


if __name__ == "__main__":
    sys.exit(main())
