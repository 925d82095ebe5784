"""
The math task: hub loaders for GSM8K, MATH / MATH-500 and AIME/AMC sets (for real models, online),
and a seeded generator of small multi-step arithmetic word problems (offline, for the tests and for
the embedded character-level model). A problem is {'question', 'answer'}, both strings; the answer
is scored by reward.math_reward.
"""
import hashlib
import math
import os
import random
import re

from reward import last_boxed

# ----------------------------------------------------------------------------- prompts
# The paper's instruction for math; chat templates are applied where the prompt is tokenised.
MATH_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."


# DASD's privileged context: the reference answer (all a hub set keeps of its solution), after the prompt.
# 'tiny' keeps it short: the question, the worked answer and the hint must share 128 positions.
HINT_TEMPLATES = {"instruct": " Hint: the final answer is {hint}.", "tiny": "Hint: {hint}\n"}


def math_prompt(question, template="instruct", hint="", instruction=MATH_INSTRUCTION):
    """'instruct': the question and the instruction (real models; the paper's, or ARITHMETIC_INSTRUCTION for
    task='arithmetic'). 'tiny': the bare question and a newline, for the embedded model, whose 128 positions must
    hold the question and the worked answer (the instruction alone is 70 characters). A hint (DASD's reference
    answer) follows; hint='' is the plain prompt exactly."""
    if template not in HINT_TEMPLATES:
        raise ValueError(f"math prompt template must be 'instruct' or 'tiny', got {template!r}")
    text = question + " " + instruction if template == "instruct" else question + "\n"
    return text + HINT_TEMPLATES[template].format(hint=hint) if hint else text


# ----------------------------------------------------------------------------- hub data
# name -> where the set lives, its default split, and which fields hold the question and the
# reference. 'extract' says how the reference is cut out of that field: 'gsm8k' after the last
# '####', 'boxed' the last \boxed{} of a worked solution; without it the field is the answer.
HUB_DATASETS = {
    "gsm8k": dict(path="openai/gsm8k", config="main", split="test",
                  question="question", answer="answer", extract="gsm8k"),
    "math": dict(path="DigitalLearningGmbH/MATH-lighteval", config="default", split="test",
                 question="problem", answer="solution", extract="boxed"),
    "math500": dict(path="HuggingFaceH4/MATH-500", split="test", question="problem", answer="answer"),
    "aime24": dict(path="HuggingFaceH4/aime_2024", split="train", question="problem", answer="answer"),
    "amc": dict(path="AI-MO/aimo-validation-amc", split="train", question="problem", answer="answer"),
    "amc23": dict(path="math-ai/amc23", split="test", question="question", answer="answer"),
}


def to_problem(row, spec, name, index):
    """One hub row -> {'question', 'answer'}. A row without a usable question or reference is a
    one-line ValueError naming the dataset, the row and the field."""
    q_field, a_field = spec["question"], spec["answer"]
    question, answer = row.get(q_field), row.get(a_field)
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{name} row {index}: missing or empty field {q_field!r}")
    if isinstance(answer, float) and not math.isfinite(answer):
        raise ValueError(f"{name} row {index}: field {a_field!r} is {answer}, which no answer can equal")
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(int(answer) if float(answer).is_integer() else answer)  # aimo-validation-amc: 142.0
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"{name} row {index}: missing or empty field {a_field!r}")
    if spec.get("extract") == "gsm8k":
        if "####" not in answer:
            raise ValueError(f"{name} row {index}: no '#### <answer>' in field {a_field!r}")
        answer = answer.rsplit("####", 1)[1].replace(",", "")
        if not re.fullmatch(r"\s*-?\d+(\.\d+)?\s*", answer):  # GSM8K's answers are numbers: '#### five' never scores
            raise ValueError(f"{name} row {index}: the answer after '####' is {answer.strip()!r}, not a number")
    elif spec.get("extract") == "boxed":
        answer = last_boxed(answer)
        if not answer:
            raise ValueError(f"{name} row {index}: no \\boxed{{...}} answer in field {a_field!r}")
    return {"question": question.strip(), "answer": answer.strip()}


def hub_rows(path, config, split):
    """datasets.load_dataset, with every way it fails as one line: a hub set that is not in the local cache while
    the hub cannot be reached, an empty, cut-short or garbage file in a local copy, a split it does not have."""
    import datasets
    quiet = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its own error logs would precede our one line
    try:
        rows = datasets.load_dataset(path, config, split=split)
    except Exception as e:  # ConnectionError, FileNotFoundError, DatasetGenerationError, ArrowInvalid, ...
        e = e.__cause__ or e  # DatasetGenerationError wraps what the file reader said
        cause = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        fix = ("check its files: one may be empty, cut short or not a data file" if os.path.isdir(path) else
               "Offline, a hub set must be in the datasets cache (load it once with the network) or a local "
               "directory laid out as its hub repository (give its path)")
        raise SystemExit(f"cannot load the data set {path!r} split {split!r} ({cause}): {fix}")
    finally:
        datasets.logging.set_verbosity(quiet)
    if len(rows) == 0:
        raise SystemExit(f"the data set {path!r} split {split!r} has no rows")
    return rows


def load_math(name, split=None, limit=None, path=None):
    """The first `limit` problems of a hub set in HUB_DATASETS (needs the network, or a local
    `datasets` cache); split=None is the set's default split. path: a local directory laid out as the
    set's hub repository, read in place of the hub (the same load_dataset call, so the tests run it)."""
    if name not in HUB_DATASETS:
        raise SystemExit(f"unknown math dataset {name!r}: use one of {', '.join(HUB_DATASETS)}")
    try:
        import datasets
    except ImportError:
        raise SystemExit("loading a hub dataset needs `pip install datasets`")
    spec = HUB_DATASETS[name]
    split = split or spec["split"]
    rows = hub_rows(path or spec["path"], spec.get("config"), split)
    problems = []
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            break
        problems.append(to_problem(row, spec, f"{name}[{split}]", i))
    return problems


# ----------------------------------------------------------------------------- generated data
# Word problems of two or three steps with small numbers and a non-negative integer answer. Each
# template returns (question, answer, worked steps); questions stay under 80 characters and worked
# answers under 40, so that both fit the tiny model's 128 positions.
NAMES = ["Tom", "Ann", "Sam", "Mia", "Ben", "Eva", "Max", "Zoe"]
ITEMS = ["apples", "pens", "cards", "eggs", "shells", "stamps"]


def _buy(rng, who, item):
    a, b, c = rng.randint(2, 20), rng.randint(2, 5), rng.randint(2, 9)
    d = rng.randint(1, a + b * c)
    q = f"{who} has {a} {item}, buys {b} bags of {c} and gives away {d}. How many {item} now?"
    return q, a + b * c - d, f"{b}*{c}={b * c}. {a}+{b * c}-{d}={a + b * c - d}."


def _share(rng, who, item):
    b, c = rng.randint(2, 6), rng.randint(2, 9)
    k = rng.choice([k for k in range(2, 10) if b * c % k == 0])  # never empty: b itself divides
    q = f"{who} splits {b} boxes of {c} {item} equally among {k} kids. How many does each get?"
    return q, b * c // k, f"{b}*{c}={b * c}. {b * c}/{k}={b * c // k}."


def _change(rng, who, item):
    price, n = rng.randint(2, 9), rng.randint(2, 9)
    paid = rng.choice([m for m in (10, 20, 50, 100) if m >= price * n])
    q = f"{item.capitalize()} cost {price} dollars each. {who} buys {n} and pays {paid}. What is the change?"
    return q, paid - price * n, f"{n}*{price}={n * price}. {paid}-{n * price}={paid - n * price}."


def _pages(rng, who, item):
    a, days, more = rng.randint(2, 9), rng.randint(2, 7), rng.randint(1, 9)
    read = a * days + more
    total = read + rng.randint(0, 40)
    q = f"A book has {total} pages. {who} reads {a} a day for {days} days and {more} more. Pages left?"
    return q, total - read, f"{a}*{days}={a * days}. {a * days}+{more}={read}. {total}-{read}={total - read}."


def _rows(rng, who, item):
    a, b, c, d = (rng.randint(2, 9) for _ in range(4))
    q = f"{who} packs {a} rows of {b} {item} and {c} rows of {d}. How many {item} in all?"
    return q, a * b + c * d, f"{a}*{b}={a * b}. {c}*{d}={c * d}. {a * b}+{c * d}={a * b + c * d}."


TEMPLATES = [_buy, _share, _change, _pages, _rows]


def generate_math_problems(n, seed=0):
    """n distinct seeded problems {'question', 'answer', 'work'}; 'work' is the arithmetic
    behind the answer (see solution_text)."""
    rng = random.Random(seed)
    problems, seen = [], set()
    for _ in range(100 * n):  # bounded: asking for more problems than exist is an error, not a hang
        if len(problems) == n:
            return problems
        question, answer, work = rng.choice(TEMPLATES)(rng, rng.choice(NAMES), rng.choice(ITEMS))
        if question not in seen:
            seen.add(question)
            problems.append({"question": question, "answer": str(answer), "work": work})
    if len(problems) < n:
        raise ValueError(f"only {len(problems)} distinct math problems found for n={n}")
    return problems


# Easy arithmetic (task='arithmetic'): one operation on small numbers, for real small instruct models. The
# answer is read as the last number of the response (reward.last_number_reward), not a \\boxed{}: the one
# pretrained model a registry-only machine can fetch, SmolLM2-135M-Instruct (4-bit), never boxes but often
# ends on the right number (pass@1 about 0.4 on single-digit sums and products; README, "A real model").
ARITHMETIC_INSTRUCTION = "Answer with the number only."  # math_prompt's instruction for task='arithmetic'


def generate_arithmetic(n, seed=0, max_num=12):
    """n distinct seeded problems 'What is a + b?' / 'a - b' (a >= b) / 'a * b', numbers 1..max_num."""
    rng = random.Random(seed)
    problems, seen = [], set()
    for _ in range(100 * n):
        if len(problems) == n:
            return problems
        a, b, op = rng.randint(1, max_num), rng.randint(1, max_num), rng.choice("+-*")
        a, b = (b, a) if op == "-" and a < b else (a, b)
        question = f"What is {a} {op} {b}?"
        if question not in seen:
            seen.add(question)
            problems.append({"question": question, "answer": str(a + b if op == "+" else a - b if op == "-" else a * b)})
    raise ValueError(f"only {len(problems)} distinct arithmetic problems with numbers up to {max_num}; ask for fewer "
                     f"than n_problems={n}")


def solution_text(problem):
    """The worked answer of a generated problem, e.g. '3*4=12. 7+12-5=14. \\boxed{14}': the
    warm-start target for the tiny model, scored 1.0 by math_reward."""
    return f"{problem['work']} \\boxed{{{problem['answer']}}}"


def is_test(question, test_fraction=0.1):
    """Deterministic split by a hash of the numbers in the question, so problems that differ only
    in names or items (the same arithmetic) are on the same side, never both."""
    key = ",".join(re.findall(r"\d+", question)) or question
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2 ** 32 < test_fraction


def train_test_split(problems, test_fraction=0.1):
    train = [p for p in problems if not is_test(p["question"], test_fraction)]
    test = [p for p in problems if is_test(p["question"], test_fraction)]
    return train, test
