"""
pass@k evaluation. `python eval.py` samples n responses per held-out problem from a checkpoint and
prints unbiased pass@k for k = 1, 2, 4, ..., n, with distinct correct answers per problem and mean
token entropy; the table is also written as JSON. train.py calls the same evaluate().

  python eval.py                                   # out/ckpt on the generated test split, n=64
  python eval.py --ckpt=out/warmstart --n=256 --temperature=1.0 --out=warm.json
"""
import json
import math
import sys

import torch

import countdown
from reward import answer_key, countdown_reward
from rollout import rollout


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), in the stable product form
    1 - prod_{i=n-c+1}^{n} (1 - k/i). The naive 1 - (1 - c/n)^k is biased."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def ks_for(n):
    return [2 ** i for i in range(int(math.log2(n)) + 1)] + ([n] if n & (n - 1) else [])


@torch.no_grad()
def evaluate(model, tokenizer, problems, n=64, temperature=1.0, max_new_tokens=32, template="tiny",
             rows_per_batch=512, progress=False):
    """Samples n responses for each problem; returns pass@k for k = 1, 2, 4, ..., n averaged over
    problems, the mean number of distinct correct answers per problem (distinct up to
    commutativity/associativity, countdown.canonical), the mean token entropy and the accuracy."""
    prompts_per_batch = max(1, rows_per_batch // n)
    correct_counts, distinct, ent_sum, tok_sum = [], [], 0.0, 0.0
    batches = range(0, len(problems), prompts_per_batch)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc=f"eval n={n}", dynamic_ncols=True)
    for i in batches:
        chunk = problems[i:i + prompts_per_batch]
        prompts = [countdown.format_prompt(p["nums"], p["target"], template) for p in chunk]
        ro = rollout(model, tokenizer, prompts, n, max_new_tokens, temperature)
        ent_sum += ro.entropy.sum().item()
        tok_sum += ro.response_mask.sum().item()
        for j, p in enumerate(chunk):
            texts = ro.texts[j * n:(j + 1) * n]
            right = [t for t in texts if countdown_reward(t, p["nums"], p["target"]) == 1.0]
            correct_counts.append(len(right))
            distinct.append(len({answer_key(t) for t in right}))
    ks = ks_for(n)
    return {
        "n": n, "temperature": temperature, "problems": len(problems),
        "pass@k": {k: sum(pass_at_k(n, c, k) for c in correct_counts) / len(problems) for k in ks},
        "accuracy": sum(correct_counts) / (n * len(problems)),
        "distinct_correct": sum(distinct) / len(problems),
        "entropy": ent_sum / max(tok_sum, 1),
    }


def format_table(res):
    lines = [f"{'k':>5} {'pass@k':>8}"] + [f"{k:>5} {v:8.4f}" for k, v in res["pass@k"].items()]
    lines.append(f"distinct correct answers / problem: {res['distinct_correct']:.2f}   "
                 f"mean token entropy: {res['entropy']:.4f}   ({res['problems']} problems, "
                 f"n={res['n']}, T={res['temperature']})")
    return "\n".join(lines)


if __name__ == "__main__":
    from configurator import configure
    from model import load_policy
    ckpt = "out/ckpt"  # a checkpoint directory (save_pretrained format) or a hub name
    n = 64  # samples per problem
    temperature = 1.0  # the training temperature of the tiny default
    max_new_tokens = 32
    template = "tiny"  # prompt template (countdown.PROMPT_TEMPLATES)
    num_problems = 200  # held-out problems to evaluate (the first ones of the test split)
    dataset, n_problems, data_seed = "generated", 8000, 0  # must match the training run's data
    rows_per_batch = 512  # responses generated at once
    seed = 0
    out = ""  # JSON output path; default: <ckpt>/eval_n<n>.json
    device = "cuda" if torch.cuda.is_available() else "cpu"
    configure(globals(), sys.argv[1:])
    torch.manual_seed(seed)
    model, tokenizer = load_policy(ckpt, device)
    _, test = countdown.load_problems(dataset, n_problems, data_seed)
    res = evaluate(model, tokenizer, test[:num_problems], n, temperature, max_new_tokens, template,
                   rows_per_batch, progress=True)
    print(format_table(res))
    path = out or f"{ckpt.rstrip('/')}/eval_n{n}.json"
    with open(path, "w") as f:
        json.dump({"ckpt": ckpt, **res}, f, indent=2)
    print(f"wrote {path}")
