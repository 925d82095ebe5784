"""The math reward and task, by example: equal answers in different spellings, wrong answers,
hostile text (every call returns 0.0/1.0 in bounded time), the generated word problems and
the hub row mapping (with fake rows: the tests never touch the network)."""
import re
import string
import sys
import threading
import time

import pytest

import math_task
from math_task import (HUB_DATASETS, MATH_INSTRUCTION, generate_math_problems, is_test, load_math,
                       math_prompt, solution_text, to_problem, train_test_split)
from reward import MAX_MATH_ANSWER_CHARS, extract_math_answer, last_boxed, math_reward


def reward(completion, answer, limit_s=10.0):
    """math_reward, with a hang check: a generous wall-clock bound on each call."""
    t0 = time.perf_counter()
    r = math_reward(completion, answer)
    assert time.perf_counter() - t0 < limit_s
    assert r in (0.0, 1.0)
    return r


# ----------------------------------------------------------------------------- equal answers
@pytest.mark.parametrize("completion, answer", [
    (r"so \boxed{\frac{1}{2}}", "0.5"),
    (r"\boxed{0.5}", r"\frac{1}{2}"),
    (r"\boxed{\dfrac{1}{2}}", r"\frac12"),
    (r"\boxed{\tfrac{1}{2}}", "1/2"),
    (r"\boxed{1,000}", "1000"),
    (r"\boxed{1000}", "1,000"),
    (r"\boxed{x = 3}", "3"),
    (r"\boxed{5 \text{ cm}}", "5"),  # math-verify drops the unit
    (r"\boxed{5\,\text{cm}}", "5"),
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt3}{2}"),
    (r"\boxed{\sqrt{8}}", r"2\sqrt{2}"),
    (r"\boxed{\frac{1}{\{2\}}}", r"\frac{1}{2}"),  # nested and escaped braces
    (r"\boxed{\frac{1}{{2}}}", "0.5"),
    (r"\boxed{\left(3, 4\right)}", "(3,4)"),
    (r"\boxed{\{1, 2\}}", r"\{1,2\}"),
    (r"\boxed{70^\circ}", "70"),
    (r"\boxed{33}", "033"),  # AIME answers are written with three digits
    (r"\boxed{\textbf{(C)}}", r"\text{(C)}"),
    (r"\boxed{\$5.00}", "5"),
    (r"\boxed {42}", "42"),
    (r"\fbox{42}", "42"),
    (r"\boxed{3.}", "3"),
    ("Natalia sold 48/2 = 24 clips in May.\n48+24 = 72\n#### 72", "72"),
    ("#### 1,000.", "1000"),
])
def test_equal_answers(completion, answer):
    assert reward(completion, answer) == 1.0


@pytest.mark.parametrize("completion, answer", [
    (r"\boxed{2}", "3"),
    (r"\boxed{1/2}", "2"),
    (r"\boxed{\frac{1}{2}}", "2"),
    (r"\boxed{1,000}", "10"),
    (r"\boxed{3 \text{ and } 4}", "3"),
    (r"\boxed{\pi}", "3.14159"),  # numerically close is not equal
    (r"\boxed{}", "3"),
    (r"\boxed{3}", ""),
    ("no answer here", "3"),
    (r"\boxed{b}", "a"),
])
def test_wrong_answers(completion, answer):
    assert reward(completion, answer) == 0.0


def test_math_verify_quirks():
    # What math-verify 0.9.0 does on spellings a model might use, asserted as observed:
    assert reward(r"\boxed{\text{5 cm}}", "5") == 0.0  # a unit inside \text{} with the number is text
    assert reward(r"\boxed{12\%}", "12") == 1.0  # a percent sign is accepted either way
    assert reward(r"\boxed{x**2}", "x^2") == 0.0  # Python syntax is not LaTeX


def test_last_box_wins():
    assert reward(r"first \boxed{3}, no wait: \boxed{4}", "4") == 1.0
    assert reward(r"first \boxed{4}, no wait: \boxed{3}", "4") == 0.0
    assert reward(r"\boxed{3} then \fbox{4}", "4") == 1.0
    assert reward(r"\boxed{4} #### 3", "4") == 1.0  # a box beats a '####' line
    assert reward("#### 3\nso 4", "3") == 1.0  # a '####' line beats any number after it


@pytest.mark.parametrize("completion, answer", [
    ("Step 1: 12 + 8 = 20. Step 2: carry the 5 and", "5"),  # truncated mid-thought
    ("7 + 12 - 5 = 14", "14"),  # right, but never boxed: the instruction asks for \boxed{}
    ("The answer is 1,000.", "1000"),
    (r"so the answer is \boxed{14", "14"),  # a box cut off by the length limit
])
def test_no_boxed_or_hash_answer_earns_nothing(completion, answer):
    # a last-number fallback would pay these by chance, and training would reinforce it: the reward
    # requires the final answer in \boxed{} (or a GSM8K '####' line)
    assert extract_math_answer(completion) is None
    assert reward(completion, answer) == 0.0


def test_extract_math_answer():
    assert extract_math_answer(r"\boxed{\frac{a}{b^{2}}} done") == r"\frac{a}{b^{2}}"
    assert extract_math_answer(r"\boxed{\{1,2\}}") == r"\{1,2\}"
    assert extract_math_answer(r"\boxed{\}}") == r"\}"  # an escaped brace does not close the box
    assert extract_math_answer(r"so \boxed 5$.") == "5"
    assert extract_math_answer("\\boxed $5$.") == "5"
    assert extract_math_answer("\\boxed\n{5}") == "5"
    assert extract_math_answer("\\boxed\n") is None
    assert extract_math_answer(r"\boxed{3} and then \boxed{4") is None  # truncated: no answer, no guess
    assert extract_math_answer("x\n#### 1,234\nbye") == "1,234"
    assert extract_math_answer("it is -3.5 or 2") is None
    assert extract_math_answer("no numbers") is None
    assert extract_math_answer(None) is None
    assert last_boxed("no box") is None


# ----------------------------------------------------------------------------- hostile text
HOSTILE = {
    "unbalanced boxes": "\\boxed{" * 1000,
    "100k junk": "x{}\\^" * 20_000,
    "100k digits": "1" * 100_000,
    "100k box content": "\\boxed{" + "1" * 100_000 + "}",
    "fracs 500 deep": "\\boxed{" + "\\frac{1}{" * 500 + "2" + "}" * 500 + "}",
    "fracs 60 deep, under the cap": "\\boxed{" + "\\frac{" * 60 + "1" + "}{2}" * 60 + "}",
    "exponent tower": "\\boxed{9^{9^{9^{9^{9}}}}}",
    "factorial of 10^10": "\\boxed{(10^{10})!}",
    "5000 open parens": "\\boxed{" + "(" * 5000 + "}",
    "900 open parens, under the cap": "\\boxed{" + "(" * 900 + "}",
    "backslashes": "\\boxed{" + "\\" * 5001,
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_text_is_bounded(name):
    assert reward(HOSTILE[name], "1") == 0.0


@pytest.mark.parametrize("completion", [None, 42, b"\\boxed{1}", ["\\boxed{1}"]])
def test_not_a_string(completion):
    assert reward(completion, "1") == 0.0
    assert reward("\\boxed{1}", completion) == 0.0


def test_answer_length_cap():
    long_sum = "1+" * (MAX_MATH_ANSWER_CHARS // 2) + "1"  # equal to 501, but over the cap
    assert reward(f"\\boxed{{{long_sum}}}", str(MAX_MATH_ANSWER_CHARS // 2 + 1)) == 0.0


def test_main_thread_only():
    # math-verify's timeouts need signal.alarm: elsewhere it is a loud error, not silent zeros
    errors = []
    thread = threading.Thread(target=lambda: errors.append(pytest.raises(RuntimeError, math_reward, "1", "1")))
    thread.start()
    thread.join()
    assert len(errors) == 1


# ----------------------------------------------------------------------------- generated problems
# Each template read back from its English, independently of the generator's arithmetic.
READERS = [
    (r"\w+ has (\d+) (\w+), buys (\d+) bags of (\d+) and gives away (\d+)\. How many \2 now\?",
     lambda a, _, b, c, d: a + b * c - d),
    (r"\w+ splits (\d+) boxes of (\d+) \w+ equally among (\d+) kids\. How many does each get\?",
     lambda b, c, k: (b * c) // k if b * c % k == 0 else None),
    (r"\w+ cost (\d+) dollars each\. \w+ buys (\d+) and pays (\d+)\. What is the change\?",
     lambda price, n, paid: paid - price * n),
    (r"A book has (\d+) pages\. \w+ reads (\d+) a day for (\d+) days and (\d+) more\. Pages left\?",
     lambda total, a, days, more: total - a * days - more),
    (r"\w+ packs (\d+) rows of (\d+) (\w+) and (\d+) rows of (\d+)\. How many \3 in all\?",
     lambda a, b, _, c, d: a * b + c * d),
]


def read_answer(question):
    matches = [(m, f) for pattern, f in READERS if (m := re.fullmatch(pattern, question))]
    assert len(matches) == 1, question
    m, f = matches[0]
    return f(*(int(g) if g.isdigit() else g for g in m.groups()))


@pytest.fixture(scope="module")
def problems():
    return generate_math_problems(500, seed=0)


def test_generated_deterministic_and_distinct(problems):
    assert generate_math_problems(500, seed=0) == problems
    assert generate_math_problems(50, seed=1) != problems[:50]
    assert len({p["question"] for p in problems}) == len(problems)
    assert {read_answer(p["question"]) is not None for p in problems} == {True}
    assert len({re.fullmatch(r"(\w+) .*", p["question"]).group(1) for p in problems}) > 5  # variety


def test_generated_answers_are_right(problems):
    for p in problems:
        answer = read_answer(p["question"])
        assert p["answer"] == str(answer) and answer >= 0, p


def test_solutions_score_and_fit(problems):
    printable = set(string.printable) - set("\t\n\r\x0b\x0c")
    for p in problems:
        text = solution_text(p)
        assert text.endswith(f"\\boxed{{{p['answer']}}}")
        assert reward(text, p["answer"]) == 1.0
        assert reward(text.replace(f"{{{p['answer']}}}", f"{{{int(p['answer']) + 1}}}"), p["answer"]) == 0.0
        assert set(p["question"] + text) <= printable
        # the tiny model has 128 positions for prompt, newline, worked answer and end-of-text
        assert len(p["question"]) <= 80 and len(text) <= 40
        for a, op, b, c in re.findall(r"(\d+)([*/+])(\d+)=(\d+)", text):  # the steps are true
            assert eval(f"{a}{op}{b}") == int(c)


def test_generated_split(problems):
    train, test = train_test_split(problems)
    assert len(train) + len(test) == len(problems) and 0 < len(test) < len(problems) // 4
    assert not {p["question"] for p in train} & {p["question"] for p in test}
    assert train_test_split(problems) == (train, test)
    # the split reads only the numbers: the same arithmetic with other names is on the same side
    q = problems[0]["question"]
    assert is_test(q) == is_test(re.sub(r"[A-Z][a-z]+", "Bob", q))


def test_too_many_problems_is_an_error(monkeypatch):
    monkeypatch.setattr(math_task, "TEMPLATES", [lambda rng, who, item: ("1+1?", 2, "1+1=2.")])
    with pytest.raises(ValueError, match="only 1 distinct"):
        generate_math_problems(2)


def test_prompt():
    assert math_prompt("What is 2+2?") == "What is 2+2? " + MATH_INSTRUCTION
    assert MATH_INSTRUCTION == "Let's think step by step and output the final answer within \\boxed{}."
    assert math_prompt("What is 2+2?", "tiny") == "What is 2+2?\n"
    with pytest.raises(ValueError):
        math_prompt("x", "chat")


# ----------------------------------------------------------------------------- hub rows
GOOD_ANSWER_FIELD = {"gsm8k": "48/2 = 24\n#### 1,072", "math": r"So it is $\boxed{\frac{1}{2}}$."}
EXPECTED = {"gsm8k": "1072", "math": r"\frac{1}{2}"}


@pytest.mark.parametrize("name", list(HUB_DATASETS))
def test_hub_row_mapping(name):
    spec = HUB_DATASETS[name]
    row = {spec["question"]: "  What is 1/2?  ", spec["answer"]: GOOD_ANSWER_FIELD.get(name, "1/2"), "id": 7}
    assert to_problem(row, spec, name, 0) == {"question": "What is 1/2?", "answer": EXPECTED.get(name, "1/2")}
    for field in (spec["question"], spec["answer"]):
        for broken in ({k: v for k, v in row.items() if k != field}, {**row, field: "  "}, {**row, field: None}):
            with pytest.raises(ValueError, match=rf"^{name}\[test\] row 3: missing or empty field '{field}'$"):
                to_problem(broken, spec, f"{name}[test]", 3)


def test_hub_answer_formats():
    amc = HUB_DATASETS["amc"]
    assert to_problem({"problem": "p", "answer": 142.0}, amc, "amc", 0)["answer"] == "142"  # stored as float
    assert to_problem({"problem": "p", "answer": 2.5}, amc, "amc", 0)["answer"] == "2.5"
    with pytest.raises(ValueError, match=r"gsm8k row 1: no '#### <answer>' in field 'answer'"):
        to_problem({"question": "q", "answer": "72"}, HUB_DATASETS["gsm8k"], "gsm8k", 1)
    with pytest.raises(ValueError, match=r"math row 2: no \\boxed\{\.\.\.\} answer in field 'solution'"):
        to_problem({"problem": "q", "solution": "it is 3"}, HUB_DATASETS["math"], "math", 2)


def test_load_math_errors(monkeypatch):
    with pytest.raises(SystemExit, match="unknown math dataset"):
        load_math("nope")
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(SystemExit, match="pip install datasets"):
        load_math("gsm8k")
