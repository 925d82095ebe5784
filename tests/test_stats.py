"""stats.py's frontier statistics (issue 27) on cases computed by hand: Holm's adjustment, the bootstrap p-value,
Student's t quantiles, the seed-level interval, and what the hierarchical bootstrap resamples."""
import math

import numpy as np
import pytest

import stats


def test_holm_by_hand():
    # p = [.01, .04, .03, .005], m = 4. Sorted: .005 x 4 = .02; .01 x 3 = .03; .03 x 2 = .06; .04 x 1 = .04, but
    # never below the one before it: .06. Back in the input order:
    assert stats.holm([.01, .04, .03, .005]).tolist() == pytest.approx([.03, .06, .06, .02])
    assert stats.holm([.5, .9]).tolist() == [1.0, 1.0]  # capped at 1
    assert stats.holm([.02]).tolist() == [.02]  # a family of one: unadjusted
    # at level .05 Holm rejects .005 and .01 here; Bonferroni (x 4) would reject only .005
    assert (stats.holm([.01, .04, .03, .005]) <= .05).tolist() == [True, False, False, True]


def test_bootstrap_p_by_hand():
    assert stats.bootstrap_p([1, 2, 3, -1]) == .5  # one of four at or below 0: 2 * 1/4
    assert stats.bootstrap_p([1, 2, 3, 4]) == 0.0
    assert stats.bootstrap_p([-1, 1]) == 1.0


@pytest.mark.parametrize("df, t", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (19, 2.0930), (1000, 1.9623)])
def test_t_quantile_matches_the_table(df, t):
    assert stats.t_quantile(.975, df) == pytest.approx(t, abs=1e-4)


def test_seed_t_interval_by_hand():
    # one base, 3 seeds, 2 problems: per-seed means of a - b are .5 - .25 = .25, .75 - .25 = .5, .5 - .5 = 0;
    # mean .25, sd .25, half-width t_{.975, 2} * .25 / sqrt(3) = 4.3027 * .14434 = .62106
    a = [np.array([[1, 0], [1, .5], [.5, .5]])]
    b = [np.array([[0, .5], [.5, 0], [1, 0]])]
    diff, low, high = stats.seed_t_interval(a, b)
    assert diff == pytest.approx(.25)
    assert (low, high) == pytest.approx((.25 - 4.30265 * .25 / math.sqrt(3), .25 + 4.30265 * .25 / math.sqrt(3)),
                                        abs=1e-4)


def test_hierarchical_bootstrap_resamples_bases_seeds_and_problems():
    rng = np.random.default_rng(0)
    # no spread anywhere: every replicate is the difference itself
    same = [np.full((3, 5), .7)], [np.full((3, 5), .2)]
    assert np.allclose(stats.hierarchical_differences(*same, B=50), .5)
    # a difference that lives in one base of two: resampling bases spreads the replicates between 0 and 2 x it
    a = [np.full((3, 5), .6), np.full((3, 5), .2)]
    b = [np.full((3, 5), .2), np.full((3, 5), .2)]
    reps = stats.hierarchical_differences(a, b, B=400)
    assert set(np.round(reps, 6)) == {0.0, .2, .4}  # bases drawn (1,1), (0,1) or (1,0), (0,0)
    # paired on problems: a and b share a per-problem difficulty, which cancels in every replicate
    hard = rng.random((1, 200))
    reps = stats.hierarchical_differences([np.repeat(hard, 4, 0) + .1], [np.repeat(hard, 4, 0)], B=200)
    assert np.allclose(reps, .1)


def test_matched_distinct_by_hand():
    # problem 1: a's 3 correct samples are 2 x one answer + 1 x another, b has 1 correct: k = 1, one answer each side.
    # problem 2: a's 4 correct are 4 answers once each, b's 4 are one answer 4 times: k = 4, all kept: 4 against 1.
    # problem 3: a = [3, 1] and b = [1, 1]: k = 2. a keeps 2 of its 4: the 1-answer is among them with chance
    #   1 - C(3, 2)/C(4, 2) = 1/2, the 3-answer always (C(1, 2) = 0): 1.5 expected; b keeps both: 2.
    # problem 4: b has no correct sample: k = 0, nothing kept, 0 on both sides.
    a, b = stats.matched_distinct([[2, 1], [1, 1, 1, 1], [3, 1], [5]], [[1], [4], [1, 1], []])
    assert a.tolist() == pytest.approx([1, 4, 1.5, 0])
    assert b.tolist() == pytest.approx([1, 1, 2, 0])


def test_matched_distinct_is_the_mean_over_subsamples():
    rng = np.random.default_rng(0)
    counts = [7, 3, 2, 1, 1]  # 14 correct samples, 5 answers
    pool = np.repeat(np.arange(5), counts)
    draws = [len(set(rng.choice(pool, 6, replace=False))) for _ in range(20000)]
    exact, _ = stats.matched_distinct([counts], [[6]])  # k = 6
    assert exact[0] == pytest.approx(np.mean(draws), abs=0.02)
