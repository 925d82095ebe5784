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
