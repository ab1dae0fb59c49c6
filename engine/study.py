"""The study loop: propose, choose, run, update beliefs, appraise, decide, remember.

    python -m engine.study CONFIG.toml [--out DIR] [--quiet]

Everything the loop knows is in the ledger (SQLite). A step's plan is written before its runs
start, each run is written the moment it finishes, and the step's appraisal and decision are
written together in one transaction at its end. Re-running the same command replays the ledger
(beliefs are rebuilt from the recorded runs) and carries on from the first unfinished step, so a
study killed at any instant loses no finished run and runs nothing twice.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from beliefs import BeliefPrior, Beliefs, Observation
from beliefs import Hypothesis as BeliefHypothesis
from beliefs.model import INTERACTIONS
from engine.config import ConfigError, StudyConfig, config_hash, load_config
from engine.progress import Progress
from engine.proposer import BuiltinProposer, Hypothesis, LLMProposer
from engine.runner import PlannedRun, make_runner
from envs import make_env
from memory import DuplicateRecordError, Ledger, StudyMismatchError, priors_from_insights, render_summary
from policies import KeepRule, RunRecord, StudyView, make_policy
from policies import compression_progress, realised_learntropy
from policies.keep import probability_better_than
from policies.types import move_members, pair_move

INTERVAL_LEVEL = 0.9


@dataclass(frozen=True)
class Verdict:
    """A move's latest final verdict, the step it came at, the incumbent it was tried on, and
    whether the posterior judged it (False when every run of the trial crashed)."""

    verdict: str  # keep | revert
    step: int
    incumbent: frozenset[str]
    judged: bool


@dataclass(frozen=True)
class StudyResult:
    out_dir: Path
    status: str  # finished | stopped
    stop_reason: str
    kept: list[str]
    runs_used: int


class Study:
    """All mutable state of one study: built from the config, then from the ledger's replay."""

    def __init__(self, cfg: StudyConfig, *, progress: Progress | None = None,
                 resume_hint: str | None = None):
        # The posterior's matrices are small: multi-threaded BLAS makes a 200x200 Cholesky ~100x
        # slower on a busy 2-core machine (experiments/bench_beliefs.py), so use one thread.
        threadpool_limits(limits=1, user_api="blas")
        self.cfg = cfg
        self.progress = progress or Progress(enabled=False)
        self.resume_hint = resume_hint or f"python -m engine.study {cfg.source_path} --out {cfg.study.out_dir}"
        self.out_dir = Path(cfg.study.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(self.out_dir / "study.db")
        self.env = make_env(cfg.env, base_dir=cfg.source_path.parent)
        # beliefs and policies see a lower-is-better metric; a higher-is-better one is negated
        self.sign = 1.0 if cfg.env["direction"] == "lower" else -1.0
        self.rule = KeepRule(threshold=cfg.decision.threshold, epsilon=cfg.decision.epsilon,
                             max_replicates=cfg.decision.max_replicates,
                             min_replicates=cfg.decision.min_replicates, spending=cfg.decision.spending,
                             futility=cfg.decision.futility)
        params = {k: v for k, v in dataclasses.asdict(cfg.policy).items() if k != "kind"}
        self.policy = make_policy(cfg.policy.kind, keep_rule=self.rule, **params)
        self.runner = make_runner(cfg.runner.kind, cfg.runner.workers)
        self.shared_memory = Ledger(Path(cfg.memory.path)) if cfg.memory.path else None
        self.proposer = self._make_proposer()
        self.study_id = self._open_study()
        if self.shared_memory is not None:  # the long-term memory keeps its own copy of each step
            self.shared_study_id = self.shared_memory.start_study(
                f"{cfg.study.name} @ {self.out_dir}", self._config_record(), self.env.fingerprint(),
                cfg.study.seed)
        self._replay()

    # ----------------------------------------------------------------------------- set-up
    def _make_proposer(self) -> BuiltinProposer:
        specs = [Hypothesis(h.name, h.category, dict(h.change), h.description)
                 for h in self.cfg.hypotheses]
        if not specs:  # synthetic worlds define their own hypothesis space
            specs = [Hypothesis(h["name"], h["category"], dict(h["change"]), h.get("description", ""))
                     for h in self.env.hypotheses() or []]
        if self.cfg.proposer.kind == "llm":
            return LLMProposer(specs, model=self.cfg.proposer.model,
                               max_new=self.cfg.proposer.max_new, every=self.cfg.proposer.every,
                               mock_response=self.cfg.proposer.mock_response,
                               base_config=self.base_config)
        return BuiltinProposer(specs)

    @property
    def base_config(self) -> dict:
        return dict(self.cfg.env.get("base", {}))

    def _open_study(self) -> int:
        try:
            return self.ledger.start_study(self.cfg.study.name, self._config_record(),
                                           self.env.fingerprint(), self.cfg.study.seed)
        except StudyMismatchError as exc:
            raise ConfigError(str(self.cfg.source_path), [
                f"{self.out_dir / 'study.db'} holds study {self.cfg.study.name!r} made with a "
                f"different config ({exc}); resume with the original config or choose another --out"
            ]) from None

    def _config_record(self) -> dict:
        """What the ledger keeps of the config: the file as written and the validated hash."""
        return {"config_hash": config_hash(self.cfg), "config": self.cfg.raw}

    def _prior(self) -> BeliefPrior:
        """Default priors, or priors recalled from the shared memory of earlier studies on this env."""
        effect_priors: dict[str, tuple[float, float]] = {}
        if self.shared_memory is not None and self.cfg.memory.transfer:
            decay = self.cfg.memory.decay
            recalled = self.shared_memory.recall_insights(env_fingerprint=self.env.fingerprint(), decay=decay)
            priors = priors_from_insights(recalled, t_now=self.shared_memory.experiment_time(), decay=decay)
            effect_priors = {name: (self.sign * mean, sd) for name, (mean, sd) in priors.items()
                             if name in self.hypotheses}
        return BeliefPrior(effect_sd=self.cfg.beliefs.prior_effect_sd,
                           noise_df=self.cfg.beliefs.prior_noise_df, effect_priors=effect_priors,
                           null_share=self.cfg.beliefs.null_share)

    def _replay(self) -> None:
        """Rebuild every piece of state from the ledger (all empty on a fresh study)."""
        self.hypotheses = {h.name: h for h in self.proposer.initial()}
        steps = self.ledger.steps(self.study_id)
        self.step_actions = self.ledger.plans(self.study_id)
        for action in self.step_actions.values():
            for item in action.get("proposed", []):
                self.hypotheses[item["name"]] = Hypothesis(**item)
        self.beliefs = Beliefs([BeliefHypothesis(h.name, h.category) for h in self.hypotheses.values()],
                               interactions=self.cfg.beliefs.interactions, prior=self._prior())
        self.incumbent: frozenset[str] = frozenset()
        self.kept: list[str] = []
        self.closed: dict[str, Verdict] = {}
        for row in self.ledger.decisions(self.study_id):
            self._apply_verdict(row["hypothesis"], row["verdict"], row["step"], row["p_better"] is not None)
        finished = {row["step"] for row in steps}
        self.pending = next((step for step in sorted(self.step_actions) if step not in finished), None)
        self.history: list[RunRecord] = []
        self.run_seconds: list[float] = []
        observations = []
        for row in self.ledger.runs(self.study_id):
            record = self._remember_run(row)
            if row["step"] in finished and record.value is not None:
                observations.append(Observation(record.config, record.value))
        self.beliefs.update(observations)
        self.next_step = max(self.step_actions, default=-1) + 1
        self.elapsed = sum(row["appraisal"].get("seconds", 0.0) for row in steps)
        pinned = next((r["eval_hash"] for r in self.ledger.runs(self.study_id)
                       if r["status"] == "ok" and r["eval_hash"]), None)
        if pinned and hasattr(self.env, "pinned_eval_hash"):
            self.env.pinned_eval_hash = pinned

    def _remember_run(self, row: dict) -> RunRecord:
        value = None if row["metric"] is None or row["status"] != "ok" else self.sign * row["metric"]
        record = RunRecord(config=frozenset(row["hypotheses"]), value=value,
                           status=row["status"], seed=row["seed"], step=row["step"], role=row["role"])
        self.history.append(record)
        if row["seconds"] is not None:
            self.run_seconds.append(row["seconds"])
        return record

    def _apply_verdict(self, move: str, verdict: str, step: int, judged: bool) -> None:
        if verdict in ("keep", "revert"):
            self.closed[move] = Verdict(verdict, step, self.incumbent, judged)
        if verdict == "keep":
            self.kept.extend(sorted(move_members(move) - self.incumbent))
            self.incumbent = self.incumbent | move_members(move)

    def _moves(self) -> list[str]:
        """Every move not yet in the incumbent: each hypothesis, then pairs of reverted ones.

        With interactions modelled, two changes that do nothing alone may help together, a synergy
        no single move can reach; a pair move tries both at once. Offered to policies that score
        configurations (not learntropy, which scores one effect, nor the ratchet)."""
        singles = [name for name in self.hypotheses if name not in self.incumbent]
        if not (self.cfg.beliefs.interactions and self.policy.scores_pairs):
            return singles
        reverted = sorted(name for name in singles if name in self.closed)
        return singles + [pair_move(a, b) for a, b in combinations(reverted, 2)]

    def _candidates(self) -> tuple[list[str], set[str]]:
        """(the open moves, the reverted ones among them reopened for a new trial).

        A reverted move is tried again, as a new trial (the posterior keeps every old run):
        - with interactions modelled, when it was reverted on an older incumbent: its pairs with
          the newly kept changes are unseen, so it may help now;
        - once nothing else is open and runs are left, when the posterior does not call it worse
          (P(better) > 1 - threshold): a futility revert judges the value of more runs, not the change.
          Not a move whose every run crashed: its P(better) is still the prior's, and more runs
          would crash again.
        The ratchet retries every reverted move anyway."""
        moves = self._moves()
        if self.policy.retries_reverted:
            return moves, set()
        reverted = {move: self.closed[move] for move in moves if move in self.closed}
        reopened = {move for move, v in reverted.items()
                    if self.cfg.beliefs.interactions and v.incumbent != self.incumbent}
        fresh = [move for move in moves if move not in self.closed]
        if not fresh and not reopened:
            floor = 1.0 - self.rule.threshold
            reopened = {move for move, verdict in reverted.items()
                        if verdict.judged and probability_better_than(
                            self.beliefs, self.incumbent | move_members(move), self.incumbent,
                            self.rule.epsilon)[0] > floor}
        return [move for move in moves if move not in self.closed or move in reopened], reopened

    # ------------------------------------------------------------------------------ loop
    def run(self, *, write_report: bool = True) -> StudyResult:
        """Run (or resume) until a budget is spent, the policy stops, or everything is decided.

        `write_report=False` (the benchmark) skips plots and the PyMC fit; the ledger is complete.
        """
        # SIGINT too: a process started in the background by a script inherits SIGINT ignored,
        # and Ctrl-C (or kill -INT) must still stop the study cleanly.
        previous_handlers = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            if self.pending is not None:
                self._execute(self.pending, self.step_actions[self.pending])
            if self.next_step == 0:
                self._begin(0, {"kind": "base", "hypothesis": None, "n_runs": self.cfg.study.base_runs,
                                "reason": "baseline runs of the base config", "terms": {}})
            while not (reason := self._stop_reason()):
                proposed = self._maybe_propose()
                action = self.policy.select(self._view(), self.beliefs, self._rng(self.next_step))
                if action.kind == "stop":
                    reason = action.reason
                    if proposed:  # the report and a resume must still know the new hypotheses
                        self._record_stop(reason, proposed)
                    break
                record = {"kind": action.kind, "hypothesis": action.hypothesis,
                          "n_runs": self._fit_to_budget(action.n_runs), "reason": action.reason,
                          "terms": {k: float(v) for k, v in action.terms.items()},
                          "proposed": proposed}
                if action.kind == "run":
                    left = self.cfg.study.budget_trials - self.runs_used - record["n_runs"]
                    record["incumbent_runs"] = min(left, self._paired_runs(action.hypothesis, record["n_runs"]))
                self._begin(self.next_step, record)
        except KeyboardInterrupt:
            self.ledger.finish_study(self.study_id, "stopped", "interrupted")
            self.progress.say(f"Interrupted; every finished run is saved in {self.out_dir / 'study.db'}.\n"
                              f"Resume with: {self.resume_hint}", always=True)
            return StudyResult(self.out_dir, "stopped", "interrupted", list(self.kept), self.runs_used)
        finally:
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
        self.ledger.finish_study(self.study_id, "finished", reason)
        if write_report:
            from engine.report import write_outputs  # plotting imports are slow; only at the end

            write_outputs(self, reason)
        return StudyResult(self.out_dir, "finished", reason, list(self.kept), self.runs_used)

    @property
    def runs_used(self) -> int:
        return len(self.history)

    def _stop_reason(self) -> str:
        study = self.cfg.study
        if study.budget_trials - self.runs_used < 1 + self._reserved_incumbent_runs():
            return f"budget_trials spent ({self.runs_used} of {study.budget_trials} runs)"
        if study.budget_seconds and self.elapsed >= study.budget_seconds:
            return f"budget_seconds spent ({self.elapsed:.0f} s of {study.budget_seconds:g} s)"
        if not self._view().candidates:
            return "every hypothesis is decided"
        return ""

    def _incumbent_runs_per_step(self) -> int:
        return self.cfg.study.incumbent_runs_per_step if self.policy.pairs_incumbent else 0

    def _paired_runs(self, move: str, n_candidate: int) -> int:
        """Incumbent runs to pair with n_candidate runs of the move: m = incumbent_runs_per_step
        (at most n_candidate), or with adaptive_incumbent_runs only when m incumbent runs narrow
        the posterior of mu(candidate) - mu(incumbent) at least as much as m extra candidate runs
        would. An incumbent measured over several trials is known well; more runs of it would buy
        little of the comparison."""
        m = min(self._incumbent_runs_per_step(), n_candidate)  # an incumbent run shares a candidate run's seed
        if m == 0 or not self.cfg.study.adaptive_incumbent_runs:
            return m
        candidate = self.incumbent | move_members(move)
        paired = self.beliefs.difference_variance_after(candidate, self.incumbent, (n_candidate, m))
        alone = self.beliefs.difference_variance_after(candidate, self.incumbent, (n_candidate + m, 0))
        return m if paired <= alone else 0

    def _reserved_incumbent_runs(self) -> int:
        """Runs kept back for pairing: every step's, unless pairing is adaptive (then a step
        near the end of the budget may go unpaired)."""
        return 0 if self.cfg.study.adaptive_incumbent_runs else self._incumbent_runs_per_step()

    def _fit_to_budget(self, n_runs: int) -> int:
        left = self.cfg.study.budget_trials - self.runs_used - self._reserved_incumbent_runs()
        return max(1, min(n_runs, self.cfg.study.replicates_per_step, left))

    def _view(self) -> StudyView:
        candidates, reopened = self._candidates()
        # A reopened move is a new trial: the keep rule counts only the runs since its revert.
        since = {move: self.closed[move].step for move in reopened}
        runs_per = dict.fromkeys([*candidates, *(a["hypothesis"] for a in self.step_actions.values()
                                                 if a.get("hypothesis"))], 0)
        for action, record in ((self.step_actions.get(r.step, {}), r) for r in self.history):
            move = action.get("hypothesis")
            if record.role == "candidate" and move in runs_per and record.step > since.get(move, -1):
                runs_per[move] += 1
        undecided = [a["hypothesis"] for step, a in sorted(self.step_actions.items())
                     if a.get("hypothesis") and (a["hypothesis"] not in self.closed
                                                 or step > self.closed[a["hypothesis"]].step)]
        mean_seconds = float(np.mean(self.run_seconds)) if self.run_seconds else 0.0
        return StudyView(incumbent=self.incumbent, candidates=candidates, history=list(self.history),
                         runs_per_hypothesis=runs_per,
                         runs_left=self.cfg.study.budget_trials - self.runs_used,
                         seconds_left=None, expected_seconds={c: mean_seconds for c in candidates},
                         open_hypothesis=undecided[-1] if undecided else None)

    def _rng(self, step: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.study.seed, step])

    def _maybe_propose(self) -> list[dict]:
        memory = self.shared_memory or self.ledger
        context = render_summary(memory.insights(env_fingerprint=self.env.fingerprint()), max_chars=1500)
        proposal = self.proposer.propose(self.next_step, set(self.hypotheses), context)
        if proposal is None:
            return []
        for problem in proposal.rejected:
            self.progress.say(f"  proposer: rejected {problem}")
        if proposal.error:
            self.progress.say(f"  proposer: {proposal.error}", always=True)
        for hypothesis in proposal.accepted:
            self.hypotheses[hypothesis.name] = hypothesis
            self.beliefs.add_hypothesis(BeliefHypothesis(hypothesis.name, hypothesis.category))
        return [h.to_dict() for h in proposal.accepted]

    # ----------------------------------------------------------------------------- a step
    def _record_stop(self, reason: str, proposed: list[dict]) -> None:
        """A step with no runs that only records the proposals made before the policy stopped."""
        step, action = self.next_step, {"kind": "stop", "hypothesis": None, "n_runs": 0, "reason": reason,
                                        "terms": {}, "proposed": proposed}
        with self.ledger.transaction():
            self.ledger.plan_step(self.study_id, step, action=action)
            self.ledger.record_step(self.study_id, step, action=action, appraisal={"terms": {}},
                                    incumbent=self.incumbent_summary())
        self.step_actions[step] = action
        self.next_step = step + 1

    def _begin(self, step: int, action: dict) -> None:
        self.ledger.plan_step(self.study_id, step, action=action)
        self.step_actions[step] = action
        self.next_step = step + 1
        self._execute(step, action)

    def _plan(self, step: int, action: dict) -> list[PlannedRun]:
        """The step's runs; candidate and incumbent runs share seeds so their luck cancels."""
        n = int(action["n_runs"])
        seeds = [int(s) for s in np.random.default_rng([self.cfg.study.seed, step, 7]).integers(0, 2**31 - 1, n)]
        if action["kind"] == "base":
            groups = [("base", frozenset())]
        elif action["kind"] == "rerun_incumbent":
            groups = [("incumbent", self.incumbent)]
        else:  # the incumbent runs were chosen with the plan (_paired_runs) and recorded in it
            groups = [("candidate", self.incumbent | move_members(action["hypothesis"]))]
            groups += [("incumbent", self.incumbent)] * bool(action["incumbent_runs"])
        plans = []
        for role, applied in groups:
            count = action["incumbent_runs"] if role == "incumbent" and action["kind"] == "run" else n
            for seed in seeds[:count]:
                plans.append(PlannedRun(step, len(plans), role, applied, self.config_for(applied), seed))
        return plans

    def config_for(self, applied: frozenset[str]) -> dict:
        """The base config with each applied hypothesis's change merged in, in declaration order."""
        config = self.base_config
        for name, hypothesis in self.hypotheses.items():
            if name in applied:
                config.update(hypothesis.change)
        return config

    def _execute(self, step: int, action: dict) -> None:
        step_started = time.monotonic()
        done = {row["slot"] for row in self.ledger.runs(self.study_id) if row["step"] == step}
        plans = [p for p in self._plan(step, action) if p.slot not in done]
        self.progress.status(f"step {step}: {_describe(action)} ({len(plans)} runs)")
        for plan, outcome in self.runner.run(self.env, plans):
            row = dict(role=plan.role, hypotheses=sorted(plan.applied), config=plan.config,
                       seed=plan.seed, metric=outcome.metric, status=outcome.status,
                       steps=outcome.steps, seconds=outcome.seconds, backend=self.env.backend,
                       code_hash=self.env.code_hash,
                       eval_hash=outcome.extra.get("eval_hash", self.env.eval_hash),
                       extra=json.loads(json.dumps(outcome.extra, default=str)))
            self.ledger.record_run(self.study_id, step, plan.slot, **row)
            self._remember_run({**row, "step": step})
            if outcome.status != "ok":
                self.progress.say(f"  run {plan.role} seed {plan.seed}: {outcome.status} "
                                  f"{outcome.extra.get('reason', '')}".rstrip(), always=True)
        self._conclude(step, action, time.monotonic() - step_started)

    def _conclude(self, step: int, action: dict, run_seconds: float) -> None:
        """Update beliefs, appraise, decide, and write it all in one transaction."""
        runs = [r for r in self.history if r.step == step]
        observations = [Observation(r.config, r.value) for r in runs if r.value is not None]
        before = self.beliefs.copy()
        self.beliefs.update(observations)
        appraisal = self._appraise(before, observations, action)
        hypothesis = action.get("hypothesis")
        decision = None
        if action["kind"] == "run":
            candidate_runs = [r for r in runs if r.role == "candidate"]
            if candidate_runs and all(r.value is None for r in candidate_runs):
                decision = {"verdict": "revert", "p_better": None, "lo": None, "hi": None,
                            "n_runs": self._view().runs_per_hypothesis[hypothesis],
                            "reason": f"every run crashed ({candidate_runs[0].status})"}
            else:
                d = self.policy.decide(self._view(), self.beliefs, hypothesis, self.rule)
                lo, hi = d.interval if d.interval is not None else (None, None)
                decision = {"verdict": d.verdict, "p_better": d.p_better, "lo": self._metric(lo),
                            "hi": self._metric(hi), "n_runs": d.n_runs, "reason": d.reason}
                if decision["lo"] is not None and decision["lo"] > decision["hi"]:
                    decision["lo"], decision["hi"] = decision["hi"], decision["lo"]
        incumbent = self.incumbent_summary() if decision is None or decision["verdict"] != "keep" else None
        if decision is not None:
            self._apply_verdict(hypothesis, decision["verdict"], step, decision["p_better"] is not None)
            incumbent = self.incumbent_summary()
        appraisal["seconds"] = run_seconds  # wall time of this session's part of the step
        self.elapsed += run_seconds
        episode = self._episode(hypothesis, decision, appraisal, runs) if decision else None
        if self.shared_memory is not None:
            self._mirror_step(step, episode)
        with self.ledger.transaction():
            if decision is not None:
                self.ledger.record_decision(self.study_id, step, hypothesis, **decision)
                self.ledger.record_episode(study_id=self.study_id, **episode)
            self.ledger.record_step(self.study_id, step, action=action, appraisal=appraisal,
                                    incumbent=incumbent)
        self.progress.step(step, action, runs, decision, incumbent, self.sign)

    def _metric(self, value: float | None) -> float | None:
        """Back from the internal lower-is-better scale to the metric's own units."""
        return None if value is None else self.sign * float(value)

    def incumbent_summary(self) -> dict:
        posterior = self.beliefs.posterior_mean([self.incumbent])
        lo, hi = posterior.interval(INTERVAL_LEVEL)
        ends = sorted([self._metric(lo[0]), self._metric(hi[0])])
        return {"kept": list(self.kept), "mean": self._metric(posterior.mean[0]), "interval": ends}

    def _appraise(self, before: Beliefs, observations: list[Observation], action: dict) -> dict:
        """Surprise, learntropy and compression progress of this step's outcomes (nats)."""
        appraisal: dict = {"terms": action.get("terms", {})}
        if not observations or before.n_observations == 0:
            return appraisal
        surprise = [-float(before.predict([o.config]).logpdf(np.array([o.value]))[0])
                    for o in observations]
        values = {"surprise": float(np.mean(surprise)),
                  "compression_progress": compression_progress(before, self.beliefs, before.observations)}
        if action.get("hypothesis") in self.hypotheses:  # learntropy is about one hypothesis's effect
            values["learntropy"] = realised_learntropy(before, self.beliefs, action["hypothesis"],
                                                       kappa=self.cfg.policy.kappa)
        for name, value in values.items():
            # with one or two observations a leave-one-out predictive can be degenerate: say so
            appraisal[name] = float(value) if np.isfinite(value) else None
        return appraisal

    def _mirror_step(self, step: int, episode: dict | None) -> None:
        """Copy a step's runs and episode into the shared memory, in one transaction.

        It commits before the study's own step, so a study killed in between re-concludes the
        step on resume and finds it already mirrored: the duplicate is skipped, not doubled.
        """
        memory, study_id = self.shared_memory, self.shared_study_id
        try:
            with memory.transaction():
                for row in (r for r in self.ledger.runs(self.study_id) if r["step"] == step):
                    fields = {k: v for k, v in row.items() if k not in ("id", "study_id", "step", "slot")}
                    memory.record_run(study_id, step, row["slot"], **fields)
                if episode is not None:
                    memory.record_episode(study_id=study_id, **episode)
        except DuplicateRecordError:
            pass

    def _category(self, move: str) -> str:
        """A hypothesis's category; a pair move's is "interaction" when its members' differ."""
        categories = {self.hypotheses[name].category for name in move_members(move)}
        return categories.pop() if len(categories) == 1 else INTERACTIONS

    def _episode(self, hypothesis: str, decision: dict, appraisal: dict, runs: list[RunRecord]) -> dict:
        values = [self._metric(r.value) for r in runs if r.role == "candidate" and r.value is not None]
        outcome = {"verdict": decision["verdict"], "p_better": decision["p_better"],
                   "interval": [decision["lo"], decision["hi"]], "n_runs": decision["n_runs"],
                   "mean_metric": float(np.mean(values)) if values else None}
        return dict(env_fingerprint=self.env.fingerprint(), hypothesis=hypothesis,
                    category=self._category(hypothesis), outcome=outcome,
                    surprise=appraisal.get("surprise"), learntropy=appraisal.get("learntropy"),
                    compression_progress=appraisal.get("compression_progress"))


def _describe(action: dict) -> str:
    if action["kind"] == "run":
        return f"try {action['hypothesis']}"
    return {"base": "baseline", "rerun_incumbent": "re-run incumbent"}.get(action["kind"], action["kind"])


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.study",
                                     description="Run (or resume) a study described by a TOML config.")
    parser.add_argument("config", help="the study's TOML config")
    parser.add_argument("--out", help="the study folder (overrides [study] out_dir)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, out_dir=args.out)
        hint = f"python -m engine.study {args.config}" + (f" --out {args.out}" if args.out else "")
        study = Study(cfg, progress=Progress(enabled=not args.quiet and sys.stderr.isatty()),
                      resume_hint=hint)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = study.run()
    if result.status == "finished":
        kept = ", ".join(result.kept) or "nothing (the base config stands)"
        print(f"Stopped: {result.stop_reason}. Kept: {kept}. Outputs in {result.out_dir}", file=sys.stderr)
    return 0 if result.status == "finished" else 130


if __name__ == "__main__":
    sys.exit(main())
