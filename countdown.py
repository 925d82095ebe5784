"""
The Countdown task: use every given number exactly once, with + - * / and parentheses,
to reach the target. This file has the seeded problem generator, an exhaustive solver
that finds *all* distinct solutions (for warm-start data and for counting how many
different correct answers a problem has), a train/test split and the prompt templates.

Expression trees are plain Python: an int leaf, or a tuple (op, left, right) with op in "+-*/".

"Distinct" solutions are distinct up to commutativity and associativity: a+b+c, c+(b+a) and
(a+c)+b are one solution; a*(b+c) and a*b+a*c are two. canonical() implements that by
flattening sums into (added terms, subtracted terms) and products into (multiplied
factors, divided factors), each a sorted tuple.
"""
import hashlib
import json
import os
import random
from fractions import Fraction
from functools import lru_cache

# ----------------------------------------------------------------------------- prompts
# 'tiny': what the embedded character-level model is trained on (short, so it is cheap on a CPU).
# 'instruct': TinyZero-style instruction for real instruct models (the paper's Countdown setting).
PROMPT_TEMPLATES = {
    "tiny": "Use {nums} to make {target}.\n",
    "instruct": ("Using the numbers {nums}, create an equation that equals {target}. You can use "
                 "basic arithmetic operations (+, -, *, /) and each number must be used exactly once. "
                 "Show your work in <think> </think> tags. And return the final equation in "
                 "<answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>."),
}


# DASD's privileged context (its teacher is the policy shown one solution): a line after the task, so that
# the hinted prompt is the plain one plus a suffix, and for the tiny model the hint is the exact expression
# it is then asked to write, which a 4-layer model learns to copy (warmstart.py, hint_frac).
HINT_TEMPLATES = {
    "tiny": "Hint: {hint}\n",
    "instruct": " Hint: one correct equation is {hint}.",
}


def format_prompt(nums, target, template="tiny", hint=""):
    """The task text; with a hint (a solution's expression) the hint line follows it. hint='' is the
    plain prompt exactly."""
    text = PROMPT_TEMPLATES[template].format(nums=" ".join(map(str, nums)), target=target)
    return text + HINT_TEMPLATES[template].format(hint=hint) if hint else text


# ----------------------------------------------------------------------------- trees
def evaluate(tree):
    """Exact value of an expression tree as a Fraction, or None on division by zero."""
    if isinstance(tree, int):
        return Fraction(tree)
    op, a, b = tree
    x, y = evaluate(a), evaluate(b)
    if x is None or y is None:
        return None
    if op == "+": return x + y
    if op == "-": return x - y
    if op == "*": return x * y
    return None if y == 0 else x / y


def leaves(tree):
    return [tree] if isinstance(tree, int) else leaves(tree[1]) + leaves(tree[2])


# A canonical node is ('n', n) for a number, or (kind, pos, neg) with kind '+' (pos - neg terms)
# or '*' (pos / neg factors); pos and neg are sorted tuples of canonical nodes. Tuples compare
# on the kind first, so sorting never mixes types.
def _parts(node, kind):
    return (node[1], node[2]) if node[0] == kind else ((node,), ())


def _combine(op, a, b):
    kind = "+" if op in "+-" else "*"
    pa, na = _parts(a, kind)
    pb, nb = _parts(b, kind)
    if op in "-/":
        pb, nb = nb, pb
    return (kind, tuple(sorted(pa + pb)), tuple(sorted(na + nb)))


def canonical(tree):
    if isinstance(tree, int):
        return ("n", tree)
    return _combine(tree[0], canonical(tree[1]), canonical(tree[2]))


def render(node, parent=None):
    """Canonical node -> expression string, with only the parentheses it needs."""
    if node[0] == "n":
        return str(node[1])
    kind, pos, neg = node
    plus, minus = ("+", "-") if kind == "+" else ("*", "/")
    s = plus.join(render(c, kind) for c in pos) + "".join(minus + render(c, kind) for c in neg)
    return f"({s})" if parent == "*" and kind == "+" else s


# ----------------------------------------------------------------------------- solver
@lru_cache(maxsize=4096)
def all_expressions(nums):
    """Every distinct expression over the sorted tuple `nums` (each used exactly once).
    Returns a dict {canonical node: Fraction value}. Dynamic programming over splits of the
    multiset into two non-empty halves, so 4 numbers take milliseconds, not a tree enumeration."""
    if len(nums) == 1:
        return {("n", nums[0]): Fraction(nums[0])}
    out, seen = {}, set()
    n = len(nums)
    for mask in range(1, 2 ** n - 1):
        left = tuple(nums[i] for i in range(n) if mask >> i & 1)
        right = tuple(nums[i] for i in range(n) if not mask >> i & 1)
        if (right, left) in seen or (left, right) in seen:
            continue  # the same unordered split of the multiset; a-b and b-a are both made below
        seen.add((left, right))
        for a, x in all_expressions(left).items():
            for b, y in all_expressions(right).items():
                out[_combine("+", a, b)] = x + y
                out[_combine("*", a, b)] = x * y
                out[_combine("-", a, b)] = x - y
                out[_combine("-", b, a)] = y - x
                if y != 0:
                    out[_combine("/", a, b)] = x / y
                if x != 0:
                    out[_combine("/", b, a)] = y / x
    return out


@lru_cache(maxsize=4096)
def _by_value(nums):
    """{value: [canonical nodes]} for the sorted tuple `nums`: one pass, shared by every target."""
    groups = {}
    for node, v in all_expressions(nums).items():
        groups.setdefault(v, []).append(node)
    return groups


def solve(nums, target):
    """All distinct solutions of a problem, as sorted expression strings (empty if unsolvable)."""
    return sorted(render(node) for node in _by_value(tuple(sorted(nums))).get(Fraction(target), []))


# ----------------------------------------------------------------------------- data
def generate_problems(n, seed=0, sizes=(3, 4), min_num=1, max_num=10, max_target=50, min_solutions=1,
                      target="uniform"):
    """n distinct seeded problems {'nums', 'target', 'solutions'}. The numbers are drawn uniformly from
    min_num..max_num (with min_num = 2, no solution differs from another by a *1 or /1 alone); the target from the integers in 1..max_target that the numbers reach with at least
    `min_solutions` distinct solutions: uniformly over those values (target='uniform'), or in
    proportion to their number of solutions (target='weighted': the value of a random distinct
    expression, so targets with many solutions come up more often)."""
    if target not in ("uniform", "weighted"):
        raise SystemExit(f"the Countdown target choice must be 'uniform' or 'weighted', got {target!r}")
    rng = random.Random(seed)
    problems, keys = [], set()
    for _ in range(100 * n):  # bounded: asking for more problems than exist is an error, not a hang
        if len(problems) == n:
            return problems
        nums = [rng.randint(min_num, max_num) for _ in range(rng.choice(sizes))]
        reach = sorted((int(v), len(nodes)) for v, nodes in _by_value(tuple(sorted(nums))).items()
                       if v.denominator == 1 and 1 <= v <= max_target and len(nodes) >= min_solutions)
        if not reach:
            continue
        if target == "uniform":
            value = rng.choice(reach)[0]
        else:
            value = rng.choices([v for v, _ in reach], weights=[c for _, c in reach])[0]
        key = (tuple(sorted(nums)), value)
        if key in keys:
            continue
        keys.add(key)
        problems.append({"nums": nums, "target": value, "solutions": solve(nums, value)})
    if len(problems) < n:
        raise SystemExit(f"only {len(problems)} distinct Countdown problems exist in this regime, asked for "
                         f"{n}: lower n_problems or cd_min_solutions, or widen cd_min_num..cd_max_num or cd_max_target")
    return problems


def regime_stats(problems):
    """What a regime looks like to the solver: how many problems, how many distinct solutions each
    (the diversity there is to keep), and the share of each problem size."""
    counts = sorted(len(p.get("solutions") or solve(p["nums"], p["target"])) for p in problems)
    m = len(counts)
    sizes = {}
    for p in problems:
        sizes[len(p["nums"])] = sizes.get(len(p["nums"]), 0) + 1
    return {"problems": m, "solutions_mean": sum(counts) / max(m, 1),
            "solutions_median": (counts[(m - 1) // 2] + counts[m // 2]) / 2 if m else 0.0,
            "size_share": {k: v / m for k, v in sorted(sizes.items())}}


def format_regime_stats(st):
    """regime_stats as one log line."""
    return (f"regime: {st['problems']} train problems, distinct solutions mean {st['solutions_mean']:.1f} "
            f"median {st['solutions_median']:.1f}, sizes " + ", ".join(f"{k} numbers {v:.0%}" for k, v in
                                                                       st["size_share"].items()))


def regime(sizes, min_num, max_num, max_target, min_solutions, target):
    """generate_problems' knobs from the cd_* settings of train.py and eval.py (sizes: '4' or '3,4')."""
    try:
        sizes = tuple(int(k) for k in sizes.split(","))
    except ValueError:
        raise SystemExit(f"cd_sizes must be comma-separated problem sizes like '4' or '3,4', got {sizes!r}")
    return dict(sizes=sizes, min_num=min_num, max_num=max_num, max_target=max_target, min_solutions=min_solutions,
                target=target)


def is_test(nums, target, test_fraction=0.1):
    """Deterministic split by a hash of the problem itself (numbers as a multiset and target),
    so a problem is in train or test, never both, whatever seed or order produced it."""
    key = f"{sorted(nums)}->{target}".encode()
    return int(hashlib.sha256(key).hexdigest()[:8], 16) / 2 ** 32 < test_fraction


def train_test_split(problems, test_fraction=0.1):
    train = [p for p in problems if not is_test(p["nums"], p["target"], test_fraction)]
    test = [p for p in problems if is_test(p["nums"], p["target"], test_fraction)]
    return train, test


MAX_NUMBER = 10 ** 6 - 1  # reward.MAX_DIGITS: an answer may not hold a larger number, so no row may need one


def load_countdown_hf(name="Jiayi-Pan/Countdown-Tasks-3to4", split="train", limit=None):
    """The public Countdown-Tasks-3to4 data (needs the network, or a local `datasets` cache).
    Rows are checked: a row without integer 'nums' and 'target' is a one-line error."""
    try:
        import datasets
    except ImportError:
        raise SystemExit("loading a hub dataset needs `pip install datasets`")
    from math_task import hub_rows
    rows = hub_rows(name, None, split)
    problems = []
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            break
        nums, target = row.get("nums"), row.get("target")
        if not (isinstance(nums, (list, tuple)) and nums and isinstance(target, int)
                and all(isinstance(x, int) for x in nums)):
            raise ValueError(f"{name}[{split}] row {i}: need integer list 'nums' and integer "
                             f"'target', got nums={nums!r} target={target!r}")
        if not (all(1 <= x <= MAX_NUMBER for x in nums) and 0 <= target <= MAX_NUMBER and len(nums) <= 6):
            raise ValueError(f"{name}[{split}] row {i}: nums={nums!r} target={target!r} is out of range (at most 6 "
                             f"numbers in 1..{MAX_NUMBER}, a target in 0..{MAX_NUMBER}): the reward could never score it")
        problems.append({"nums": list(nums), "target": target})
    return problems


CACHE = os.environ.get("DS_GRPO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ds-grpo")


def cached_problems(n, seed=0, **regime):
    """generate_problems, kept on disk in CACHE: the solver enumerates every expression of each number set it
    draws (about 30 s for the default 8,000 problems), so a regime is generated once per machine. The file's name
    holds a hash of this source file too: a change to the generator makes a new one. A cache file that cannot be
    read is made again; one that cannot be written is skipped."""
    with open(__file__, "rb") as f:
        key = hashlib.sha256(f.read() + repr((n, seed, sorted(regime.items()))).encode()).hexdigest()[:24]
    path = os.path.join(CACHE, f"countdown_{key}.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        pass
    problems = generate_problems(n, seed, **regime)
    try:
        os.makedirs(CACHE, exist_ok=True)
        with open(f"{path}.{os.getpid()}.tmp", "w") as f:  # renamed when whole: a reader never sees half a file
            json.dump(problems, f)
        os.replace(f"{path}.{os.getpid()}.tmp", path)
    except OSError:
        pass
    return problems


def load_problems(dataset="generated", n_problems=8000, seed=0, **regime):
    """(train, test) problem lists: the seeded local generator (default, offline; `regime` are the
    generate_problems knobs) or the hub set."""
    if dataset == "generated":
        return train_test_split(cached_problems(n_problems, seed, **regime))
    if dataset == "hf":
        return train_test_split(load_countdown_hf(limit=n_problems))
    raise SystemExit(f"dataset must be 'generated' or 'hf', got {dataset!r}")
