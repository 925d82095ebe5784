"""
Rewards. Countdown: 1.0 for a correct answer, FORMAT_SCORE for a well-formed but wrong one,
0.0 when there is no parseable answer (the TinyZero convention, see METHODS.md section 8).
Math (second half of the file): 1.0 or 0.0 by math-verify, under a time limit.

Model text is never handed to eval/exec: the common reference scorer does that behind a
character whitelist, which lets '**' and '//' through (an exponent tower hangs it), splits
decimals into two numbers and accepts unary minus. Here a tiny hand-written parser accepts
exactly  expr := term (('+'|'-') term)* ; term := factor (('*'|'/') factor)* ;
factor := INT | '(' expr ')'  and the value is computed exactly with Fractions. An answer is
expr or expr '=' expr (see countdown_reward for how the claimed value counts).
"""
import logging
import re
import threading
from fractions import Fraction

from countdown import canonical, evaluate, leaves

FORMAT_SCORE = 0.1
# Hard limits keep every call fast and shallow whatever the model writes: no answer of a
# 3-4 number problem needs more than a few dozen characters, six digits or a few parentheses.
MAX_ANSWER_CHARS = 256
MAX_DIGITS = 6
MAX_DEPTH = 32

_DIGITS = "0123456789"  # not str.isdigit(), which also accepts '²', '٣', '３', ...
_SPACE = " \t\r\n"
_OPEN, _CLOSE = "<answer>", "</answer>"


def extract_answer(completion):
    """Content of the last <answer>...</answer> pair, or None. Two rfind calls: linear time."""
    if not isinstance(completion, str):
        return None
    end = completion.rfind(_CLOSE)
    if end < 0:
        return None
    start = completion.rfind(_OPEN, 0, end)
    return None if start < 0 else completion[start + len(_OPEN):end]


class _Reject(Exception):
    pass


class _Parser:
    """Recursive descent over the string; any deviation from the grammar raises _Reject."""

    def __init__(self, s):
        self.s, self.i, self.depth = s, 0, 0

    def peek(self):
        while self.i < len(self.s) and self.s[self.i] in _SPACE:
            self.i += 1
        return self.s[self.i] if self.i < len(self.s) else ""

    def expr(self):
        tree = self.term()
        while self.peek() in ("+", "-"):  # a loop, not recursion: left-associative, 8-3-2 == 3
            op = self.s[self.i]
            self.i += 1
            tree = (op, tree, self.term())
        return tree

    def term(self):
        tree = self.factor()
        while self.peek() in ("*", "/"):  # '**' and '//' fail here: factor() can't start with '*'
            op = self.s[self.i]
            self.i += 1
            tree = (op, tree, self.factor())
        return tree

    def factor(self):
        if self.peek() == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:  # checked before recursing, so no RecursionError
                raise _Reject
            self.i += 1
            tree = self.expr()
            if self.peek() != ")":
                raise _Reject
            self.i += 1
            self.depth -= 1
            return tree
        start = self.i
        while self.i < len(self.s) and self.s[self.i] in _DIGITS:
            self.i += 1
        if not 0 < self.i - start <= MAX_DIGITS:  # also rejects unary '-'/'+' and empty operands
            raise _Reject
        return int(self.s[start:self.i])


def parse_expression(s):
    """Expression string -> countdown tree (int leaf or (op, left, right)), or None."""
    if not isinstance(s, str) or len(s) > MAX_ANSWER_CHARS:
        return None
    parser = _Parser(s)
    try:
        tree = parser.expr()
    except _Reject:
        return None
    return tree if parser.peek() == "" else None  # trailing text ('1.5', '3)', '2 2') is invalid


def parse_answer(answer):
    """The content of an <answer> tag -> (tree, claimed), or (None, None) when it is not well-formed.
    An answer is an expression, or an equation 'expression = value' (instruct models often close with
    '= target'): tree is the expression (the left side), claimed the tree of the value it claims, or None
    for a bare expression."""
    if answer is None or len(answer) > MAX_ANSWER_CHARS:
        return None, None
    left, sep, right = answer.partition("=")
    tree, claimed = parse_expression(left), parse_expression(right) if sep else None
    if tree is None or (sep and claimed is None):  # 'a = b = c' and '3*5+7 =' are not well-formed
        return None, None
    return tree, claimed


def countdown_reward(completion, nums, target):
    """1.0 if the last answer uses exactly the multiset `nums` and equals `target` exactly;
    FORMAT_SCORE if it parses but is wrong; 0.0 otherwise. Never raises.
    The chosen reading of an equation 'expression = value': it is scored as the expression alone when
    the value is the target ('3*5+7 = 22' earns 1.0: the left side is right and the claim true), and
    gets FORMAT_SCORE when it claims another value ('3*5+7 = 21'), right left side or not. (The common
    scorer counts the '22' as a number used, so both get FORMAT_SCORE there: a right answer written
    the way instruct models write it would earn no more than a wrong one.)"""
    try:
        tree, claimed = parse_answer(extract_answer(completion))
        if tree is None:
            return 0.0
        if claimed is not None and evaluate(claimed) != target:
            return FORMAT_SCORE
        # Check the numbers first: it is cheap, and it bounds the arithmetic to the problem's
        # own numbers rather than whatever the model wrote.
        if sorted(leaves(tree)) != sorted(nums):
            return FORMAT_SCORE
        value = evaluate(tree)  # Fraction, or None on division by zero
        return 1.0 if value is not None and value == target else FORMAT_SCORE
    except Exception:  # a last resort (e.g. malformed nums); the paths above do not raise
        return 0.0


def is_correct(completion, nums, target):
    return countdown_reward(completion, nums, target) == 1.0


def answer_key(completion):
    """Canonical form of the parsed answer's expression (to count distinct correct answers), or None."""
    tree, _ = parse_answer(extract_answer(completion))
    return None if tree is None else canonical(tree)


# ============================================================================= math
# Math reward (GSM8K, MATH, AIME/AMC, the generated word problems): 1.0 if the final answer equals
# the reference mathematically, else 0.0 (no format score: a boxed wrong answer is just wrong).
# The final answer is the last \boxed{...} (the paper's instruction asks for one), else a GSM8K
# '#### N' line; a response with neither has no answer (0.0). A last-number fallback would pay
# truncated or unboxed responses by chance ('Step 2: carry the 5 and' -> 5), and the policy would
# learn from those rewards. Equality is math-verify's (sympy), so 1/2, 0.5, \frac12 and
# \dfrac{1}{2} are one answer. sympy on model text can be slow (a 9^{9^{9}} tower), so the answer is
# capped in length and parse/verify run under math-verify's timeouts, which use signal.alarm and so
# only work in the main thread. math_verify is imported on first use: Countdown runs don't need it.
MAX_MATH_ANSWER_CHARS = 1000  # longer than any real final answer; bounds what reaches sympy
MATH_TIMEOUT_S = 2  # per parse and per comparison; whole seconds (signal.alarm); real answers take ms
_BOX_COMMANDS = ("\\boxed", "\\fbox")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# A timeout on hostile text is expected and scored 0.0; math-verify would log each one as a
# warning that echoes up to MAX_MATH_ANSWER_CHARS of the model's text.
logging.getLogger("math_verify").setLevel(logging.ERROR)


def last_boxed(text):
    """Content of the last \\boxed{...} or \\fbox{...} in `text`, or None if there is none or it
    is never closed (a truncated response). One forward scan counting braces from the last
    command: linear time, no recursion, any nesting; \\{ and \\} are characters, not groups."""
    i = max((text.rfind(c) + len(c) if c in text else -1) for c in _BOX_COMMANDS)
    if i < 0:
        return None
    while i < len(text) and text[i].isspace():  # '\boxed {5}'
        i += 1
    if i < len(text) and text[i] != "{":  # '\boxed 5': what a model means is the next word
        word = text[i:].split(None, 1)[0].lstrip("$").split("$", 1)[0]
        return word or None
    depth, j = 0, i
    while j < len(text):
        if text[j] == "\\":
            j += 2  # skip the escaped character ('\{', '\}', '\\')
            continue
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j]
        j += 1
    return None


def extract_math_answer(completion):
    """The final answer of a completion, or None: the last box; else the text after the last
    '####' up to the line's end; else None (no guess from the last number). A box that is never
    closed is None too, not a cue to guess from the rest. Linear time, never raises."""
    if not isinstance(completion, str):
        return None
    if any(c in completion for c in _BOX_COMMANDS):
        return last_boxed(completion)
    at = completion.rfind("####")
    if at < 0:
        return None
    return completion[at + 4:].split("\n", 1)[0].strip() or None


def _normalise(s):
    """Spelling differences that need no sympy: spaces, '$', a final '.', 1,000 for 1000."""
    return _THOUSANDS_COMMA.sub("", "".join(s.split()).replace("$", "").rstrip("."))


def _equivalent(prediction, answer):
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException
    try:
        # '$...$' is how both plain numbers and LaTeX reach math-verify's LaTeX extractor
        # ('\boxed{3.}' fails to parse; '$3.$' is 3)
        gold = parse(f"${answer}$", parsing_timeout=MATH_TIMEOUT_S)
        guess = parse(f"${prediction}$", parsing_timeout=MATH_TIMEOUT_S)
        return bool(gold and guess) and verify(gold, guess, timeout_seconds=MATH_TIMEOUT_S)
    except TimeoutException:  # a BaseException; math-verify catches its own, this is a last resort
        return False


def math_reward(completion, answer):
    """1.0 if the final answer of `completion` equals the reference `answer` (a string), else
    0.0. Never raises on any completion, and returns within a few MATH_TIMEOUT_S."""
    if threading.current_thread() is not threading.main_thread():
        # math-verify would turn every comparison into a silent 0.0 here: fail loudly instead
        raise RuntimeError("math_reward needs the main thread (math-verify times out with signal.alarm)")
    try:
        prediction = extract_math_answer(completion)
        if prediction is None or not isinstance(answer, str):
            return 0.0
        if len(prediction) > MAX_MATH_ANSWER_CHARS or len(answer) > MAX_MATH_ANSWER_CHARS:
            return 0.0
        p, a = _normalise(prediction), _normalise(answer)
        if not p or not a:
            return 0.0
        return 1.0 if p == a or _equivalent(prediction, answer) else 0.0
    except Exception:  # a last resort: the paths above do not raise
        return 0.0


# ----------------------------------------------------------------------------- last number (task='arithmetic')
_NUMBER = re.compile(r"(?<!\d)-?\d+(?:\.\d+)?")  # a '-' right after a digit is subtraction, not a sign
MAX_NUMBER_CHARS = 32


def last_number_reward(completion, answer):
    """1.0 if the last number in `completion` equals `answer` (an integer string), else 0.0: '5 + 2 = 7.' is
    right for 7, '7 or 8' is not. Decimals compare by value ('7.0' is 7). One regex scan: linear, never raises."""
    try:
        numbers = _NUMBER.findall(completion) if isinstance(completion, str) else []
        if not numbers or len(numbers[-1]) > MAX_NUMBER_CHARS:
            return 0.0
        return 1.0 if Fraction(numbers[-1]) == Fraction(answer) else 0.0
    except (ValueError, TypeError, ZeroDivisionError):  # an answer that is not a number
        return 0.0
