"""
The tasks behind a few small functions, so train.py, eval.py and the warm start don't care which one
runs: each takes the task ('countdown', 'math' or 'arithmetic') first. A Countdown problem is
{'nums', 'target', ...}; a math or arithmetic problem is {'question', 'answer'}. Arithmetic is math's
easy sibling for small real models: one operation, the answer read as the response's last number.
"""
import countdown
import math_task
from reward import answer_key as countdown_key, countdown_reward, last_number_reward, math_reward


def load(task, dataset, n_problems, seed=0, regime=None):
    """(train, test) problem lists.
    countdown: 'generated' (offline, the default) or 'hf' (Countdown-Tasks-3to4);
    `regime`: the knobs of countdown.generate_problems (problem sizes, number and target ranges, ...).
    math: 'generated' (offline word problems) or a name in math_task.HUB_DATASETS, whose default split
    is the test set; only 'gsm8k' and 'math' have a train split to learn from."""
    try:
        return _load(task, dataset, n_problems, seed, regime)
    except ValueError as e:  # a malformed row: the loaders name the set, the row and the field
        raise SystemExit(str(e))


def _load(task, dataset, n_problems, seed, regime):
    if task == "countdown":
        return countdown.load_problems(dataset, n_problems, seed, **(regime or {}))
    if task == "arithmetic":
        if dataset != "generated":
            raise SystemExit(f"task='arithmetic' has only dataset='generated', got {dataset!r}")
        return math_task.train_test_split(math_task.generate_arithmetic(n_problems, seed))
    if task != "math":
        raise SystemExit(f"task must be 'countdown', 'math' or 'arithmetic', got {task!r}")
    if dataset == "generated":
        return math_task.train_test_split(math_task.generate_math_problems(n_problems, seed))
    test = math_task.load_math(dataset, limit=n_problems)
    train = math_task.load_math(dataset, "train", limit=n_problems) if dataset in ("gsm8k", "math") else []
    return train, test


def prompt(task, problem, template, tokenizer=None, hint=""):
    """The prompt string. With a tokenizer that has a chat template (instruct models), the task text
    becomes the user turn and the assistant turn is opened; otherwise the plain text is the prompt.
    The rollout tokenises a templated prompt as it is (the template has its special tokens) and adds
    the tokenizer's own special tokens (a BOS) to plain text only. hint: see hinted_prompt."""
    if task == "countdown":
        text = countdown.format_prompt(problem["nums"], problem["target"], template, hint)
    else:
        instruction = math_task.ARITHMETIC_INSTRUCTION if task == "arithmetic" else math_task.MATH_INSTRUCTION
        text = math_task.math_prompt(problem["question"], template, hint, instruction)
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return text


def hint(task, problem, rng=None):
    """DASD's privileged information: for Countdown one solver solution (drawn by rng, the first of the
    sorted solutions without one), for math the reference answer."""
    if task == "countdown":
        solutions = problem.get("solutions") or countdown.solve(problem["nums"], problem["target"])  # hub rows
        if not solutions:  # an unsolvable hub row: no hint, so the teacher is the student there
            return ""
        return rng.choice(solutions) if rng else solutions[0]
    return problem["answer"]


def hinted_prompt(task, problem, template, tokenizer=None, hint_text=None):
    """The prompt with the privileged context of DASD's teacher: the plain prompt's task text followed by
    a hint line (countdown.HINT_TEMPLATES, math_task.HINT_TEMPLATES), inside the user turn when there
    is a chat template. hint_text=None: hint(task, problem); '' gives exactly prompt(...)."""
    hint_text = hint(task, problem) if hint_text is None else hint_text
    return prompt(task, problem, template, tokenizer, hint_text)


def reward(task, completion, problem):
    """Countdown: 1 / FORMAT_SCORE / 0. Math: 1 / 0 (math-verify). Arithmetic: 1 / 0 (the last number)."""
    if task == "countdown":
        return countdown_reward(completion, problem["nums"], problem["target"])
    if task == "arithmetic":
        return last_number_reward(completion, problem["answer"])
    return math_reward(completion, problem["answer"])


def answer_key(task, completion, problem):
    """What makes two correct answers *different*: for Countdown the expression up to commutativity
    and associativity. For math None: every correct answer has the same value, and a key on the
    response text would count samples (any change of wording), not solutions; distinct solutions
    are not measured there, so evaluate reports "n/a"."""
    if task == "countdown":
        return countdown_key(completion)
    return None


def sft_completion(task, problem, rng):
    """A warm-start target for the tiny model: one of the solver's solutions drawn uniformly (so a
    problem with many solutions teaches many answers), or the worked answer of a math problem."""
    if task == "countdown":
        return f"<answer>{rng.choice(problem['solutions'])}</answer>"
    if task == "arithmetic":
        return problem["answer"]
    return math_task.solution_text(problem)
