"""
Countdown reward: 1.0 for a correct answer, FORMAT_SCORE for a well-formed but wrong one,
0.0 when there is no parseable answer (the TinyZero convention, see PAPERS.md section 5).

Model text is never handed to eval/exec: the common reference scorer does that behind a
character whitelist, which lets '**' and '//' through (an exponent tower hangs it), splits
decimals into two numbers and accepts unary minus. Here a tiny hand-written parser accepts
exactly  expr := term (('+'|'-') term)* ; term := factor (('*'|'/') factor)* ;
factor := INT | '(' expr ')'  and the value is computed exactly with Fractions.
"""
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


def countdown_reward(completion, nums, target):
    """1.0 if the last answer uses exactly the multiset `nums` and equals `target` exactly;
    FORMAT_SCORE if it parses but is wrong; 0.0 otherwise. Never raises."""
    try:
        answer = extract_answer(completion)
        tree = None if answer is None else parse_expression(answer)
        if tree is None:
            return 0.0
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
    """Canonical form of the parsed answer (to count distinct correct answers), or None."""
    answer = extract_answer(completion)
    tree = None if answer is None else parse_expression(answer)
    return None if tree is None else canonical(tree)
