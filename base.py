"""
The shipped tiny base (assets/base/seed<seed>): the embedded 0.9M-parameter model, trained once by supervised
learning on solver solutions of every training problem of the default Countdown regime, and committed, so that
`python train.py` starts RL from a base that is often right and knows several answers per problem, with no warm
start at run time. See assets/base/README.md for the measured numbers and how they were made.

  python base.py --seed=0                         # trains assets/base/seed0 (about an hour on one CPU core)
  python base.py --seed=0 --stage=eval            # evaluates it on the test split and writes its manifest
  python base.py --stage=slices                   # both manifests' test problems by quarter of target, largest
                                                  # number, sum and number of solutions: is any slice easier?
"""
import itertools
import json
import os
import subprocess
import sys
import time

import torch

import countdown
import tasks
from configurator import configure
from eval import evaluate, format_table
from model import file_sha256, load_policy
from warmstart import warm_start

# ----------------------------------------------------------------------------- config
seed = 0  # the base's own seed: initialisation and the order of its examples
out_dir = ""  # '' = assets/base/seed<seed>
stage = "train"  # 'train' (then evaluate), 'eval' (evaluate an existing base, rewrite its manifest) or 'slices'
steps = 8000  # supervised steps (the lever that matters most: assets/base/README.md)
batch_size = 64
lr = 3e-3  # peak; cosine decay to 10%
n_layer = 4  # the embedded model's shape: an RL step costs what it cost before
n_embd = 128
snapshot_every = 2000  # also keep the model every that many steps (not shipped), to measure what steps buy
threads = 1  # torch threads: 1 lets two bases train side by side on 2 cores
# the evaluation written into the manifest: the default regime's test problems, as train.py
eval_problems = 200
eval_n = 256
eval_seed = 0
# the regime (train.py's defaults): the base learns every training problem of it, the validation split excluded
n_problems, data_seed, val_problems = 8000, 0, 200
cd_sizes, cd_min_num, cd_max_num, cd_max_target, cd_min_solutions = "4", 2, 15, 50, 5
configure(globals(), sys.argv[1:])
out_dir = out_dir or os.path.join("assets", "base", f"seed{seed}")
torch.set_num_threads(threads)


def all_problems():
    """Every problem of the regime: each multiset of numbers with each target it reaches in at least
    cd_min_solutions distinct ways. The generator draws from these; the base learns all of the training ones."""
    sizes = [int(k) for k in cd_sizes.split(",")]
    out = []
    for size in sizes:
        for nums in itertools.combinations_with_replacement(range(cd_min_num, cd_max_num + 1), size):
            for value, nodes in sorted(countdown._by_value(nums).items()):  # solve() without solving again
                if value.denominator == 1 and 1 <= value <= cd_max_target and len(nodes) >= cd_min_solutions:
                    out.append({"nums": list(nums), "target": int(value),
                                "solutions": sorted(countdown.render(node) for node in nodes)})
    return out


def regime_splits():
    regime = countdown.regime(cd_sizes, cd_min_num, cd_max_num, cd_max_target, cd_min_solutions, "uniform")
    train, test = tasks.load("countdown", "generated", n_problems, data_seed, regime)
    return train[:val_problems], test


if __name__ == "__main__" and stage == "train":
    val, _ = regime_splits()
    held_out = {(tuple(sorted(p["nums"])), p["target"]) for p in val}
    pool = [p for p in all_problems() if not countdown.is_test(p["nums"], p["target"])
            and (tuple(sorted(p["nums"])), p["target"]) not in held_out]  # never a test or validation problem
    print(f"{len(pool)} training problems in the regime, {sum(len(p['solutions']) for p in pool)} solutions")
    t0 = time.time()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # the code run
    warm_start(out_dir, "countdown", pool, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
               n_layer=n_layer, n_embd=n_embd, snapshot_every=snapshot_every)
    with open(os.path.join(out_dir, "train_info.json"), "w") as f:
        json.dump({"command": "python " + " ".join(sys.argv), "seed": seed, "steps": steps, "batch_size": batch_size,
                   "lr": lr, "n_layer": n_layer, "n_embd": n_embd, "train_problems": len(pool),
                   "train_seconds": round(time.time() - t0), "threads": threads,
                   "commit": commit,
                   "torch": torch.__version__}, f, indent=2)


def evaluate_base(path, n, problems):
    """pass@k, distinct correct answers and token entropy of the model in `path` on `problems`, n samples each at
    T = 1, as train.py evaluates (the same problems, seed and sampler)."""
    torch.manual_seed(eval_seed)
    model, tokenizer = load_policy(path)
    res = evaluate(model, tokenizer, "countdown", problems, n, 1.0, 32, "tiny", 512, progress=True,
                   logprob_batch_size=128)
    return {**res, "parameters": sum(p.numel() for p in model.parameters())}


if __name__ == "__main__" and stage in ("train", "eval"):  # the manifest: how it was made, its hash, its numbers
    _, test = regime_splits()
    res = evaluate_base(out_dir, eval_n, test[:eval_problems])
    print(format_table(res))
    with open(os.path.join(out_dir, "train_info.json")) as f:
        info = json.load(f)
    manifest = {**info, "parameters": res["parameters"],
                "sha256": file_sha256(os.path.join(out_dir, "model.safetensors")),
                "files": {name: file_sha256(os.path.join(out_dir, name)) for name in sorted(os.listdir(out_dir))
                          if name not in ("manifest.json", "train_info.json")},
                "eval_command": f"python base.py --seed={seed} --stage=eval",
                "eval": {"problems": res["problems"], "n": res["n"], "temperature": res["temperature"],
                         "pass@k": res["pass@k"], "distinct_correct": res["distinct_correct"],
                         "accuracy": res["accuracy"], "entropy": res["entropy"], "correct": res["correct"],
                         "distinct": res["distinct"]}}
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"wrote {out_dir}/manifest.json")


if __name__ == "__main__" and stage == "levers":  # what longer training buys: the snapshots at eval_n
    _, test = regime_splits()
    snaps = out_dir.rstrip("/") + "_snapshots"
    rows = {}
    for name in sorted(os.listdir(snaps), key=lambda d: int(d[4:])) + [None]:
        res = evaluate_base(os.path.join(snaps, name) if name else out_dir, eval_n, test[:eval_problems])
        rows[name or f"step{steps}"] = {k: res[k] for k in ("pass@k", "distinct_correct", "accuracy", "entropy")}
        print(name, {k: round(v, 4) for k, v in res["pass@k"].items()}, res["distinct_correct"], flush=True)
    with open(os.path.join(os.path.dirname(out_dir), f"levers_seed{seed}_n{eval_n}.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__" and stage == "slices":  # the manifests' per-problem counts, by feature of the problem
    _, test = regime_splits()
    features = {"target": lambda p: p["target"], "largest number": lambda p: max(p["nums"]),
                "sum of numbers": lambda p: sum(p["nums"]),
                "solutions": lambda p: len(countdown.solve(p["nums"], p["target"]))}
    for k in (0, 1):
        with open(os.path.join("assets", "base", f"seed{k}", "manifest.json")) as f:
            ev = json.load(f)["eval"]
        problems = test[:ev["problems"]]
        print(f"seed {k}: pass@1 / pass@{ev['n']} / distinct correct, by quarter of each feature "
              f"({ev['problems']} test problems, n = {ev['n']})")
        for name, feature in features.items():
            order = sorted(range(len(problems)), key=lambda i: feature(problems[i]))  # four equal parts, in order
            cells = []
            for q in range(4):
                rows = order[q * len(order) // 4:(q + 1) * len(order) // 4]
                cells.append(f"{feature(problems[rows[0]])}..{feature(problems[rows[-1]])}: "
                             f"{sum(ev['correct'][i] for i in rows) / (ev['n'] * len(rows)):.3f} / "
                             f"{sum(ev['correct'][i] > 0 for i in rows) / len(rows):.2f} / "
                             f"{sum(ev['distinct'][i] for i in rows) / len(rows):.1f}")
            print(f"  {name:>15}  " + "   ".join(cells))
