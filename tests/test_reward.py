"""The Countdown reward, by example: right answers, wrong answers, and hostile text."""
import random
import time

import pytest

from reward import (FORMAT_SCORE, MAX_DEPTH, MAX_DIGITS, answer_key, countdown_reward,
                    extract_answer, is_correct, parse_expression)

NUMS, TARGET = [3, 5, 7], 22  # 3*5+7 == 22


def reward(completion, nums=NUMS, target=TARGET):
    """countdown_reward, with a generous hang check: no single call may take a second."""
    t0 = time.perf_counter()
    r = countdown_reward(completion, nums, target)
    assert time.perf_counter() - t0 < 1.0
    return r


def tag(s):
    return f"<answer>{s}</answer>"


# ----------------------------------------------------------------------------- correct answers
@pytest.mark.parametrize("answer", [
    "3*5+7", " 3 * 5 + 7 ", "7+3*5", "5*3+7", "(3*5)+7", "((3)*(5))+(7)", "7 + (5 * 3)",
    "\n3*5\t+7\n",
])
def test_correct_answers(answer):
    assert reward(tag(answer)) == 1.0
    assert reward("<think>3 times 5 is 15, plus 7</think> " + tag(answer)) == 1.0
    assert is_correct(tag(answer), NUMS, TARGET)


def test_left_associative():
    assert reward(tag("8-3-2"), [8, 3, 2], 3) == 1.0  # (8-3)-2, not 8-(3-2) == 7
    assert reward(tag("8/4/2"), [8, 4, 2], 1) == 1.0  # (8/4)/2, not 8/(4/2) == 4
    assert reward(tag("8-(3-2)"), [8, 3, 2], 7) == 1.0
    assert reward(tag("2+3*4"), [2, 3, 4], 14) == 1.0  # precedence


def test_exact_rational_arithmetic():
    # 6/(1-3/4) == 6/(1/4) == 24 only with exact fractions along the way
    assert reward(tag("6/(1-3/4)"), [1, 3, 4, 6], 24) == 1.0
    assert reward(tag("(1/3)*3*1"), [1, 3, 3, 1], 1) == 1.0
    assert reward(tag("10/4"), [10, 4], 2) == FORMAT_SCORE  # 2.5, no rounding or flooring
    assert reward(tag("1/3+1/3+1/3"), [1, 3, 1, 3, 1, 3], 1) == 1.0  # floats give 0.999...


# ----------------------------------------------------------------------------- wrong answers
def test_wrong_value_gets_format_score():
    assert reward(tag("3+5+7")) == FORMAT_SCORE
    assert reward(tag("3*(5+7)")) == FORMAT_SCORE


@pytest.mark.parametrize("answer", [
    "3*5",          # 7 missing
    "3*5+7+0",      # an extra number
    "3*5+7*1",      # an extra number that doesn't change the value
    "3*5+5+2",      # 7 missing, 5 reused
    "15+7",         # numbers combined outside the answer
    "3*5+7-3+3",    # 3 reused
])
def test_wrong_numbers_get_format_score(answer):
    assert reward(tag(answer)) == FORMAT_SCORE


def test_repeated_numbers_are_a_multiset():
    assert reward(tag("2*2+2"), [2, 2, 2], 6) == 1.0
    assert reward(tag("2*2"), [2, 2, 2], 4) == FORMAT_SCORE
    assert reward(tag("2*2+2+2"), [2, 2, 2], 8) == FORMAT_SCORE


def test_division_by_zero_is_not_correct():
    assert reward(tag("4/(2-2)+4"), [4, 2, 2, 4], 4) == FORMAT_SCORE
    assert reward(tag("(3-3)/5"), [3, 3, 5], 0) == 1.0  # zero as a numerator is fine


# ----------------------------------------------------------------------------- equations
@pytest.mark.parametrize("answer, score", [
    ("3*5+7=22", 1.0),          # how instruct models often write it: a right left side, a true claim
    (" 3*5+7 = 22 ", 1.0),
    ("7+5*3 = (44/2)", 1.0),    # the claim is a value, in whatever form
    ("3*5+7=21", FORMAT_SCORE),  # a right left side with a false claim is not a right answer
    ("3+5+7=22", FORMAT_SCORE),  # a false equation claiming the target
    ("3+5+7=15", FORMAT_SCORE),  # a true equation, but not the target
    ("3*5=15", FORMAT_SCORE),    # numbers missing
    ("3*5+7=", 0.0),             # not well-formed: no value
    ("=22", 0.0),
    ("3*5+7=22=22", 0.0),
    ("3*5+7==22", 0.0),
    ("3*5+7=x", 0.0),
])
def test_an_equation_is_scored_by_its_left_side_when_it_claims_the_target(answer, score):
    # the chosen reading (reward.countdown_reward): 'expr = target' is scored as expr; another claimed
    # value gets the format score; the common scorer gave 0.1 to all of the well-formed ones
    assert reward(tag(answer)) == score
    if score == 1.0:  # and it is the same answer as the bare expression
        assert answer_key(tag(answer)) == answer_key(tag("3*5+7"))


# ----------------------------------------------------------------------------- tags
def test_no_answer_tag_scores_zero():
    assert reward("3*5+7") == 0.0
    assert reward("") == 0.0
    assert reward(tag("")) == 0.0
    assert reward(tag("   ")) == 0.0


def test_last_answer_wins():
    assert reward(tag("3+5+7") + " no wait " + tag("3*5+7")) == 1.0
    assert reward(tag("3*5+7") + " no wait " + tag("3+5+7")) == FORMAT_SCORE
    assert extract_answer("<answer>a</answer><answer>b</answer>") == "b"


def test_unbalanced_tags():
    assert extract_answer("<answer>3*5+7") is None
    assert reward("<answer>3*5+7") == 0.0
    assert reward("3*5+7</answer>") == 0.0
    assert reward("</answer>3*5+7<answer>") == 0.0
    # An unclosed tag after a complete pair: the complete pair is the last answer.
    assert reward(tag("3*5+7") + "<answer>3+5+7") == 1.0
    assert extract_answer("<answer><answer>1+2</answer>") == "1+2"


# ----------------------------------------------------------------------------- the parser
def test_parse_expression_trees():
    assert parse_expression("1+2*3") == ("+", 1, ("*", 2, 3))
    assert parse_expression("(1+2)*3") == ("*", ("+", 1, 2), 3)
    assert parse_expression("8-3-2") == ("-", ("-", 8, 3), 2)
    assert parse_expression(" 42 ") == 42
    assert parse_expression("007") == 7


@pytest.mark.parametrize("text", [
    "", " ", "()", "1+", "+1", "-3+8", "3*-1", "(1+2", "1+2)", "1 2", "1.5+2", ".5", "1e3",
    "3**2", "8//2", "2^3", "1_000", "0x10", "x+1", "abs(1)", "1+2;", "[1]", "1,2",
    "²+1", "٣+1", "３+1", "1\u00a0+1",
])
def test_parse_expression_rejects(text):
    assert parse_expression(text) is None


def test_parse_limits():
    assert parse_expression("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH) == 1
    assert parse_expression("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1)) is None
    assert parse_expression("9" * MAX_DIGITS) == int("9" * MAX_DIGITS)
    assert parse_expression("9" * (MAX_DIGITS + 1)) is None
    assert parse_expression("1" + "+1" * 10000) is None  # too long
    assert parse_expression(None) is None


def test_answer_key_identifies_equivalent_answers():
    assert answer_key(tag("3*5+7")) == answer_key(tag("7 + (5*3)"))
    assert answer_key(tag("3*5+7")) != answer_key(tag("3*(5+7)"))
    assert answer_key("no tag") is None
    assert answer_key(tag("3**5")) is None


# ----------------------------------------------------------------------------- hostile inputs
@pytest.mark.parametrize("completion", [
    tag("9**9**9**9"),                            # the exponent tower that hangs eval()
    tag("9**9**9**9**9**9**9"),
    tag("99//1"),
    tag("(" * 100000 + "1" + ")" * 100000),      # deep nesting
    tag("(" * 200 + "3*5+7" + ")" * 200),
    tag("9" * 100000),                            # a huge literal
    tag("3*5+7" + "*1" * 100000),
    tag("²*5+7"), tag("٣*5+7"), tag("３*5+7"),     # unicode digits
    tag("3.0*5+7"), tag("1.5*2*5+7"),             # decimals
    tag("-3+5*7-7"), tag("+3*5+7"),               # unary minus / plus
    tag("__import__('os').system('true')"),
    "<answer>" * 100000,
    "</answer>" * 100000,
    "x" * 1_000_000,
    "<answer>" + "x" * 1_000_000 + "</answer>",
    "",
])
def test_hostile_inputs_score_zero_fast(completion):
    assert reward(completion) == 0.0


@pytest.mark.parametrize("completion", [None, 42, b"<answer>3*5+7</answer>", ["<answer>3*5+7</answer>"]])
def test_non_string_completion_scores_zero(completion):
    assert reward(completion) == 0.0
    assert answer_key(completion) is None


def test_malformed_problem_does_not_raise():
    assert reward(tag("3*5+7"), nums=None) == 0.0
    assert reward(tag("3*5+7"), nums=[3, "5", 7]) == 0.0


def test_random_garbage_never_raises():
    rng = random.Random(0)
    alphabet = "0123456789+-*/() <>answer/"
    for i in range(2000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        if i % 2:
            s = tag(s)  # half of them reach the parser
        r = reward(s)
        assert isinstance(r, float) and r in (0.0, FORMAT_SCORE, 1.0)
