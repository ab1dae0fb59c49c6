"""The config's sections, each key declared once: its type, default, constraint and meaning.

Every section but [env] is a frozen dataclass of `setting`s (engine.schema), and `SCHEMA` is read
from them. [env] stays a table (the validated config holds it as a dict) whose keys depend on its
kind, so it is declared here as `ENV_FIELDS`, one `Field` per key with the kinds it applies to.
Where a policy or the keep rule has the same parameter, the default is the class's.
Adding a key is one line here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beliefs import BeliefPrior
from engine.proposer import Hypothesis
from engine.schema import (
    FLOAT,
    INT,
    REQUIRED,
    STR,
    STR_LIST,
    TABLE,
    ByKind,
    Derived,
    EachMatches,
    Field,
    Knobs,
    Matches,
    NonEmpty,
    OneOf,
    PathText,
    Range,
    class_default,
    fields_of,
    setting,
)
from policies import POLICIES
from policies.ratchet import RATCHET_SEEDS
from policies.types import KEEP_SPENDING, KeepRule
from train.vocabulary import BACKENDS, DIRECTIONS

ENV_KINDS = ("gpt", "synthetic", "command", "python")
POLICY_KINDS = ("design", "voi", "efe", "learntropy", "thompson", "ucb", "greedy", "random",
                "ratchet")
GPT, SYNTHETIC, COMMAND, PYTHON = ("gpt",), ("synthetic",), ("command",), ("python",)


# "package.module:name" or "path/to/file.py:name", or empty
FUNCTION_TARGET = r"((\w+(\.\w+)*|[^:]+\.py):[A-Za-z_]\w*)?"


def policy_default(name: str) -> Any:
    """The default of policy parameter `name`, which every policy that takes it declares alike."""
    defaults = {cls.__name__: class_default(cls, name) for cls in POLICIES.values()
                if name in {f.name for f in dataclasses.fields(cls)}}
    if len({repr(value) for value in defaults.values()}) != 1:
        raise TypeError(f"the policies' defaults of {name!r} differ: {defaults}")
    return next(iter(defaults.values()))


@dataclass(frozen=True)
class StudySection:
    name: str = setting(Derived("the config file's stem"), PathText(max_length=100),
                        "names the study and its folder")
    out_dir: Path = setting(  # absolute once validated
        Derived('"studies/<name>"'), PathText(),
        "study folder, relative to the current directory; `--out` overrides it")
    seed: int = setting(0, Range(0), "master seed for run seeds and policy choices")
    budget_trials: int = setting(40, Range(1),
                                 "total runs (candidate and incumbent runs both count)")
    budget_seconds: float = setting(0.0, Range(0), "wall-clock limit in seconds; 0 = none")
    replicates_per_step: int = setting(2, Range(1, 64),
                                       "candidate runs per step (the policy may choose fewer)")
    incumbent_runs_per_step: int = setting(
        1, Range(0, 64), "most incumbent runs per step, at the candidate's seeds it lacks")
    adaptive_incumbent_runs: bool = setting(
        True, None,
        "pair a step with its incumbent runs only when they narrow the posterior of "
        "mu(candidate) - mu(incumbent) at least as much as the same number of "
        "extra candidate runs would; false = every step")
    base_runs: int = setting(2, Range(1, 64), "runs of the base config before the first step")
    seed_panel: int = setting(
        8, Range(1, 4096),
        "run seeds come from a panel of this many seeds per study; no configuration runs at a "
        "seed twice, and one that has run at all of them goes on past the panel's end")


ENV_FIELDS: dict[str, Field] = {
    "kind": Field(STR, REQUIRED, OneOf(ENV_KINDS), "what is being optimised"),
    # A python objective runs in this process, where nothing can time it out.
    "timeout_s": Field(FLOAT, 600.0, Range(0, lo_open=True), "per-run timeout in seconds",
                       GPT + SYNTHETIC + COMMAND),
    "memory_limit_mb": Field(INT, 16384, Range(0),
                             "memory cap (RLIMIT_DATA, MiB) of each process of a run that applies "
                             "code patches; 0 = none", GPT),
    "guard_command": Field(STR, "", None,
                           "a check each configuration must pass before its runs count (e.g. "
                           "the trainer's tests or a smoke run): a template with {python}, "
                           "{trainer}, {config} and {split}, run without a shell; \"\" = none",
                           GPT),
    "metric": Field(STR, ByKind({"gpt": "val_bpb", "synthetic": "loss", "python": "value"}),
                    NonEmpty(),
                    "name of the metric a run reports"),
    "direction": Field(STR, "lower",
                       OneOf(DIRECTIONS, (("minimize", "lower"), ("maximize", "higher"))),
                       "whether lower or higher metric values are better (Optuna's words too)"),
    "backend": Field(STR, "auto", OneOf(BACKENDS), "trainer backend", GPT),
    "time_budget": Field(FLOAT, 30.0, Range(0),
                         "seconds of training per run; must be > 0 unless `steps` > 0", GPT),
    "steps": Field(INT, 0, Range(0),
                   "> 0 selects fixed-step mode (then `time_budget` is ignored)", GPT),
    "base": Field(TABLE, {}, Knobs(non_empty=False),
                  "base config: trainer knobs (gpt), values for `{param}` placeholders (command) "
                  "or the objective's knobs and their defaults (python)",
                  GPT + COMMAND + PYTHON),
    "world_seed": Field(INT, 0, Range(0),
                        "draws the world (effects), separate from run seeds", SYNTHETIC),
    "n_hypotheses": Field(INT, 20, Range(2, 2000), "hypotheses the world defines", SYNTHETIC),
    "categories": Field(STR_LIST, ["architecture", "optimizer", "schedule", "data"], NonEmpty(),
                        "hypothesis categories", SYNTHETIC),
    "p_improve": Field(FLOAT, 0.2, Range(0, 1), "share of hypotheses that truly improve",
                       SYNTHETIC),
    "effect_size": Field(FLOAT, 1.0, Range(0, lo_open=True),
                         "typical |effect| of a real change, metric units", SYNTHETIC),
    "noise_sd": Field(FLOAT, 1.0, Range(0, lo_open=True), "run-to-run sd, metric units",
                      SYNTHETIC),
    "noise": Field(STR, "gaussian", OneOf(("gaussian", "student_t")), "noise distribution",
                   SYNTHETIC),
    "noise_df": Field(FLOAT, 3.0, Range(2, lo_open=True),
                      "degrees of freedom (used when noise = \"student_t\")", SYNTHETIC),
    "heteroscedastic": Field(FLOAT, 0.0, Range(0),
                             "extra noise sd per applied hypothesis, relative", SYNTHETIC),
    "n_interactions": Field(INT, 0, Range(0), "pairwise interaction terms", SYNTHETIC),
    "interaction_size": Field(FLOAT, 1.0, Range(0), "typical interaction size, metric units",
                              SYNTHETIC),
    "crash_prob": Field(FLOAT, 0.0, Range(0, 1, hi_open=True), "probability that a run crashes",
                        SYNTHETIC),
    "effects": Field(STR, "sparse", OneOf(("sparse", "dense")),
                     "effect family: few real improvements (sparse) or many small effects drawn "
                     "from N(0, effect_size^2) (dense)", SYNTHETIC),
    "n_null": Field(INT, 2, Range(0), "dense effects: how many do exactly nothing", SYNTHETIC),
    "base_value": Field(FLOAT, 10.0, None, "the base config's true mean", SYNTHETIC),
    "seed_sd": Field(FLOAT, 0.0, Range(0),
                     "sd of a seed's luck shared by the runs at that seed, metric units "
                     "(0 = none)", SYNTHETIC),
    "seed_share": Field(TABLE, {}, None,
                        "per category, the share of a seed's luck its changes keep, in [0, 1] "
                        "(a category not named keeps all of it)", SYNTHETIC),
    "seconds_per_run": Field(FLOAT, 1.0, Range(0, lo_open=True),
                             "simulated seconds a run reports (nothing sleeps)", SYNTHETIC),
    "command": Field(STR, REQUIRED, NonEmpty(),
                     "template with `{seed}` and `{param}` placeholders; "
                     "shlex-split and run without a shell", COMMAND),
    "truth_command": Field(STR, "", None, "optional template that prints the noise-free metric",
                           COMMAND),
    "cwd": Field(STR, "", PathText(allow_empty=True), "optional working directory for the command",
                 COMMAND),
    "function": Field(STR, "", Matches(FUNCTION_TARGET, "such as 'module:name' or 'file.py:name'"),
                      "the objective(config, seed) -> metric to call: 'package.module:name' or "
                      "'file.py:name' (relative to the config); empty when the Python API gives "
                      "the callable or the runs are told (ask/tell)", PYTHON),
}


@dataclass(frozen=True)
class BeliefsSection:
    interactions: bool = setting(False, None, "model pairwise interactions")
    seed_effects: bool = setting(
        True, None,
        "model the luck a seed gives every run at it, and how much of it each category's "
        "changes keep (seed and seed x change random effects)")
    device_effects: bool = setting(
        True, None,
        "with runs on more than one device (a GPU kind, else a runner slot or Ray node): an "
        "offset per device and a noise multiplier per device, fitted by empirical Bayes; one "
        "device adds nothing")
    prior_seed_sd: float = setting(
        class_default(BeliefPrior, "seed_sd"), Range(0, lo_open=True),
        "centre of the hyperprior of the seed effects' scales, in units of the noise sd")
    prior_effect_sd: float = setting(0.5, Range(0, lo_open=True),
                                     "prior sd of an effect, standardised units")
    prior_noise_df: float = setting(
        1.0, Range(0, lo_open=True),
        "weight of the noise prior in runs (inverse-gamma a0 = df/2), "
        "centred on the replicate sd")
    null_share: float = setting(
        0.5, Range(0, 1, hi_open=True),
        "prior guess of the share of changes that do nothing (spike-and-slab; 0 = no spike)")
    fit_pymc: bool = setting(True, None, "full-Bayes PyMC fit for the report at the end")
    pymc_draws: int = setting(500, Range(50), "PyMC draws per chain")
    pymc_tune: int = setting(500, Range(50), "PyMC tuning steps per chain")
    pymc_chains: int = setting(2, Range(1, 8), "PyMC chains")


@dataclass(frozen=True)
class PolicySection:
    kind: str = setting("design", OneOf(POLICY_KINDS), "which policy chooses the next action")
    gamma: float = setting(policy_default("gamma"), Range(0, lo_open=True), "softmax precision")
    preference: float = setting(policy_default("preference"), Range(0, lo_open=True),
                                "lambda: nats per standardised unit of metric")
    cost_weight: float = setting(policy_default("cost_weight"), Range(0),
                                 "nats per expected second")
    epistemic: bool = setting(policy_default("epistemic"), None,
                              "include the epistemic (information) term")
    pragmatic: bool = setting(policy_default("pragmatic"), None,
                              "include the pragmatic (preference) term")
    cost: bool = setting(policy_default("cost"), None, "include the cost term")
    kappa: float = setting(policy_default("kappa"), Range(1), "learntropy kappa")
    ucb_beta: float = setting(policy_default("ucb_beta"), Range(0, lo_open=True),
                              "UCB exploration weight")
    block_runs: int = setting(policy_default("block_runs"), Range(1),
                              "design: runs of one screening block")
    max_changes_per_run: int = setting(
        policy_default("max_changes_per_run"), Range(0),
        "design: most changes one run applies on top of the incumbent (0 = no cap, each change "
        "in half the runs; 1 = one at a time)")
    seed_blocks: bool = setting(
        policy_default("seed_blocks"), None,
        "design: may run a block's configurations in groups that share a seed (scored by the "
        "information they give with the seeds' luck as noise)")
    ratchet_seed: str = setting(
        policy_default("ratchet_seed"), OneOf(RATCHET_SEEDS),
        "ratchet: \"fresh\" = every run at a seed no earlier run used; \"fixed\" = every run at "
        "one seed, as autoresearch runs it")


@dataclass(frozen=True)
class DecisionSection:
    """The keep rule's settings (policies.types.KeepRule, whose defaults these are)."""

    threshold: float = setting(class_default(KeepRule, "threshold"),
                               Range(0.5, 1, lo_open=True, hi_open=True),
                               "posterior probability of improvement needed to keep")
    epsilon: float = setting(class_default(KeepRule, "epsilon"), Range(0),
                             "minimum improvement that counts, metric units")
    max_replicates: int = setting(
        class_default(KeepRule, "max_replicates"), Range(1),
        "runs of a candidate (over all its trials) after which, still undecided, it gets no more")
    min_replicates: int = setting(class_default(KeepRule, "min_replicates"), Range(1),
                                  "runs before any verdict; <= max_replicates")
    spending: str = setting(
        class_default(KeepRule, "spending"), OneOf(KEEP_SPENDING),
        "how the threshold is spread over the looks at one hypothesis: "
        "\"none\" = the posterior threshold at every look "
        "(the spike-and-slab prior already counts nulls); "
        "a group-sequential design bounds each null's keep chance instead")

    def keep_rule(self) -> KeepRule:
        return KeepRule(**dataclasses.asdict(self))


@dataclass(frozen=True)
class MemorySection:
    path: str = setting("", PathText(allow_empty=True),
                        'shared memory database for transfer across studies ("" = none)')
    decay: float = setting(0.5, Range(0, 1, lo_open=True, hi_open=True), "activation decay d")
    recall_k: int = setting(5, Range(0), "episodes recalled per step")
    transfer: bool = setting(True, None, "use insights from earlier studies as priors")


@dataclass(frozen=True)
class ProposerSection:
    kind: str = setting("builtin", OneOf(("builtin", "llm")),
                        "where candidate hypotheses come from")
    model: str = setting("", None, "litellm model string (required for kind = \"llm\")")
    max_new: int = setting(3, Range(0), "hypotheses the LLM may add per call")
    every: int = setting(10, Range(1), "call the LLM every N steps")
    mock_response: str = setting("", None, "litellm's offline mock response (tests)")
    max_calls: int = setting(50, Range(0), "LLM calls the study may make; 0 = no cap")
    max_cost_usd: float = setting(
        1.0, Range(0), "USD the study's LLM calls may cost (litellm's prices, checked before "
        "each call against the most it could cost); 0 = no cap")
    api_base: str = setting("", None, "the provider's URL, where not litellm's default (a "
                            "local or self-hosted OpenAI-compatible server)")


DEVICE_PATTERN = r"cpu|cuda:[0-9]+"


@dataclass(frozen=True)
class RunnerSection:
    kind: str = setting("local", OneOf(("local", "parallel", "ray", "simulated")),
                        "how runs are executed (simulated: on a simulated clock, no run waits; "
                        "for fleet previews with a synthetic env)")
    workers: int = setting(2, Range(1), "runs made at once, and kept in flight across steps "
                           "(local: 1; ray: also the local instance's CPUs)")
    address: str = setting(
        "", None, "ray: the cluster to connect to (\"auto\" or a URL); \"\" = RAY_ADDRESS "
        "when set, else a local instance started for the study")
    cpus_per_run: float = setting(1.0, Range(0), "ray: CPUs each run reserves")
    gpus_per_run: float = setting(0.0, Range(0), "ray: GPUs each run reserves")
    devices: list[str] = setting(
        [], EachMatches(DEVICE_PATTERN, '"cpu" or "cuda:N" slots'),
        "parallel: one slot per entry, one run on each at a time (a run on \"cuda:N\" sees "
        "only GPU N, through CUDA_VISIBLE_DEVICES); [] = `workers` slots, no device set")
    lost_retries: int = setting(
        2, Range(0), "times a run whose worker died (not the run itself) is made again before "
        "it is recorded as a crash")
    spread: float = setting(
        0.0, Range(0), "simulated: sd of the log of a run's time around the seconds its env "
        "reports (a log-normal spread of run times)")


# The sections built as dataclasses ([[hypotheses]]: an array of tables, each one Hypothesis).
SECTION_TYPES: dict[str, type] = {
    "study": StudySection,
    "hypotheses": Hypothesis,
    "beliefs": BeliefsSection,
    "policy": PolicySection,
    "decision": DecisionSection,
    "memory": MemorySection,
    "proposer": ProposerSection,
    "runner": RunnerSection,
}
ARRAY_SECTIONS = frozenset({"hypotheses"})

# section -> key -> Field, in the order messages and docs list them.
SCHEMA: dict[str, dict[str, Field]] = {
    "study": fields_of(StudySection),
    "env": ENV_FIELDS,
    **{name: fields_of(cls) for name, cls in SECTION_TYPES.items() if name != "study"},
}
