"""
Statistics that can tell two RL methods apart: per-problem pass@k curves, and bootstrap intervals over
problems *and* seeds, with paired differences on the same problems.

Why both resamplings: a method's number varies with the problems it is scored on (some are easy) and
with its RL seed (runs diverge). Resampling problems alone would ignore the seed-to-seed spread that
made the earlier comparison inconclusive; resampling seeds alone would ignore that 500 problems are a
sample too. Each bootstrap replicate draws the problems once (shared by every method, so differences
are paired on the same problems) and each method's seeds independently (seed s of two methods share
nothing but a number).

  values  (S, N)  a per-problem score for S seeds x N problems (pass@k, distinct answers, ...)
"""
import math

import numpy as np


def pass_at_k_curve(n, c):
    """Unbiased pass@k for k = 1..n of one problem with c correct of n samples: 1 - C(n-c, k)/C(n, k),
    the ratio built as a running product prod_{i<k} (n-c-i)/(n-i), which is exactly 0 once k > n-c."""
    i = np.arange(n)
    ratio = np.cumprod(np.clip(n - c - i, 0, None) / (n - i))  # (n,) C(n-c, k)/C(n, k) at k = i + 1
    return 1.0 - ratio


def pass_at_k_matrix(n, correct):
    """(N, n) pass@k curves of N problems from their correct counts."""
    return np.stack([pass_at_k_curve(n, c) for c in correct])


def bootstrap_means(values, B=2000, seed=0):
    """(B, M) bootstrap replicates of each method's mean score. values: list of M arrays (S_m, N), the
    same N problems in the same order for every method. Problems are resampled once per replicate for
    all methods (paired); each method's seeds are resampled on their own."""
    rng = np.random.default_rng(seed)
    N = values[0].shape[1]
    out = np.empty((B, len(values)))
    for b in range(B):
        problems = rng.integers(0, N, N)  # (N,) shared by every method: paired
        for m, v in enumerate(values):
            seeds = rng.integers(0, v.shape[0], v.shape[0])  # (S_m,) this method's own seeds
            out[b, m] = v[seeds][:, problems].mean()
    return out


def interval(samples, level=0.95):
    """(low, high) percentile interval of bootstrap samples."""
    lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def summary(values, B=2000, seed=0):
    """For M methods' (S_m, N) scores: per method (mean, low, high), and the replicates (for differences)."""
    reps = bootstrap_means(values, B, seed)
    return [(float(v.mean()), *interval(reps[:, m])) for m, v in enumerate(values)], reps


def paired_difference(reps, a, b, point):
    """Mean difference method a - method b with its bootstrap interval; `point` is the observed
    difference of the means. The interval excludes 0 when the data can tell the two apart."""
    lo, hi = interval(reps[:, a] - reps[:, b])
    return {"diff": point, "low": lo, "high": hi, "excludes_zero": lo > 0 or hi < 0}


# ----------------------------------------------------------------------------- the frontier's statistics (issue 27)
def holm(p_values):
    """Holm's step-down adjustment of m p-values, in their input order. Sorted p_(1) <= ... <= p_(m):
    adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)). Rejecting where the adjusted p <= level keeps the
    probability of any false rejection in the family at most `level`, whatever the dependence between tests."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    m = len(p)
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def hierarchical_differences(a, b, B=2000, seed=0):
    """(B,) bootstrap replicates of mean(a) - mean(b) over bases, seeds and problems. a, b: lists over bases of
    (S, N) per-problem scores of two methods (S seeds each, the same N problems within a base). Each replicate
    draws bases with replacement; within each drawn base, each method's seeds on their own and the problems once
    for both (paired on problems). The mean weighs every base alike."""
    rng = np.random.default_rng(seed)
    K = len(a)
    out = np.empty(B)
    for r in range(B):
        diffs = []
        for k in rng.integers(0, K, K):  # bases
            N = a[k].shape[1]
            problems = rng.integers(0, N, N)  # shared by the two methods
            seeds_a = rng.integers(0, a[k].shape[0], a[k].shape[0])
            seeds_b = rng.integers(0, b[k].shape[0], b[k].shape[0])
            diffs.append(a[k][seeds_a][:, problems].mean() - b[k][seeds_b][:, problems].mean())
        out[r] = np.mean(diffs)
    return out


def bootstrap_p(replicates):
    """Two-sided p-value of 'no difference' from bootstrap replicates of a difference: twice the smaller share of
    replicates on either side of zero (at most 1; at least 1/B's resolution, reported as 0 when none cross)."""
    d = np.asarray(replicates)
    return float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean())))


def matched_distinct(counts_a, counts_b):
    """Distinct correct answers at a matched number of correct samples, per problem. counts_a[i], counts_b[i]: how
    many times each distinct correct answer of problem i came for two methods (eval.evaluate's answer_counts). Each
    side keeps k = the smaller of the two numbers of correct samples, drawn without replacement; the expected number
    of distinct answers among them, exactly: sum over answers j of 1 - C(c - m_j, k) / C(c, k), with c the side's
    correct samples and m_j the answer's count; each term is pass@k with that answer as the 'correct' one
    (pass_at_k_curve). Returns two (N,) arrays; a difference there is spread, not accuracy."""
    def expected(m, k):
        return sum(pass_at_k_curve(sum(m), mj)[k - 1] for mj in m) if k else 0.0
    ks = [min(sum(a), sum(b)) for a, b in zip(counts_a, counts_b)]
    return (np.array([expected(a, k) for a, k in zip(counts_a, ks)]),
            np.array([expected(b, k) for b, k in zip(counts_b, ks)]))


def _betainc(a, b, x):
    """The regularised incomplete beta I_x(a, b), by its continued fraction (Lentz's method)."""
    if x <= 0 or x >= 1:
        return float(x >= 1)
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast on this side only
        return 1 - _betainc(b, a, 1 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    f, c, d = 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1 + num * d
        d = 1 / (d if abs(d) > 1e-300 else 1e-300)
        c = 1 + num / (c if abs(c) > 1e-300 else 1e-300)
        f *= c * d
        if abs(c * d - 1) < 1e-14:
            break
    return front * (f - 1)


def t_quantile(q, df):
    """The q-quantile of Student's t with df degrees of freedom (q > 0.5), by bisection on its CDF,
    1 - I_{df / (df + t^2)}(df / 2, 1 / 2) / 2 for t > 0 (no scipy in the requirements)."""
    lo, hi = 0.0, 1e3
    for _ in range(200):
        t = (lo + hi) / 2
        if 1 - 0.5 * _betainc(df / 2, 0.5, df / (df + t * t)) < q:
            lo = t
        else:
            hi = t
    return (lo + hi) / 2


def seed_t_interval(a, b, level=0.95):
    """Seed-level t-interval of mean(a) - mean(b): a, b lists over bases of (S, N) per-problem scores, seed s of a
    paired with seed s of b (the same seed number: the same prompts drawn). One difference per (base, seed), the
    mean over the base's problems; a t-interval over those K * S differences. Returns (diff, low, high)."""
    d = np.concatenate([a[k].mean(1) - b[k].mean(1) for k in range(len(a))])  # (K * S,)
    half = t_quantile(1 - (1 - level) / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)
