"""The Countdown solver, checked against an independent brute force, plus the data helpers."""
import itertools
import random
from fractions import Fraction

import pytest

import countdown
from countdown import canonical, generate_problems, regime_stats, solve, train_test_split
from reward import countdown_reward, parse_expression


# ----------------------------------------------------------------------------- brute force
def all_trees(items):
    """Every binary tree with the leaves `items` in this order, with every op at every node."""
    if len(items) == 1:
        yield items[0]
        return
    for k in range(1, len(items)):
        for left in all_trees(items[:k]):
            for right in all_trees(items[k:]):
                for op in "+-*/":
                    yield (op, left, right)


def value(tree):
    """Exact value, written independently of countdown.evaluate; None on division by zero."""
    if isinstance(tree, int):
        return Fraction(tree)
    op, a, b = tree
    x, y = value(a), value(b)
    if x is None or y is None or (op == "/" and y == 0):
        return None
    return {"+": x + y, "-": x - y, "*": x * y, "/": x / y if y else None}[op]


def brute_force(nums, target):
    """Canonical forms of all trees over all orderings of `nums` that equal `target`."""
    return {canonical(t) for perm in set(itertools.permutations(nums))
            for t in all_trees(perm) if value(t) == target}


def random_problems(count=20, seed=0):
    rng = random.Random(seed)
    problems = []
    for i in range(count):
        size = 3 if i % 2 else 4
        nums = [rng.randint(1, 6 if i % 3 == 0 else 12) for _ in range(size)]  # some repeats
        reachable = sorted({v for p in itertools.permutations(nums) for t in all_trees(p)
                            if (v := value(t)) is not None and v.denominator == 1})
        problems.append((nums, int(rng.choice(reachable))))
    return problems + [([2, 2, 2], 6), ([1, 3, 4, 6], 24), ([1, 1, 1], 1000)]  # last: unsolvable


@pytest.mark.parametrize("nums,target", random_problems())
def test_solver_matches_brute_force(nums, target):
    solutions = solve(nums, target)
    assert len(solutions) == len(set(solutions))
    assert {canonical(parse_expression(s)) for s in solutions} == brute_force(nums, target)
    for s in solutions:  # each solution parses, uses each number once and hits the target
        assert countdown_reward(f"<answer>{s}</answer>", nums, target) == 1.0


def test_solver_needs_fractions():
    assert "6/(1-3/4)" in solve([1, 3, 4, 6], 24)
    assert solve([1, 1, 1], 1000) == []


# ----------------------------------------------------------------------------- canonical forms
def same(a, b):
    return canonical(parse_expression(a)) == canonical(parse_expression(b))


def test_canonical_merges_commutativity_and_associativity():
    assert same("1+2+3", "3+(2+1)")
    assert same("1+2+3", "(1+3)+2")
    assert same("2*3/4", "3/4*2")
    assert same("5-(2-1)", "5-2+1")
    assert same("8/(4/2)", "8*2/4")


def test_canonical_keeps_different_expressions_apart():
    assert not same("2*(3+4)", "2*3+2*4")  # distributivity makes a different solution
    assert not same("5-2-1", "5-(2-1)")
    assert not same("8/4/2", "8/(4/2)")
    assert not same("1+2", "1*2")


# ----------------------------------------------------------------------------- data
def test_generate_problems_is_seeded():
    assert generate_problems(30, seed=1) == generate_problems(30, seed=1)
    assert generate_problems(30, seed=1) != generate_problems(30, seed=2)


def test_generated_problems_are_distinct_and_solvable():
    problems = generate_problems(100, seed=0)
    keys = [(tuple(sorted(p["nums"])), p["target"]) for p in problems]
    assert len(set(keys)) == len(problems) == 100
    for p in problems:
        assert 3 <= len(p["nums"]) <= 4
        assert len(p["solutions"]) >= 1
        assert p["solutions"] == solve(p["nums"], p["target"])
        for s in p["solutions"]:
            assert countdown_reward(f"<answer>{s}</answer>", p["nums"], p["target"]) == 1.0


def test_regime_knobs_are_honoured():
    # the default regime of train.py: 4 numbers from 2..15, targets 1..50 with at least 5 solutions
    problems = generate_problems(200, seed=0, sizes=(4,), min_num=2, max_num=15, max_target=50, min_solutions=5)
    for p in problems:
        assert len(p["nums"]) == 4 and all(2 <= x <= 15 for x in p["nums"]) and 1 <= p["target"] <= 50
        assert len(p["solutions"]) >= 5 and p["solutions"] == solve(p["nums"], p["target"])
    # 'weighted' draws targets in proportion to their solution counts: more solutions per problem
    weighted = generate_problems(200, seed=0, sizes=(4,), min_num=2, max_num=15, max_target=50, min_solutions=5,
                                 target="weighted")
    assert regime_stats(weighted)["solutions_mean"] > regime_stats(problems)["solutions_mean"]
    # the old default (3 or 4 numbers from 1..10, any solvable target) is unchanged by the new knobs
    assert generate_problems(30, seed=1) == generate_problems(30, seed=1, sizes=(3, 4), min_num=1, max_num=10,
                                                              max_target=50, min_solutions=1, target="uniform")


def test_regime_stats_by_hand():
    # solution counts 1, 2, 5, 9 (mean 17/4, median (2 + 5)/2); sizes 3, 4, 4, 4
    problems = [{"nums": [1, 2, 3], "target": 0, "solutions": ["a"]},
                {"nums": [1, 2, 3, 4], "target": 0, "solutions": ["a", "b"]},
                {"nums": [1, 2, 3, 4], "target": 0, "solutions": list("abcde")},
                {"nums": [1, 2, 3, 4], "target": 0, "solutions": list("abcdefghi")}]
    assert regime_stats(problems) == {"problems": 4, "solutions_mean": 4.25, "solutions_median": 3.5,
                                      "size_share": {3: .25, 4: .75}}
    # without stored solutions the solver counts them: {2, 3} -> 6 is 2*3 alone; {2, 2, 2} -> 6 is 2+2+2
    # and 2*2+2 (2*(2+2)... is 8, 2*2*2 is 8): 1 and 2 solutions
    assert regime_stats([{"nums": [2, 3], "target": 6}, {"nums": [2, 2, 2], "target": 6}])["solutions_mean"] == 1.5


def test_regime_stats_of_the_default_regime():
    # a regression pin of the fixed-seed default regime (seed 0, 1000 problems; README quotes the full set)
    st = regime_stats(generate_problems(1000, seed=0, sizes=(4,), min_num=2, max_num=15, max_target=50,
                                        min_solutions=5))
    assert st == {"problems": 1000, "solutions_mean": 8.816, "solutions_median": 8.0, "size_share": {4: 1.0}}


def test_too_many_problems_is_a_one_line_error():
    with pytest.raises(SystemExit, match="only .* distinct Countdown problems exist"):
        generate_problems(50, seed=0, sizes=(3,), min_num=2, max_num=3, max_target=10)


def key(p):
    return tuple(sorted(p["nums"])), p["target"]


def test_train_test_split_is_disjoint():
    train, test = train_test_split(generate_problems(200, seed=0))
    assert len(train) + len(test) == 200
    assert not {key(p) for p in train} & {key(p) for p in test}


def test_train_test_split_fraction_and_order_independence():
    rng = random.Random(0)
    problems = [{"nums": [rng.randint(1, 50) for _ in range(rng.choice((3, 4)))],
                 "target": rng.randint(1, 1000)} for _ in range(5000)]
    train, test = train_test_split(problems)
    assert 0.07 < len(test) / len(problems) < 0.13
    # the side depends on the problem itself, not on the order its numbers were written in
    shuffled = [{"nums": rng.sample(p["nums"], len(p["nums"])), "target": p["target"]}
                for p in problems]
    assert {key(p) for p in train_test_split(shuffled)[1]} == {key(p) for p in test}


def test_generated_problems_are_cached_on_disk_exactly(tmp_path, monkeypatch):
    # the second load reads the file the first wrote: the same problems, field for field; a damaged file is made again
    monkeypatch.setattr(countdown, "CACHE", str(tmp_path))
    regime = countdown.regime("4", 2, 15, 50, 5, "uniform")
    fresh = countdown.generate_problems(60, 3, **regime)
    assert countdown.cached_problems(60, 3, **regime) == fresh
    [path] = tmp_path.iterdir()
    assert countdown.cached_problems(60, 3, **regime) == fresh and len(list(tmp_path.iterdir())) == 1
    path.write_text('[{"nums": [1, 2')  # a kill mid-write elsewhere, a full disk
    assert countdown.cached_problems(60, 3, **regime) == fresh
    assert countdown.cached_problems(60, 4, **regime) != fresh  # another seed, another file
    monkeypatch.setattr(countdown, "CACHE", "/proc/no/such/dir")  # unwritable: generated, nothing raised
    assert countdown.cached_problems(60, 3, **regime) == fresh
