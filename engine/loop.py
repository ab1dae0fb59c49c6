"""The loop that runs a study: it executes the core's commands and feeds back what happened.

Everything that touches the world is here: the runner and env, the proposer, the ledger and the
shared memory, the clock, signals, progress lines and the final outputs. The decisions are not:
they are `engine.core.advance`'s. A step's plan is written before its runs start, each run is
written the moment it finishes, and a step's appraisal, decision and episode are written in one
transaction at its end; so a study killed at any instant loses no finished run and, resumed,
runs nothing twice. The runner makes the runs of every step in flight at once, up to its
workers; the loop waits for the next finished run only when the core has nothing else to do.
"""
from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from engine.config import StudyConfig
from engine.core import (
    Command,
    Conclude,
    Event,
    Propose,
    Proposed,
    RecordPlan,
    Run,
    RunFinished,
    Stop,
    advance,
    start,
)
from engine.folder import FolderLock, Marker, write_marker
from engine.insights import decision_lines
from engine.progress import Progress
from engine.proposer import BuiltinProposer, ProposalRequest
from engine.quiet import quiet_libraries
from engine.rules import patches_of, run_record
from engine.runner import PlannedRun, Runner
from engine.scope import Interruption, one_blas_thread
from engine.state import StudyRules, StudyState
from engine.summary import StudySummary
from envs import Env, Outcome
from envs.process import sweep
from memory import DuplicateRecordError, Ledger, render_summary


class Study(Protocol):
    """What the loop needs of a study handle (engine.study.Study is one): its parts, and the
    state the loop replaces after every event."""

    cfg: StudyConfig
    rules: StudyRules
    state: StudyState
    ledger: Ledger
    study_id: int
    shared_memory: Ledger | None
    shared_study_id: int | None
    env: Env
    runner: Runner
    proposer: BuiltinProposer
    progress: Progress
    out_dir: Path
    resume_hint: str
    finished_at_open: bool
    runs_at_open: int

    @property
    def kept(self) -> list[str]: ...

    @property
    def runs_used(self) -> int: ...

    def summary(self) -> StudySummary: ...

    def check_folder(self) -> None: ...


@dataclass(frozen=True)
class StudyResult:
    out_dir: Path
    status: str  # finished | stopped
    stop_reason: str
    kept: list[str]
    runs_used: int


def run_study(study: Study, *, write_report: bool = True, rewrite: bool = False,
              handle_signals: bool = False) -> StudyResult:
    """Run (or resume) the study until a budget is spent, the policy stops, or everything is
    decided; `write_report=False` (the benchmark) skips plots and the PyMC fit. A study finished
    when opened that made no run since keeps its outputs unless `rewrite`.

    The study folder is locked meanwhile (engine.folder). The study is marked finished only
    once its outputs are written: an interruption while they are written stops it like one
    during a step, and the resume writes them again. Ctrl-C (KeyboardInterrupt) stops it
    cleanly; `handle_signals` (the command line's) makes SIGTERM do so too, for the run only."""
    if not study.env.makes_runs:
        raise RuntimeError(f"{study.cfg.env['kind']} env {study.cfg.study.name!r} has no "
                           "objective to call: give one, or make its runs elsewhere and tell "
                           "them (Study.ask and Study.tell)")
    with FolderLock(study.out_dir), one_blas_thread():
        open_session(study)
        interrupted = Interruption()
        previous = interrupted.install() if handle_signals else {}
        try:
            with study.progress.session(budget_runs=study.cfg.study.budget_trials,
                                        runs_used=study.runs_used,
                                        budget_seconds=study.cfg.study.budget_seconds,
                                        elapsed=study.state.elapsed):
                reason = run_commands(study)
            return finish(study, reason, write_report=write_report, rewrite=rewrite)
        except KeyboardInterrupt:
            return stopped(study)
        except Exception:
            # A library that catches the interruption itself (PyMC's sampler does) fails in
            # its own way afterwards; the signal, not that failure, is what happened.
            if interrupted.signal is None:
                raise
            return stopped(study)
        finally:
            study.runner.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def open_session(study: Study) -> None:
    """What a session does first once it holds the folder's lock: check the folder again
    (another process may have used it since the study opened), and kill the runs a killed
    process of this study left running (theirs are run again)."""
    study.check_folder()
    left = sweep(study.env.owner + ":") if study.env.owner else 0
    if left:
        study.progress.say(f"killed {left} process(es) left running by an earlier, killed "
                           "process of this study", always=True)


def finish(study: Study, reason: str, *, write_report: bool, rewrite: bool) -> StudyResult:
    """The core said stop: write the outputs (unless the study was finished when opened, ran
    nothing since and `rewrite` is false), then mark the study finished."""
    mark(study)  # a folder of an older version gets its marker here
    unchanged = (study.finished_at_open and study.runs_used == study.runs_at_open
                 and (study.out_dir / "report.md").is_file())
    if unchanged and not rewrite:
        study.progress.say(f"The study was finished and nothing new ran: its outputs in "
                           f"{study.out_dir} are as they were (--rewrite writes them "
                           "again).", always=True)
    else:
        if write_report:
            write_study_outputs(study, reason)
        study.ledger.finish_study(study.study_id, "finished", reason)
    return StudyResult(study.out_dir, "finished", reason, list(study.kept), study.runs_used)


def run_commands(study: Study) -> str:
    """Execute the core's commands, feeding back their events, until it says stop; the reason.
    With no command left, the next run to finish is the next event. Interrupted, the runs that
    had finished are recorded before the interruption goes on up."""
    session = time.monotonic()
    study.state, queue = start(study.state, study.rules)
    try:
        while True:
            if queue:
                command = queue.pop(0)
                if isinstance(command, Stop):
                    return command.reason
                event = execute(study, command)
            elif study.runner.busy:
                plan, outcome = study.runner.next_finished()
                event = record_outcome(study, plan, outcome, time.monotonic() - session)
                study.progress.run_finished()
            else:
                raise RuntimeError("the study core ran out of commands without a stop")
            if event is not None:
                study.state, more = advance(study.state, study.rules, event)
                queue = more + queue  # what an event leads to comes before what was queued
    except KeyboardInterrupt:
        for plan, outcome in study.runner.stop():
            record_outcome(study, plan, outcome)
        raise


def stopped(study: Study) -> StudyResult:
    study.ledger.finish_study(study.study_id, "stopped", "interrupted")
    study.progress.say(f"Interrupted; every finished run is saved in "
                       f"{study.out_dir / 'study.db'}.\nResume with: {study.resume_hint}",
                       always=True)
    return StudyResult(study.out_dir, "stopped", "interrupted", list(study.kept), study.runs_used)


def execute(study: Study, command: Command) -> Event | None:
    """Carry out one command; the event it gives rise to (the proposer's answer), if any."""
    if isinstance(command, Propose):
        return Proposed(command.step, propose(study, command.step))
    if isinstance(command, RecordPlan):
        study.ledger.plan_step(study.study_id, command.step, action=command.plan.to_json())
    elif isinstance(command, Run):
        start_runs(study, command)
    elif isinstance(command, Conclude):
        record_conclusion(study, command)
    else:
        raise TypeError(f"not a study command: {command!r}")
    return None


def propose(study: Study, step: int) -> tuple[Any, ...]:
    """The proposer's new hypotheses; what it refused, or its failure, is reported."""
    memory = study.shared_memory or study.ledger
    insights = memory.insights(env_fingerprint=study.env.fingerprint())
    context = render_summary(insights, max_chars=1500)
    kept_patches = patches_of(study.state, study.state.incumbent)
    calls, spent = study.ledger.proposer_spend(study.study_id)
    proposal = study.proposer.propose(ProposalRequest(
        step, frozenset(study.state.hypotheses), context,
        study.env.mutable_sources(kept_patches),
        lambda diff: study.env.patch_problem([*kept_patches, diff]), calls, spent,
        study.state.kept, decision_lines(study.ledger.decisions(study.study_id))))
    if proposal is None:
        return ()
    outcome = ("answered" if proposal.called and not proposal.error else
               "failed" if proposal.called else "not made")
    study.ledger.record_proposer_call(
        study.study_id, step, outcome=outcome, cost_usd=proposal.cost_usd,
        attempts=proposal.calls, reason=proposal.error or "",
        accepted=[h.name for h in proposal.accepted], refused=proposal.rejected)
    if proposal.called:
        study.progress.say(f"  proposer: {calls + proposal.calls} LLM calls made, "
                           f"${spent + proposal.cost_usd:.4f} spent")
    for problem in proposal.rejected:
        study.progress.say(f"  proposer: rejected {problem}")
    if proposal.error:
        study.progress.say(f"  proposer: {proposal.error}", always=True)
    return tuple(proposal.accepted)


def start_runs(study: Study, command: Run) -> None:
    """Hand the step's runs to the runner; each is written to the ledger as it finishes."""
    hypothesis = command.plan.hypothesis
    closed = study.state.closed.get(hypothesis) if hypothesis else None
    study.progress.begin_step(command.step, command.plan, len(command.runs),
                              reopened=closed is not None and closed.verdict == "revert")
    study.runner.submit(study.env, command.runs)


def record_outcome(study: Study, plan: PlannedRun, outcome: Outcome,
                   clock: float = 0.0) -> RunFinished:
    """Write a finished run to the ledger (its outcome's extra holds the epoch times it started
    and finished, as engine.runner.timed_run puts them), report a failure, and say it
    finished, at `clock` seconds into the session."""
    env = study.env
    extra = dict(outcome.extra)
    started, finished = extra.pop("started"), extra.pop("finished")
    row = dict(role=plan.role, hypotheses=sorted(plan.applied), config=plan.config,
               seed=plan.seed, metric=outcome.metric, status=outcome.status,
               steps=outcome.steps, seconds=outcome.seconds, backend=env.backend,
               code_hash=extra.pop("code_hash", env.code_hash),  # a patched run's own code
               eval_hash=outcome.extra.get("eval_hash", env.eval_hash),
               extra=json.loads(json.dumps(extra, default=str)),
               started=started, finished=finished)
    study.ledger.record_run(study.study_id, plan.step, plan.slot, **row)
    if outcome.status != "ok":
        study.progress.say(f"  run {plan.role} seed {plan.seed}: {failure(outcome)}",
                           always=True)
    elif extra.get("lost"):
        study.progress.say(f"  run {plan.role} seed {plan.seed}: made again after its worker "
                           f"failed ({extra['lost'][-1]})", always=True)
    return RunFinished(run_record({**row, "slot": plan.slot}, plan.step, study.rules),
                       outcome.seconds, clock)


def failure(outcome: Outcome) -> str:
    """A failed run in a line: its status, the env's reason, and the last line its program
    wrote to stderr (which names the problem, such as a bad knob)."""
    lines = [line.strip() for line in outcome.extra.get("stderr_tail", "").splitlines()]
    last = next((line for line in reversed(lines) if line), "")
    parts = [outcome.status, outcome.extra.get("reason", ""), last and f"stderr: {last[:200]}"]
    return " | ".join(part for part in parts if part)


def record_conclusion(study: Study, command: Conclude) -> None:
    """Mirror the step into the shared memory, then write it to the study's ledger."""
    episode = None
    if command.episode is not None:
        episode = {"env_fingerprint": study.env.fingerprint(), **command.episode}
    if study.shared_memory is not None:
        mirror_step(study, command.step, episode)
    ledger, study_id, step = study.ledger, study.study_id, command.step
    with ledger.transaction():
        if command.records_plan:
            ledger.plan_step(study_id, step, action=command.plan.to_json())
        if command.decision is not None:
            ledger.record_decision(study_id, step, command.decision.hypothesis,
                                   **command.decision.to_json())
            ledger.record_episode(study_id=study_id, **episode,
                                  t_now=ledger.experiment_time() - command.later_runs)
        ledger.record_step(study_id, step, action=command.plan.to_json(),
                           appraisal=command.appraisal, incumbent=command.incumbent.to_json())
    mark(study)
    if not command.records_plan:
        study.progress.step(step, command.plan, command.runs, command.decision, command.incumbent,
                            study.rules.sign)


def mark(study: Study) -> None:
    """Checkpoint the ledger, then record its run count in the folder's marker; a checkpoint
    kept busy by another reader leaves the old, lower count, which is always safe."""
    if study.ledger.checkpoint():
        write_marker(study.out_dir, Marker(study.cfg.study.name, study.study_id,
                                           study.runs_used))


def mirror_step(study: Study, step: int, episode: dict | None) -> None:
    """Copy a step's runs and episode into the shared memory, in one transaction.

    It commits before the study's own step, so a study killed in between re-concludes the
    step on resume and finds it already mirrored: the duplicate is skipped, not doubled."""
    memory, study_id = study.shared_memory, study.shared_study_id
    try:
        with memory.transaction():
            for row in (r for r in study.ledger.runs(study.study_id) if r["step"] == step):
                fields = {k: v for k, v in row.items()
                          if k not in ("id", "study_id", "step", "slot")}
                memory.record_run(study_id, step, row["slot"], **fields)
            if episode is not None:
                memory.record_episode(study_id=study_id, **episode)
    except DuplicateRecordError:
        pass


def write_study_outputs(study: Study, reason: str) -> None:
    """results.tsv, the insights (into the study's ledger and the shared memory), then the
    report's files; plotting imports are slow, so they happen only here.

    The insights hold the study's own evidence (engine.summary.own_evidence) and are stored under
    its source name, so writing them again (a re-run, a resume) supersedes only its own."""
    from engine.insights import derive_insights, source_name
    from engine.report import write_outputs
    from engine.summary import own_evidence

    study.ledger.export_results_tsv(study.study_id, study.out_dir / "results.tsv",
                                    study.cfg.env["metric"])
    summary = study.summary()
    insights = derive_insights(own_evidence(summary, study.state, study.rules))
    source = source_name(study.cfg.study.name, study.out_dir)
    for memory in filter(None, (study.ledger, study.shared_memory)):
        with memory.transaction():
            for insight in insights:
                memory.upsert_insight(**insight, source=source)
    with quiet_libraries(study.progress.verbose):
        write_outputs(summary, study.state.beliefs, insights, reason, fit=study.cfg.beliefs,
                      progress=study.progress)
    if summary.undecided:
        listed = ", ".join(f"{u.move} (P(better) {u.p_better:.2f}, {u.runs} runs)"
                           for u in summary.undecided[:3])
        more = len(summary.undecided) - 3
        study.progress.say(f"Undecided at the end of the budget, not kept: {listed}"
                           + (f" and {more} more" if more > 0 else "") + " (report.md)")
