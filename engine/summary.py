"""What a study has found, in the metric's own units: the one record the report and the
insights read. The engine's internal lower-is-better sign is undone here, once."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from beliefs import Beliefs
from beliefs.scores import expected_brier, expected_log_score, forecast_p_better
from engine.core import IncumbentSummary, incumbent_summary
from engine.records import StepDecision
from engine.rules import candidate_runs, config_for, conflicting_pairs
from engine.state import StudyRules, StudyState
from envs.patch import parse_diff
from policies import decide
from policies.keep import probability_better_than
from policies.types import move_members


@dataclass(frozen=True)
class PatchLine:
    """A code-patch hypothesis: the files its diff edits, the lines it adds and removes, and the
    hypotheses whose patches cannot apply with it (on top of the incumbent's)."""

    name: str
    files: tuple[str, ...]
    added: int
    removed: int
    rivals: tuple[str, ...]


def patch_lines(state: StudyState, rules: StudyRules) -> tuple[PatchLine, ...]:
    """One PatchLine per hypothesis with a patch, in declaration order."""
    pairs = conflicting_pairs(state, rules)
    lines = []
    for name, h in state.hypotheses.items():
        if not h.patch:
            continue
        files = parse_diff(h.patch)  # checked when the hypothesis was accepted
        hunks = [hunk for f in files for hunk in f.hunks]
        lines.append(PatchLine(
            name, tuple(f.path for f in files), sum(hunk.added for hunk in hunks),
            sum(hunk.removed for hunk in hunks),
            tuple(other for other, o in state.hypotheses.items() if o.patch
                  and frozenset((name, other)) in pairs)))
    return tuple(lines)


@dataclass(frozen=True)
class ForecastLine:
    """A hypothesis's forecast effect (metric units), scored against the posterior of its
    effect (beliefs.scores): the expected log score (nats, higher is better) and Brier score of
    its P(better) (lower is better), and the same scores of a forecaster with the same sd and
    no direction, N(0, sd^2), beside them."""

    name: str
    forecast: float
    forecast_sd: float
    forecast_p_better: float
    posterior_p_better: float
    log_score: float
    brier: float
    reference_log_score: float
    reference_brier: float


def forecast_lines(state: StudyState, rules: StudyRules) -> tuple[ForecastLine, ...]:
    """One ForecastLine per hypothesis with a forecast (predicted_sd > 0), against its effect
    on the base config alone, on the internal scale (the sign folds in the metric's direction)."""
    epsilon, lines = rules.keep_rule.epsilon, []
    for name, h in state.hypotheses.items():
        if h.predicted_sd <= 0:
            continue
        q, slab, null = probability_better_than(state.beliefs, frozenset({name}), frozenset(),
                                                epsilon)
        mean, scale, df = (float(np.asarray(v)) for v in (slab.mean, slab.scale, slab.df))
        variance = scale ** 2 * df / (df - 2) if df > 2 else scale ** 2
        p0 = null(mean, variance ** 0.5) if null else 0.0
        forecast, sd = rules.sign * h.predicted_effect, h.predicted_sd
        p, p_ref = forecast_p_better(forecast, sd, epsilon), forecast_p_better(0.0, sd, epsilon)
        lines.append(ForecastLine(
            name, h.predicted_effect, sd, p, float(q),
            expected_log_score(forecast, sd, p0, mean, variance), expected_brier(p, float(q)),
            expected_log_score(0.0, sd, p0, mean, variance), expected_brier(p_ref, float(q))))
    return tuple(lines)


@dataclass(frozen=True)
class EffectLine:
    """One hypothesis's effect, if it does anything: the slab's posterior mean and central 90%
    interval (lo <= hi), the spike-and-slab P(no effect), and the successful runs that applied
    it."""

    name: str
    category: str
    mean: float
    lo: float
    hi: float
    p_no_effect: float
    runs: int


@dataclass(frozen=True)
class CategoryLine:
    """A category's mean effect (the expected effect of a new hypothesis of it), 90% interval,
    and the successful runs that applied one of its hypotheses (summed over them)."""

    category: str
    mean: float
    lo: float
    hi: float
    runs: int


@dataclass(frozen=True)
class UndecidedLine:
    """A move the study ran but neither kept nor reverted by the end: its P(better) against the
    final incumbent, the 90% interval of the difference (metric units, lo <= hi) and its
    candidate runs over all its trials. It is not part of the incumbent."""

    move: str
    p_better: float
    lo: float
    hi: float
    runs: int


@dataclass(frozen=True)
class StudySummary:
    """A study's findings and the facts a reader needs beside them, all in metric units."""

    name: str
    out_dir: Path
    seed: int
    env_kind: str
    backend: str
    env_fingerprint: str
    metric: str
    direction: str  # "lower" | "higher": which is better
    time_budget: float | None  # seconds per run where the env trains for a fixed time
    policy: str
    threshold: float
    budget_trials: int
    runs_used: int
    runs_ok: int
    noise_sd: float
    incumbent: IncumbentSummary
    incumbent_config: Mapping[str, Any]
    decisions: tuple[StepDecision, ...]
    undecided: tuple[UndecidedLine, ...]  # best P(better) first
    effects: tuple[EffectLine, ...]
    categories: tuple[CategoryLine, ...]
    steps: tuple[dict[str, Any], ...]  # the ledger's step rows
    runs: tuple[dict[str, Any], ...]  # the ledger's run rows (metric units as recorded)
    # (step, slot, role) of each of the beliefs' observations, in the order they were taken in
    observed: tuple[tuple[int, int, str], ...] = ()
    epsilon: float = 0.0  # the keep rule's margin: better means by more than this
    patches: tuple[PatchLine, ...] = ()
    forecasts: tuple[ForecastLine, ...] = ()
    proposer_calls: tuple[dict[str, Any], ...] = ()  # the ledger's rows
    proposals: tuple[dict[str, Any], ...] = ()  # the ledger's offers, each with its step


def _findings(beliefs: Beliefs, state: StudyState,
              rules: StudyRules) -> tuple[tuple[EffectLine, ...], tuple[CategoryLine, ...]]:
    """The effects and category effects `beliefs` imply, in metric units."""
    def ends(lo: float, hi: float) -> tuple[float, float]:
        low, high = sorted((rules.metric(lo), rules.metric(hi)))
        return low, high

    # Evidence about a hypothesis: every successful run that applied it (a reopened trial's
    # earlier runs and the incumbent's runs after a keep count too).
    ok = [r for r in state.runs if r.value is not None]
    runs_per = {h.name: sum(1 for r in ok if h.name in r.config) for h in beliefs.hypotheses}
    effects = tuple(EffectLine(e.name, e.category, rules.metric(e.mean), *ends(e.lo, e.hi),
                               beliefs.null_probability(frozenset({e.name}), frozenset()),
                               runs_per[e.name]) for e in beliefs.effects())
    categories = tuple(CategoryLine(c.category, rules.metric(c.mean), *ends(c.lo, c.hi),
                                    sum(e.runs for e in effects if e.category == c.category))
                       for c in beliefs.category_effects())
    return effects, categories


def undecided_moves(state: StudyState, rules: StudyRules) -> tuple[UndecidedLine, ...]:
    """The moves still undecided when the study stopped: run, not in the incumbent, and with no
    keep or revert after their latest step. The budget ended before the posterior decided them;
    they are reported, never kept."""
    runs = candidate_runs(state)
    latest = {p.hypothesis: step for step, p in state.plans.items() if p.hypothesis}
    lines = []
    for move, n_runs in runs.items():
        closed = state.closed.get(move)
        if move_members(move) <= state.incumbent or (closed and closed.step >= latest[move]):
            continue
        d = decide(state.beliefs, state.incumbent | move_members(move), state.incumbent,
                   rules.keep_rule, n_runs)
        lo, hi = sorted(rules.metric(end) for end in d.interval)
        lines.append(UndecidedLine(move, float(d.p_better), lo, hi, n_runs))
    return tuple(sorted(lines, key=lambda line: (-line.p_better, line.move)))


def claimed_without_gain(state: StudyState) -> float:
    """The posterior's expected count of the incumbent's changes that bring no gain: the sum over
    them of 1 - P(the incumbent is better than the incumbent without it)."""
    incumbent = state.incumbent
    return float(sum(1.0 - probability_better_than(state.beliefs, incumbent, incumbent - {name})[0]
                     for name in incumbent))


def summarise(state: StudyState, rules: StudyRules, *, name: str, out_dir: Path, env_kind: str,
              backend: str, env_fingerprint: str, metric: str, time_budget: float | None,
              policy: str, decisions: tuple[StepDecision, ...], steps: tuple[dict, ...],
              runs: tuple[dict, ...], proposer_calls: tuple[dict, ...] = (),
              proposals: tuple[dict, ...] = ()) -> StudySummary:
    beliefs = state.beliefs
    effects, categories = _findings(beliefs, state, rules)
    return StudySummary(
        name=name, out_dir=out_dir, seed=rules.study.seed, env_kind=env_kind, backend=backend,
        env_fingerprint=env_fingerprint, metric=metric,
        direction="lower" if rules.sign > 0 else "higher", time_budget=time_budget,
        policy=policy, threshold=rules.keep_rule.threshold, epsilon=rules.keep_rule.epsilon,
        budget_trials=rules.study.budget_trials, runs_used=state.runs_used,
        runs_ok=sum(r.value is not None for r in state.runs),
        noise_sd=beliefs.noise_sd(), incumbent=incumbent_summary(state, rules),
        incumbent_config=config_for(state, rules, state.incumbent), decisions=decisions,
        undecided=undecided_moves(state, rules), effects=effects, categories=categories,
        steps=steps, runs=runs, patches=patch_lines(state, rules),
        forecasts=forecast_lines(state, rules),
        proposer_calls=proposer_calls, proposals=proposals,
        observed=tuple((r.step, r.slot, r.role) for step in sorted(state.concluded)
                       for r in state.runs_of(step) if r.value is not None))


def own_evidence(summary: StudySummary, state: StudyState, rules: StudyRules) -> StudySummary:
    """`summary` with its effects, categories and noise refitted from the study's runs alone: the
    same runs under the study's prior without the effect priors transferred from memory
    (`BeliefPrior.effect_priors`). What a study passes on is then its own evidence only, so a
    later study that pools it with the studies it learnt from counts none of theirs twice. The
    incumbent and decisions stay as decided. The refit costs one more conjugate fit.
    """
    beliefs = state.beliefs
    if not beliefs.prior.effect_priors:
        return summary  # nothing transferred: the posterior is the study's own already
    own = beliefs.fresh(dataclasses.replace(beliefs.prior, effect_priors={}))
    own.update(beliefs.observations)
    effects, categories = _findings(own, state, rules)
    return dataclasses.replace(summary, effects=effects, categories=categories,
                               noise_sd=own.noise_sd())
