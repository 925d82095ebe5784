"""
pass@k evaluation. `python eval.py` samples n responses per held-out problem from a checkpoint and
prints unbiased pass@k for k = 1, 2, 4, ..., n, with distinct correct answers per problem and mean
token entropy; the table is also written as JSON. train.py calls the same evaluate().

  python eval.py                                   # out/ckpt, n=64, on its run's problems, template, T
  python eval.py --ckpt=out/warmstart_countdown --n=256 --out=warm.json   # the warm start, same problems
  python eval.py --task=math --dataset=math500 --eval_problems=500 --n=16 --ckpt=Qwen/Qwen2.5-Math-1.5B \
      --template=instruct --temperature=0.7 --max_new_tokens=2048          # a real model on MATH-500
"""
import json
import math
import os
import sys
from collections import Counter

import torch

import tasks
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
def evaluate(model, tokenizer, task, problems, n=64, temperature=1.0, max_new_tokens=32, template="tiny",
             rows_per_batch=512, progress=False, compile=False, logprob_batch_size=None, hint=False):
    """Samples n responses for each problem (temperature=0: greedy); returns pass@k for k = 1, 2, 4, ..., n
    averaged over problems, the mean number of distinct correct answers per problem (tasks.answer_key: for
    Countdown up to commutativity/associativity; None, "n/a", for math), the mean token entropy and the
    accuracy; and the per-problem correct and distinct counts (for pass@k at any k, and to merge
    data-parallel shards), and how many times each distinct correct answer came (answer_counts: diversity at a
    matched number of correct samples, stats.matched_distinct). rows_per_batch responses are generated at once
    (their KV cache), and logprob_batch_size rows at a time go through the entropy pass. hint=True samples from
    the hinted prompts of DASD's teacher (tasks.hinted_prompt, the first solution as the hint): can the policy
    use one?"""
    prompts_per_batch = max(1, rows_per_batch // n)
    correct_counts, distinct, answer_counts, ent_sum, tok_sum = [], [], [], 0.0, 0.0
    batches = range(0, len(problems), prompts_per_batch)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc=f"eval n={n}", dynamic_ncols=True)
    for i in batches:
        chunk = problems[i:i + prompts_per_batch]
        prompts = [(tasks.hinted_prompt if hint else tasks.prompt)(task, p, template, tokenizer) for p in chunk]
        ro = rollout(model, tokenizer, prompts, n, max_new_tokens, temperature, logprob_batch_size, compile)
        ent_sum += ro.entropy.sum().item()
        tok_sum += ro.response_mask.sum().item()
        for j, p in enumerate(chunk):
            texts = ro.texts[j * n:(j + 1) * n]
            right = [t for t in texts if tasks.reward(task, t, p) == 1.0]
            correct_counts.append(len(right))
            keys = [tasks.answer_key(task, t, p) for t in right]  # one per correct response
            distinct.append(None if None in keys else len(set(keys)))  # None: the task has no such key
            answer_counts.append(None if None in keys else sorted(Counter(keys).values(), reverse=True))
    return summarize(n, temperature, correct_counts, distinct, ent_sum, tok_sum, answer_counts)


def summarize(n, temperature, correct, distinct, entropy_sum, tokens, answer_counts=None):
    """The result dict from per-problem counts: correct[i] of the n samples of problem i were right,
    distinct[i] distinct correct answers, answer_counts[i] how many times each came (or None). Shards of a
    data-parallel evaluation merge by concatenating their counts and adding entropy_sum and tokens (merge_results)."""
    m = max(len(correct), 1)  # a data-parallel shard may hold no problem
    return {
        "n": n, "temperature": temperature, "problems": len(correct),
        "pass@k": {k: sum(pass_at_k(n, c, k) for c in correct) / m for k in ks_for(n)},
        "accuracy": sum(correct) / (n * m),
        "distinct_correct": None if None in distinct else sum(distinct) / m,  # None: n/a (math)
        "entropy": entropy_sum / max(tokens, 1),
        "correct": correct, "distinct": distinct, "entropy_sum": entropy_sum, "tokens": tokens,
        **({"answer_counts": answer_counts} if answer_counts is not None else {}),
    }


def merge_results(results):
    """One result from the results of disjoint problem shards (e.g. one per data-parallel rank)."""
    r0 = results[0]
    return summarize(r0["n"], r0["temperature"], [c for r in results for c in r["correct"]],
                     [d for r in results for d in r["distinct"]], sum(r["entropy_sum"] for r in results),
                     sum(r["tokens"] for r in results),
                     [a for r in results for a in r["answer_counts"]] if "answer_counts" in r0 else None)


def format_table(res):
    lines = [f"{'k':>5} {'pass@k':>8}"] + [f"{k:>5} {v:8.4f}" for k, v in res["pass@k"].items()]
    distinct = "n/a" if res["distinct_correct"] is None else f"{res['distinct_correct']:.2f}"
    lines.append(f"distinct correct answers / problem: {distinct}   "
                 f"mean token entropy: {res['entropy']:.4f}   ({res['problems']} problems, "
                 f"n={res['n']}, T={res['temperature']})")
    return "\n".join(lines)


# the shipped GRPO run of the default settings (train.py prints it beside a default run: assets/default_run)
REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "default_run", "grpo.json")
NOT_SETTINGS = ("algo", "out_dir", "device", "dtype", "compile", "eval_batch_rows", "log_interval", "wandb_log",
                "wandb_project", "wandb_run_name")  # what may differ from the shipped run: no effect on its numbers


NOT_READ_BY_GRPO = ("alpha", "beta", "ds_form", "entropy_coef", "top_entropy_frac", "stapo_q", "ict_warmup_steps", "ict_frac",
                    "dasd_beta", "dasd_rho", "dasd_norm", "warmstart_hint_frac")  # the other methods' constants


def reference_run(config):
    """The shipped GRPO run's final evaluation when `config` is the same but for the algorithm and what GRPO does
    not read (or what has no effect on the numbers), else None: a row read from a file, shown only where it is
    comparable."""
    if not os.path.exists(REFERENCE):
        return None
    from configurator import renamed, script_defaults
    with open(REFERENCE) as f:
        ref = json.load(f)
    stored = renamed(ref["config"])
    # a key newer than the run: the run behaved as that key's default does (new options default to the old way)
    defaults = script_defaults(os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py"))
    same = all(stored.get(k, defaults.get(k)) == v for k, v in config.items() if k not in NOT_SETTINGS + NOT_READ_BY_GRPO)
    return ref if same and config.get("algo") != ref["algo"] else None


def format_start_vs_final(start, final, steps, algo="", reference=None):
    """Rows side by side: the starting policy's pass@1, pass@16, pass@n and distinct correct answers, the trained
    policy's (evaluated with the same n), and a shipped reference run's (reference_run), labelled as such."""
    ks = [k for k in (1, 16, final["n"]) if k in {int(j) for j in final["pass@k"]}]  # JSON keys are strings
    rows = [("starting policy", start), (f"{algo} after {steps} steps".strip(), final)]
    if reference:
        rows.append((f"{reference['algo']}, same settings*", reference))
    width = max(len(name) for name, _ in rows) + 2
    lines = [f"{'':>{width}}" + "".join(f"{'pass@' + str(k):>10}" for k in ks) + f"{'distinct':>10}"]
    for name, r in rows:
        passk = {int(k): v for k, v in r["pass@k"].items()}  # JSON keys are strings
        distinct = "n/a" if r["distinct_correct"] is None else f"{r['distinct_correct']:.2f}"  # None: math
        lines.append(f"{name:>{width}}" + "".join(f"{passk[k]:>10.4f}" for k in ks) + f"{distinct:>10}")
    if reference:
        lines.append(f"* read from {os.path.relpath(REFERENCE)} (a run made once with --algo={reference['algo']} "
                     f"and this run's other settings; not run now)")
    return "\n".join(lines)


# what eval.py takes from the run that wrote the checkpoint (else from train.py's defaults): the problems, and how
# they are posed and sampled
RUN_SETTINGS = ("task", "dataset", "n_problems", "data_seed", "val_problems", "eval_split", "eval_problems", "cd_sizes",
                "cd_min_num", "cd_max_num", "cd_max_target", "cd_min_solutions", "cd_target", "template",
                "max_new_tokens", "temperature")

if __name__ == "__main__":
    import tempfile
    from contextlib import nullcontext
    import countdown
    from checkpoint import run_settings
    from configurator import configure, script_defaults
    from model import load_policy
    ckpt = "out/ckpt"  # a checkpoint directory (save_pretrained format) or a hub name
    n = 64  # samples per problem
    rows_per_batch = 0  # responses generated at once (their KV cache); 0 = 2**17 // max_new_tokens, at most 512
    micro_batch_size = 16  # rows per pass of the entropy computation (bounds its activations)
    seed = 0
    hint = False  # sample from DASD's hinted prompts (the teacher's view) instead of the plain ones
    out = ""  # JSON output path; default: <ckpt>/eval_n<n>.json (hub model: eval_<name>_n<n>.json; --hint: eval_hint_)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if torch.cuda.is_available() else "float32"  # autocast dtype, as train.py
    # RUN_SETTINGS: train.py's defaults, then the run's own (ckpt/settings.json), then the command line's;
    # temperature=0 is greedy decoding
    train_defaults = script_defaults(os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py"))
    (task, dataset, n_problems, data_seed, val_problems, eval_split, eval_problems, cd_sizes, cd_min_num, cd_max_num,
     cd_max_target, cd_min_solutions, cd_target, template, max_new_tokens, temperature) = (
        train_defaults[k] for k in RUN_SETTINGS)
    configure(globals(), sys.argv[1:])
    given = {a[2:].partition("=")[0] for a in sys.argv[1:] if a.startswith("--")}
    saved = run_settings(ckpt) if os.path.isdir(ckpt) else {}
    globals().update({k: saved[k] for k in RUN_SETTINGS if k in saved and k not in given})
    if saved:
        print(f"the run's settings ({os.path.join(ckpt, 'settings.json')}): " + ", ".join(
            f"{k}={globals()[k]!r}" for k in RUN_SETTINGS if k not in given))
    # checked before the model loads or anything is sampled: a bad value is one line, not an hour lost
    if min(n, max_new_tokens, eval_problems, micro_batch_size) < 1 or rows_per_batch < 0:
        raise SystemExit("n, max_new_tokens, eval_problems, micro_batch_size must be >= 1 and rows_per_batch >= 0")
    if not temperature >= 0:
        raise SystemExit(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if dtype not in ("float32", "bfloat16"):
        raise SystemExit(f"dtype must be float32 or bfloat16, got {dtype!r}")
    if eval_split not in ("test", "val"):
        raise SystemExit(f"eval_split must be 'test' or 'val', got {eval_split!r}")
    # 2**17 tokens: Qwen2.5-Math-1.5B's bfloat16 KV cache is 28 KiB a token, so 64 rows of 2048 new tokens
    # plus the prompt take about 4 GB (README, "Memory")
    rows = rows_per_batch or max(1, min(512, 2 ** 17 // max_new_tokens))
    name = f"{'hint_' if hint else ''}n{n}.json"
    path = out or (os.path.join(ckpt, f"eval_{name}") if os.path.isdir(ckpt)
                   else f"eval_{ckpt.replace('/', '--')}_{name}")  # a hub name is no directory to write in
    try:  # fail now, not after the evaluation
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tempfile.TemporaryFile(dir=os.path.dirname(path) or ".").close()
    except (OSError, ValueError) as e:
        raise SystemExit(f"cannot write the results to {path!r} ({getattr(e, 'strerror', None) or e}): "
                         f"give --out=<a writable path>")
    torch.manual_seed(seed)
    model, tokenizer = load_policy(ckpt, device)
    regime = countdown.regime(cd_sizes, cd_min_num, cd_max_num, cd_max_target, cd_min_solutions, cd_target)
    train, test = tasks.load(task, dataset, n_problems, data_seed, regime)
    problems = (test if eval_split == "test" else train[:val_problems])[:eval_problems]  # as train.py chooses them
    ctx = (torch.autocast(device_type=device.split(":")[0], dtype=getattr(torch, dtype))
           if dtype != "float32" else nullcontext())
    with ctx:
        res = evaluate(model, tokenizer, task, problems, n, temperature, max_new_tokens, template, rows,
                       progress=True, logprob_batch_size=micro_batch_size, hint=hint)
    print(format_table(res))
    with open(path, "w") as f:
        json.dump({"ckpt": ckpt, "settings": {k: globals()[k] for k in RUN_SETTINGS}, **res}, f, indent=2)
    print(f"wrote {path}")
