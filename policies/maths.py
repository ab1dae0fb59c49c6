"""Pure maths of the policies: EFE terms, softmax selection, learntropy, keep-rule quantities.

Sign convention (everywhere in this package): `efe` is in nats and LOWER IS BETTER;
`neg_efe = -efe` is what a policy maximises. The metric is lower-is-better; "standardised"
means z = (y - centre) / scale as defined by `Beliefs.to_standard`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import integrate, special, stats
from scipy.optimize import brentq


def info_gain(
    r: np.ndarray | float, n: np.ndarray | float, h: np.ndarray | float = 1.0
) -> np.ndarray:
    """Epistemic value IG(c, n) = 0.5 log(1 + n r / h) nats (known-sigma mutual information).

    r = x_c^T V x_c (dimensionless, in units of sigma^2), n runs, h = noise variance multiplier."""
    r_arr, n_arr, h_arr = (np.asarray(v, dtype=float) for v in (r, n, h))
    if np.any(r_arr < 0) or np.any(n_arr < 0) or np.any(h_arr <= 0):
        raise ValueError(f"info_gain needs r >= 0, n >= 0, h > 0; got r={r!r}, n={n!r}, h={h!r}")
    return 0.5 * np.log1p(n_arr * r_arr / h_arr)


def expected_log_preference(mean_standardised: np.ndarray | float, preference: float) -> np.ndarray:
    """Pragmatic value E_q[log p~(y)] = log(lambda) - lambda * mu, nats.

    Boltzmann preference log p~(y) = log lambda - lambda * y over the standardised metric
    (lower preferred); lambda = `preference`, nats per standardised unit; mu the predicted mean."""
    if not (math.isfinite(preference) and preference > 0):
        raise ValueError(f"preference (lambda) must be a finite number > 0, got {preference!r}")
    return math.log(preference) - preference * np.asarray(mean_standardised, dtype=float)


def decision_information(variance_now: np.ndarray | float,
                         variance_after: np.ndarray | float) -> np.ndarray:
    """Nats the planned runs tell about d = mu(candidate) - mu(incumbent), the quantity the keep
    decision reads: the mutual information I(d; y) = 0.5 log(Var(d) / Var(d | y)) of a Gaussian
    d and runs y with known noise, where Var(d | y) does not depend on y. Variances in any one
    unit (the beliefs give them in units of sigma^2); 0 nats where d is known exactly already
    (a move that changes nothing the model can tell)."""
    now, after = np.asarray(variance_now, dtype=float), np.asarray(variance_after, dtype=float)
    if np.any(after < 0) or np.any(after > now * (1 + 1e-12)) or np.any((after == 0) & (now > 0)):
        raise ValueError("decision_information: need 0 < variance_after <= variance_now")
    known = now == 0
    return np.where(known, 0.0, 0.5 * np.log(np.where(known, 1.0, now) / np.where(known, 1.0,
                                                                                  after)))


def expected_free_energy(
    epistemic: np.ndarray | float,
    pragmatic: np.ndarray | float,
    expected_seconds: np.ndarray | float,
    cost_weight: float,
    *,
    use_epistemic: bool = True,
    use_pragmatic: bool = True,
    use_cost: bool = True,
) -> np.ndarray:
    """efe = -IG - E_q[log p~(y)] + cost_weight * seconds, nats; LOWER IS BETTER.

    `epistemic` = IG (nats), `pragmatic` = E_q[log p~] (nats), `expected_seconds` of the plan,
    `cost_weight` in nats per second. The flags drop a term (ablations)."""
    if not (math.isfinite(cost_weight) and cost_weight >= 0):
        raise ValueError(f"cost_weight must be a finite number >= 0, got {cost_weight!r}")
    epistemic_arr = np.asarray(epistemic, dtype=float)
    pragmatic_arr = np.asarray(pragmatic, dtype=float)
    cost_arr = cost_weight * np.asarray(expected_seconds, dtype=float)
    zero = np.zeros(np.broadcast_shapes(epistemic_arr.shape, pragmatic_arr.shape, cost_arr.shape))
    return (zero - (epistemic_arr if use_epistemic else 0.0)
            - (pragmatic_arr if use_pragmatic else 0.0)
            + (cost_arr if use_cost else 0.0))


def softmax_probabilities(scores: np.ndarray, gamma: float) -> np.ndarray:
    """q(a) = exp(gamma s_a) / sum_b exp(gamma s_b) for scores s (higher better, e.g. neg_efe).

    Computed after subtracting the maximum, so any finite gamma is safe (no overflow); a score of
    -inf gets probability 0. Ties at the maximum share the mass as gamma -> infinity."""
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"softmax needs a non-empty 1-D array of scores, got shape {s.shape}")
    if np.any(np.isnan(s)) or np.any(s == np.inf):
        raise ValueError(f"softmax scores must be finite or -inf, got {s.tolist()}")
    if not (math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be a finite number > 0, got {gamma!r}")
    best = s.max()
    if best == -np.inf:
        raise ValueError("softmax: every score is -inf, nothing can be chosen")
    # gamma * (s - best) <= 0, and multiplying after the subtraction avoids inf - inf.
    weights = np.exp(gamma * (s - best))
    return weights / weights.sum()


def sample_index(probabilities: np.ndarray, rng: np.random.Generator) -> int:
    """One draw a ~ Categorical(probabilities), by inverting the CDF with one uniform of `rng`."""
    cumulative = np.cumsum(probabilities)
    return int(min(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"),
                   len(cumulative) - 1))


def argmax_random_tie(scores: np.ndarray, rng: np.random.Generator) -> int:
    """Index of the largest score; ties broken uniformly with `rng` (never always the first)."""
    s = np.asarray(scores, dtype=float)
    best = np.flatnonzero(s == s.max())
    return int(best[rng.integers(len(best))])


def student_t_entropy(scale: np.ndarray | float, df: np.ndarray | float) -> np.ndarray:
    """Differential entropy of t_df(., scale), nats:
    log s + (df+1)/2 [psi((df+1)/2) - psi(df/2)] + log(sqrt(df) B(df/2, 1/2))."""
    s, nu = np.asarray(scale, dtype=float), np.asarray(df, dtype=float)
    return (np.log(s)
            + 0.5 * (nu + 1) * (special.digamma(0.5 * (nu + 1)) - special.digamma(0.5 * nu))
            + 0.5 * np.log(nu) + special.betaln(0.5 * nu, 0.5))


def effect_variance_after(v_jj: float, cov_jc: float, r: float, h: float, n: float) -> float:
    """V_jj after n runs at config c: v_jj - n cov_jc^2 / (h + n r) (units of sigma^2)."""
    return v_jj - n * cov_jc**2 / (h + n * r)


def entropy_reduction_offset(
    a: float, v_jj: float, cov_jc: float, r: float, h: float, n: float
) -> float:
    """K in the realised reduction dH = K + 0.5 log B of effect j's Student-t marginal, nats.

    K = 0.5 log(v_jj / v_jj') + 0.5 log(a'/a) + c(2a) - c(2a'), a' = a + n/2, where c(nu) is the
    df-dependent part of the Student-t entropy. B = b/b' ~ Beta(a, n/2) under the predictive."""
    _check_nig(a, v_jj, r, h, n)
    v_after = effect_variance_after(v_jj, cov_jc, r, h, n)
    if v_after <= 0:
        raise ValueError(f"posterior variance after the update is {v_after!r} <= 0: "
                         "inconsistent projection "
                         f"(v_jj={v_jj!r}, cov_jc={cov_jc!r}, r={r!r}, h={h!r}, n={n!r})")
    a_after = a + 0.5 * n
    df_part = float(student_t_entropy(1.0, 2 * a) - student_t_entropy(1.0, 2 * a_after))
    return 0.5 * math.log(v_jj / v_after) + 0.5 * math.log(a_after / a) + df_part


def learntropy_nig(
    a: float, v_jj: float, cov_jc: float, r: float, h: float, n: float, kappa: float
) -> float:
    """Learntropy = E[dH_+] - kappa E[dH_-], nats, dH the realised entropy reduction of effect j.

    dH = K + 0.5 log B with B = b/b' ~ Beta(a, n/2) exactly: the n outcomes' residual sum of
    squares (within-replicate chi2_{n-1} plus the mean's chi2_1) over sigma^2 ~ IG(a, b) makes
    b'/b - 1 ~ BetaPrime(n/2, a). Uses E[dH_+] - kappa E[dH_-] = E[dH] - (kappa - 1) E[dH_-] with
    E[dH] = K + 0.5 (psi(a) - psi(a + n/2)) in closed form and E[dH_-] by 1-D quadrature."""
    if not (math.isfinite(kappa) and kappa >= 1):
        raise ValueError(f"kappa must be a finite number >= 1, got {kappa!r}")
    offset = entropy_reduction_offset(a, v_jj, cov_jc, r, h, n)
    mean_reduction = offset + 0.5 * (special.digamma(a) - special.digamma(a + 0.5 * n))
    return float(mean_reduction - (kappa - 1) * _expected_negative_part(offset, a, 0.5 * n))


def _expected_negative_part(offset: float, alpha: float, beta: float) -> float:
    """E[max(0, -(K + 0.5 log B))] for B ~ Beta(alpha, beta), by quadrature.

    Substituting u = B^alpha makes the density (1 - u^(1/alpha))^(beta-1) / (alpha B(alpha, beta))
    on (0, 1): smooth at u = 0, and its only singularity (beta < 1) sits at u = 1, where the
    negative part vanishes unless K < 0. The negative part lives on u < u* = exp(-2 alpha K)."""
    u_star = math.exp(min(-2.0 * alpha * offset, 0.0))  # min(1, exp(-2 alpha K))
    log_norm = math.log(alpha) + special.betaln(alpha, beta)

    def integrand(u: float) -> float:
        if u <= 0.0:
            return 0.0
        log_b = math.log(u) / alpha
        tail = -math.expm1(log_b)  # 1 - B, accurate near u = 1
        return -(offset + 0.5 * log_b) * math.exp((beta - 1) * math.log(tail) - log_norm)

    if u_star < 1.0:
        value, _ = integrate.quad(integrand, 0.0, u_star, limit=200)
        return value
    # K <= 0: the whole range counts; the factor (1 - u)^(beta-1) goes into quad's algebraic
    # weight and the rest, ((1 - u^(1/alpha)) / (1 - u))^(beta-1), is smooth (-> alpha^(1-beta)).
    def smooth(u: float) -> float:
        if u <= 0.0:
            return 0.0
        log_b = math.log(u) / alpha
        ratio = 1.0 / alpha if u >= 1.0 else math.expm1(log_b) / math.expm1(math.log(u))
        return -(offset + 0.5 * log_b) * math.exp((beta - 1) * math.log(ratio) - log_norm)

    value, _ = integrate.quad(smooth, 0.0, 1.0, weight="alg", wvar=(0.0, beta - 1), limit=200)
    return value


def _check_nig(a: float, v_jj: float, r: float, h: float, n: float) -> None:
    if not (a > 0 and v_jj > 0 and r >= 0 and h > 0 and n >= 1):
        raise ValueError("need a > 0, v_jj > 0, r >= 0, h > 0, n >= 1; "
                         f"got a={a!r}, v_jj={v_jj!r}, r={r!r}, h={h!r}, n={n!r}")


def learntropy_of_reduction(reduction: float, kappa: float) -> float:
    """Realised learntropy of one entropy reduction dH (nats): dH if dH >= 0 else kappa * dH."""
    if not (math.isfinite(kappa) and kappa >= 1):
        raise ValueError(f"kappa must be a finite number >= 1, got {kappa!r}")
    return reduction if reduction >= 0 else kappa * reduction


def compression_progress_from_losses(losses_before: np.ndarray, losses_after: np.ndarray) -> float:
    """Compression progress = sum_i (loss_before_i - loss_after_i), nats over the same past
    observations; positive = the model now predicts (compresses) the past better. NaN when a loss
    is not finite (a run with no proper leave-one-out predictive): the progress is undefined."""
    before, after = np.asarray(losses_before, dtype=float), np.asarray(losses_after, dtype=float)
    if before.shape != after.shape:
        raise ValueError("log-losses must cover the same observations: "
                         f"shapes {before.shape} and {after.shape}")
    if not (np.all(np.isfinite(before)) and np.all(np.isfinite(after))):
        return float("nan")
    return float(np.sum(before - after))


def probability_better(mean: float, scale: float, df: float, epsilon: float) -> float:
    """p_better = P(d < -epsilon) for the difference d = mu_cand - mu_inc ~ t_df(mean, scale),
    metric units (lower-is-better metric: a negative difference is an improvement)."""
    if scale <= 0:
        return float(mean < -epsilon)
    return float(stats.t.cdf((-epsilon - mean) / scale, df))


def keep_boundary(scale_after: float, df: float, threshold: float, epsilon: float,
                  null_at: Callable[[float, float], float] | None = None) -> float:
    """m*: a look whose slab posterior of d is t_df(m, scale_after) keeps exactly when m <= m*,
    metric units (-inf when no mean keeps).

    p_better(m) = (1 - null_at(m, s')) P_t(d < -epsilon) falls as m rises (a larger mean is both
    less likely below -epsilon and likelier to be the spike), so the keep set is a half-line.
    Without a spike m* = -epsilon - s' t_df^-1(threshold); with one, the root of
    p_better(m) = threshold."""
    if scale_after <= 0:
        return -epsilon
    if null_at is None:
        return -epsilon - scale_after * float(stats.t.ppf(threshold, df))

    def margin(m: float) -> float:
        return ((1.0 - null_at(m, scale_after)) * probability_better(m, scale_after, df, epsilon)
                - threshold)

    far = -epsilon - 60.0 * scale_after  # where P(d = 0) and P(d >= -epsilon) are both ~0
    if margin(far) <= 0:
        return -math.inf
    return float(brentq(margin, far, -epsilon, xtol=1e-9 * scale_after))


def keep_value(mean: float, scale: float, scale_after: float, df: float, threshold: float,
               epsilon: float, null_at: Callable[[float, float], float] | None = None) -> float:
    """Expected true gain of the keep decision taken after the planned runs, metric units
    (lower-is-better metric, so a gain is -d): E[-d 1{the look after the runs keeps}].

    Now d = mu(candidate) - mu(incumbent) has the slab posterior t_df(mean, scale) and
    P(d = 0) = null_at(mean, scale); after the runs its slab scale is scale_after (the exact
    posterior variance of the planned runs, which does not depend on their outcomes). Known-noise
    preposterior: under the slab the next posterior mean is m' ~ N(mean, v), v = scale^2 -
    scale_after^2, and E[d | m'] = m', so by the tower rule
        E_slab[-d 1{m' <= m*}] = -mean Phi(alpha) + sqrt(v) phi(alpha), alpha = (m* - mean)/sqrt(v),
    with m* from `keep_boundary`. When d = 0 a keep gains nothing, so the value is
    (1 - null_at(mean, scale)) times that. It is the knowledge gradient of a keep rule that asks
    for p_better >= threshold rather than a positive mean: a change that may be good and whose
    verdict the runs can still change is worth the most; one the runs cannot lift to a keep
    (hopeless, or already known) is worth nothing."""
    slab = 1.0 - (null_at(mean, scale) if null_at is not None else 0.0)
    needed = keep_boundary(scale_after, df, threshold, epsilon, null_at)
    spread = math.sqrt(max(scale**2 - scale_after**2, 0.0))
    if spread <= 1e-12 * max(scale, 1e-300):
        return slab * -mean if mean <= needed else 0.0
    if needed == -math.inf:
        return 0.0
    alpha = (needed - mean) / spread
    return float(slab * (-mean * stats.norm.cdf(alpha) + spread * stats.norm.pdf(alpha)))


def expected_improvement(
    mean: np.ndarray, scale: np.ndarray, df: np.ndarray, target: float
) -> np.ndarray:
    """E[max(0, target - X)] for X ~ t_df(mean, scale), same units as X (requires df > 1):
    s [z F(z) + (df + z^2) / (df - 1) f(z)], z = (target - mean) / s."""
    m, s, nu = (np.asarray(v, dtype=float) for v in (mean, scale, df))
    if np.any(nu <= 1):
        raise ValueError(f"expected_improvement needs df > 1 (finite mean), got df={nu.tolist()}")
    safe = np.where(s > 0, s, 1.0)
    z = (target - m) / safe
    value = safe * (z * stats.t.cdf(z, nu) + (nu + z**2) / (nu - 1) * stats.t.pdf(z, nu))
    return np.where(s > 0, value, np.maximum(target - m, 0.0))


SPENDING_FUNCTIONS = ("obrien_fleming", "pocock")


def alpha_spent(alpha: float, fraction: float, spending: str = "obrien_fleming") -> float:
    """Lan-DeMets spending function alpha*(t): the share of the one-sided error `alpha` (a
    probability) a group-sequential test may have spent by information fraction t in [0, 1].

    "obrien_fleming": alpha*(t) = 2 (1 - Phi(Phi^-1(1 - alpha/2) / sqrt(t))), strict early and
    near-nominal at the end; "pocock": alpha*(t) = alpha log(1 + (e - 1) t), roughly constant
    nominal levels. Both are 0 at t = 0 and alpha at t = 1 (Jennison & Turnbull 2000, ch. 7)."""
    if not (0 < alpha < 1):
        raise ValueError(f"alpha_spent: alpha must be in (0, 1), got {alpha!r}")
    if not (0 <= fraction <= 1):
        raise ValueError(f"alpha_spent: fraction must be in [0, 1], got {fraction!r}")
    if spending == "obrien_fleming":
        if fraction == 0:
            return 0.0
        return float(2 * stats.norm.sf(stats.norm.isf(alpha / 2) / math.sqrt(fraction)))
    if spending == "pocock":
        return float(alpha * math.log1p((math.e - 1) * fraction))
    raise ValueError(f"alpha_spent: spending must be one of {SPENDING_FUNCTIONS}, got {spending!r}")


def sequential_boundaries(alpha: float, fractions: list[float] | np.ndarray,
                          spending: str = "obrien_fleming", grid: int = 801) -> np.ndarray:
    """One-sided group-sequential efficacy boundaries z_1..z_K (standard-normal units) for looks at
    information fractions 0 < t_1 < ... < t_K = 1, by Lan-DeMets error spending.

    Under the null the look statistics are Z_k = W(t_k) / sqrt(t_k) for a standard Brownian motion
    W (independent increments, Cov(Z_j, Z_k) = sqrt(t_j / t_k)). z_k solves
    P(Z_1 < z_1, ..., Z_{k-1} < z_{k-1}, Z_k >= z_k) = alpha*(t_k) - alpha*(t_{k-1}), so
    P(some Z_k >= z_k) = alpha exactly: the chance of ever crossing under the null, over all K
    looks, is alpha. Any subset of the looks, with the same boundaries, crosses with probability
    <= alpha (dropping a look only removes paths). Futility stops (the lower side) are non-binding:
    they only lower the error. The crossing probabilities come from the standard recursive
    numerical integration of the sub-density of W(t_k) on the continuation region (Simpson's rule
    on `grid` points from -8 sd to the boundary; Jennison & Turnbull 2000, ch. 19); each z_k by
    Brent's method. The nominal per-look level is 1 - Phi(z_k); z_k = inf where nothing is spent."""
    t = np.asarray(fractions, dtype=float)
    if (t.ndim != 1 or t.size == 0 or np.any(t <= 0) or np.any(np.diff(t) <= 0)
            or not math.isclose(t[-1], 1.0)):
        raise ValueError("sequential_boundaries: fractions must increase strictly from > 0 to 1, "
                         f"got {t.tolist()}")
    if grid < 11 or grid % 2 == 0:
        raise ValueError(f"sequential_boundaries: grid must be an odd number >= 11, got {grid!r}")
    spent = np.array([alpha_spent(alpha, min(float(f), 1.0), spending) for f in t])
    increments = np.diff(spent, prepend=0.0)
    bounds = np.empty(t.size)
    # Sub-density of W(t_{k-1}) on its continuation region, as
    # (grid points, Simpson weight x density); before the first look W(0) = 0 is a point mass.
    points, mass = np.zeros(1), np.ones(1)
    t_prev = 0.0
    for k, (t_k, spend) in enumerate(zip(t, increments)):
        step_sd = math.sqrt(t_k - t_prev)
        bounds[k] = _spend_boundary(points, mass, math.sqrt(t_k), step_sd, float(spend))
        if k + 1 == t.size:
            break
        # Sub-density of W(t_k) on (-8 sd, c_k): the previous one convolved with
        # N(0, t_k - t_{k-1}).
        bottom = -8 * math.sqrt(t_k)
        top = bounds[k] * math.sqrt(t_k) if math.isfinite(bounds[k]) else 8 * math.sqrt(t_k)
        if top <= bottom:
            raise ValueError(f"sequential_boundaries: boundary {bounds[k]!r} at look {k + 1} "
                             "leaves no continuation region")
        new_points = np.linspace(bottom, top, grid)
        density = stats.norm.pdf((new_points[:, None] - points[None, :]) / step_sd) @ mass / step_sd
        simpson = np.full(grid, 2.0)
        simpson[1::2] = 4.0
        simpson[0] = simpson[-1] = 1.0
        points, mass = new_points, simpson * (top - bottom) / (grid - 1) / 3 * density
        t_prev = float(t_k)
    return bounds


def _spend_boundary(
    points: np.ndarray, mass: np.ndarray, root_t: float, step_sd: float, spend: float
) -> float:
    """z with sum_i mass_i P(W_i + N(0, step_sd^2) >= z root_t) = spend: the boundary that spends
    exactly `spend` at this look; inf where spend <= 0, -inf where spend is all that is left."""
    def crossing(z: float) -> float:
        return float(np.sum(mass * stats.norm.sf((z * root_t - points) / step_sd)))

    if spend <= 0:
        return math.inf
    if spend >= float(np.sum(mass)):
        return -math.inf
    hi, lo = 1.0, -1.0
    while crossing(hi) > spend:
        hi *= 2
    while crossing(lo) < spend:
        lo *= 2
    return float(brentq(lambda z: crossing(z) - spend, lo, hi, xtol=1e-10, rtol=1e-12))
