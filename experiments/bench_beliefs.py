"""Benchmark of beliefs/: fast-path step time and memory, PyMC fit time, fast path vs NUTS.

Command (from the repository root):

    .venv/bin/python experiments/bench_beliefs.py                 # fast path + PyMC at 50, 200
    .venv/bin/python experiments/bench_beliefs.py --pymc-sizes 50 200 1000 --draws 500 --tune 500
    .venv/bin/python experiments/bench_beliefs.py --compare  # disagreement with NUTS, both variants

A "step" is what the engine does once per batch: update with 2 new runs, then predictive and
information gain for every candidate config (incumbent + one hypothesis). Data: hypotheses in 4
categories, 10x as many observations as hypotheses, configs of 0-3 applied hypotheses.
BLAS is limited to one thread (OPENBLAS_NUM_THREADS=1) unless already set: on a shared 2-core
machine multi-threaded BLAS made a 200x200 Cholesky ~100x slower (measured 0.5 ms vs 97 ms).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

from beliefs import BeliefPrior, Beliefs, Hypothesis, Observation  # noqa: E402

CATEGORIES = ["architecture", "optimizer", "schedule", "data"]


def simulate(n_hypotheses: int, n_observations: int, rng: np.random.Generator):
    hypotheses = [Hypothesis(f"h{i:04d}", CATEGORIES[i % 4]) for i in range(n_hypotheses)]
    effects = rng.normal(0, 0.02, n_hypotheses)
    obs = []
    for _ in range(n_observations):
        applied = rng.choice(n_hypotheses, size=rng.integers(0, 4), replace=False)
        config = frozenset(hypotheses[i].name for i in applied)
        obs.append(Observation(config, 1.0 + effects[applied].sum() + 0.02 * rng.normal()))
    return hypotheses, obs


def bench_fast_path(
    n_hypotheses: int, rng: np.random.Generator, steps: int = 5
) -> dict[str, float]:
    """Mean wall time of a step, then (in a second pass: tracemalloc slows allocation) peak
    memory."""
    hypotheses, obs = simulate(n_hypotheses, 10 * n_hypotheses + 4 * steps, rng)
    beliefs = Beliefs(hypotheses)
    beliefs.update(obs[: 10 * n_hypotheses])
    beliefs.effects()
    incumbent = frozenset({hypotheses[0].name})
    candidates = [incumbent | {h.name} for h in hypotheses[1:]]
    new_runs = iter(obs[10 * n_hypotheses:])

    def step() -> None:
        beliefs.update([next(new_runs), next(new_runs)])
        beliefs.predict(candidates)
        beliefs.info_gain(candidates, 2)

    start = time.perf_counter()
    for _ in range(steps):
        step()
    per_step = (time.perf_counter() - start) / steps
    tracemalloc.start()
    for _ in range(steps):
        step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"step_ms": 1e3 * per_step, "peak_mb": peak / 2**20, "beliefs": beliefs}


def bench_pymc(beliefs: Beliefs, draws: int, tune: int, chains: int) -> float:
    from beliefs import fit_pymc

    start = time.perf_counter()
    fit_pymc(beliefs, draws=draws, tune=tune, chains=chains, seed=0, hierarchical=True)
    return time.perf_counter() - start


def compare_with_nuts(draws: int, tune: int) -> None:
    """The test's study (30 hypotheses, 4 categories, 3-6 replicates, noise ~ effects): max gaps in
    posterior sd units between the fast path and NUTS, for NUTS with fixed and with integrated
    scales."""
    from beliefs import fit_pymc

    rng = np.random.default_rng(0)
    hypotheses = [Hypothesis(f"h{i:02d}", CATEGORIES[i % 4]) for i in range(30)]
    effects = rng.normal(0, 0.02, 30)
    obs = [Observation(frozenset(), 1.0 + 0.02 * rng.normal()) for _ in range(5)]
    for h, e in zip(hypotheses, effects):
        obs += [Observation(frozenset({h.name}), 1.0 + e + 0.02 * rng.normal())
                for _ in range(rng.integers(3, 7))]
    print(f"\nfast path vs NUTS ({draws} draws x 2 chains): "
          "max |gap| / fast-path sd over 30 effects")
    print(f"{'fast path':<28}{'NUTS scales':<14}{'mean':>8}{'5% end':>9}{'95% end':>9}")
    fits = {hier: fit_pymc(_fit(hypotheses, obs, True), draws=draws, tune=tune, chains=2, seed=1,
                           hierarchical=hier)
            for hier in (False, True)}
    for correction in (False, True):
        beliefs = _fit(hypotheses, obs, correction)
        summary = beliefs.effects()
        sd = np.array([e.sd for e in summary])
        for hier, idata in fits.items():
            draws_ = idata.posterior["effect"].values.reshape(-1, 30)
            gaps = [np.abs(stat - np.array(ref)) / sd for stat, ref in (
                (draws_.mean(0), [e.mean for e in summary]),
                (np.quantile(draws_, 0.05, 0), [e.lo for e in summary]),
                (np.quantile(draws_, 0.95, 0), [e.hi for e in summary]))]
            label = "EB + Kass-Steffey" if correction else "EB plug-in"
            print(f"{label:<28}{'integrated' if hier else 'fixed at EB':<14}"
                  + "".join(f"{g.max():>9.3f}" for g in gaps))


def _fit(hypotheses, obs, correction: bool) -> Beliefs:
    beliefs = Beliefs(hypotheses, prior=BeliefPrior(hyper_uncertainty=correction))
    beliefs.update(obs)
    return beliefs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--pymc-sizes", type=int, nargs="*", default=[50, 200])
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--tune", type=int, default=500)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--compare", action="store_true",
                        help="only the fast path vs NUTS comparison")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.compare:
        compare_with_nuts(draws=3000, tune=500)
        return
    rng = np.random.default_rng(args.seed)
    print(f"{'hypotheses':>10}{'observations':>14}{'step ms':>10}{'peak MB':>10}{'PyMC fit s':>12}")
    for n in args.sizes:
        result = bench_fast_path(n, rng)
        pymc_s = (f"{bench_pymc(result['beliefs'], args.draws, args.tune, args.chains):.1f}"
                  if n in args.pymc_sizes else "skipped")
        print(f"{n:>10}{10 * n:>14}{result['step_ms']:>10.1f}{result['peak_mb']:>10.1f}"
              f"{pymc_s:>12}", flush=True)
    print(f"(PyMC: {args.chains} chains x {args.draws} draws after {args.tune} tuning, "
          "hierarchical, compile included)")


if __name__ == "__main__":
    main()
