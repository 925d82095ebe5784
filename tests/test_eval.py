"""Unbiased pass@k (METHODS.md section 7) against a brute-force count, and the k grid."""
import itertools
import math

import pytest

from eval import ks_for, pass_at_k


def brute_force_pass_at_k(n, c, k):
    """Fraction of all k-subsets of n samples (c of them correct) that contain a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_brute_force_for_all_small_cases():
    for n in range(1, 9):
        for c in range(0, n + 1):
            for k in range(1, n + 1):
                expected = brute_force_pass_at_k(n, c, k)
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)
                # and the closed form 1 - C(n-c, k) / C(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k),
                                                           abs=1e-12)


def test_pass_at_k_known_values():
    assert pass_at_k(2, 1, 1) == pytest.approx(0.5)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the accuracy c/n
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(8, 0, 1) == 0.0
    assert pass_at_k(8, 0, 8) == 0.0
    assert pass_at_k(8, 5, 4) == 1.0  # n - c = 3 < k = 4: every 4-subset holds a correct one
    assert pass_at_k(8, 8, 1) == 1.0
    assert pass_at_k(1, 1, 1) == 1.0


def test_pass_at_k_is_not_the_biased_estimate():
    # the naive 1 - (1 - c/n)^k differs: n=4, c=1, k=2 -> .4375 instead of .5
    assert pass_at_k(4, 1, 2) != pytest.approx(1 - (1 - 1 / 4) ** 2)


@pytest.mark.parametrize("n,c,k", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5), (0, 0, 1), (4, 2, -1)])
def test_pass_at_k_bad_arguments_raise(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_ks_for():
    assert ks_for(64) == [1, 2, 4, 8, 16, 32, 64]
    assert ks_for(1) == [1]
    assert ks_for(12) == [1, 2, 4, 8, 12]
    assert ks_for(12)[-1] == 12
    for n in range(1, 70):
        ks = ks_for(n)
        assert ks[-1] == n and ks == sorted(set(ks)) and all(k <= n for k in ks)


def test_merging_shards_equals_one_evaluation():
    # data-parallel evaluation: per-problem counts of disjoint shards merge into the full result
    from eval import merge_results, summarize
    full = summarize(8, 1.0, [0, 3, 8, 1, 5], [0, 2, 1, 1, 3], 12.0, 30)
    shards = [summarize(8, 1.0, [0, 8, 5], [0, 1, 3], 7.0, 18), summarize(8, 1.0, [3, 1], [2, 1], 5.0, 12),
              summarize(8, 1.0, [], [], 0.0, 0)]  # a rank with no problem
    merged = merge_results(shards)
    for key in ("pass@k", "accuracy", "distinct_correct", "entropy", "problems"):
        assert merged[key] == pytest.approx(full[key])
    assert full["pass@k"][1] == pytest.approx((0 + 3 + 8 + 1 + 5) / 40)  # pass@1 = mean accuracy
