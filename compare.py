"""
The paper's comparison at small scale, in one command: from one shared warm start, train GRPO, DS-GRPO,
the entropy bonus / penalty, 20-Entropy, STAPO and ICT for the same steps and rollout budget, several
seeds each, evaluate every final model (and the warm start) on the same held-out problems with n
samples, and sweep DS-GRPO's alpha x beta. Writes results.json, results.md (the tables) and PNGs.

  python compare.py                   # the full run (README "Results"): about 2 h on 2 CPU cores
  python compare.py --quick           # smoke test: tiny everything, a minute or two
  python compare.py --jobs=1 --threads=16 --out_dir=out/compare_gpu   # on a GPU box

Every run is a plain `python train.py --key=value ...` subprocess with its own out_dir, so a run can be
re-run or inspected alone; finished runs (final_eval.json present) are skipped, so a killed comparison
resumes where it stopped. What was simplified: one warm start (the RL seeds vary, the warm start does
not); the sweep uses one seed, fewer steps and fewer samples; pass@k uses the unbiased estimator on n
samples per problem.
"""
import json
import math
import os
import shutil
import subprocess
import sys
import time

from configurator import configure
from eval import pass_at_k

# ----------------------------------------------------------------------------- config
out_dir = "out/compare"
methods = "grpo,ds-grpo,entropy-bonus,entropy-penalty,20-entropy,stapo,ict"
seeds = 3  # RL seeds per method (1, 2, ...): prompt order and sampling
max_steps = 150  # RL steps of every run (32 prompts x G = 8 each, train.py defaults)
eval_n = 256  # samples per held-out problem in the final evaluation
eval_problems = 100
alphas = "0.3,1.0,3.0"  # DS-GRPO sweep (one seed): gamma_p ...
betas = "0.03,0.1,0.3"  # ... x gamma_n; empty = no sweep
sweep_steps = 75  # RL steps of the sweep runs (half the comparison's: CPU budget)
sweep_eval_n = 64  # samples per problem in the sweep's evaluation (it reports pass@1 and pass@64)
jobs = 2  # train.py processes at once
threads = 1  # torch threads per process (OMP_NUM_THREADS)
warmstart_steps = 1500
train_args = ""  # extra --key=value for every train.py run, space-separated
quick = False  # smoke test: 3 steps, 1 seed, n=8 on 8 problems, a 1x2 sweep
configure(globals(), sys.argv[1:])
if quick:
    seeds, max_steps, eval_n, eval_problems, warmstart_steps = 1, 3, 8, 8, 30
    alphas, betas, sweep_steps, sweep_eval_n = "1.0", "0.1,0.3", 3, 8
# -----------------------------------------------------------------------------
METHODS = methods.split(",")
ALPHAS = [float(a) for a in alphas.split(",")] if alphas and betas else []
BETAS = [float(b) for b in betas.split(",")] if alphas and betas else []
base_dir = os.path.join(out_dir, "base")  # the warm start, shared by every run
warm = os.path.join(base_dir, "warmstart_countdown")
common = [f"--max_steps={max_steps}", f"--final_eval_n={eval_n}", f"--eval_problems={eval_problems}",
          "--eval_n=16", f"--eval_interval={max(max_steps // 3, 1)}", f"--ckpt_interval={max_steps}",
          f"--log_interval={max(max_steps // 5, 1)}", f"--warmstart_steps={warmstart_steps}"] + train_args.split()


def runs():
    """(name, extra train.py args) of every RL run: the methods x seeds, then the sweep grid."""
    todo = [(f"{m}_s{s}", [f"--algo={m}", f"--seed={s}"]) for m in METHODS for s in range(1, seeds + 1)]
    for a in ALPHAS:
        for b in BETAS:
            todo.append((f"ds-grpo_a{a}_b{b}", ["--algo=ds-grpo", "--seed=1", f"--alpha={a}", f"--beta={b}",
                                                f"--max_steps={sweep_steps}", f"--final_eval_n={sweep_eval_n}",
                                                f"--eval_interval={sweep_steps}", f"--ckpt_interval={sweep_steps}"]))
    return todo


def launch(name, extra):
    run_dir = os.path.join(out_dir, name)
    if not os.path.exists(os.path.join(run_dir, "warmstart_countdown")):
        shutil.copytree(warm, os.path.join(run_dir, "warmstart_countdown"))
    cmd = [sys.executable, "train.py", f"--out_dir={run_dir}", *common, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log = open(os.path.join(run_dir, "train.log"), "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), cmd


def run_all():
    """The warm start first (its max_steps=0 run is the warm-start row), then the RL runs, `jobs` at once."""
    t0 = time.time()
    if not os.path.exists(os.path.join(base_dir, "final_eval.json")):  # train.py makes the warm start here
        os.makedirs(base_dir, exist_ok=True)
        cmd = [sys.executable, "train.py", f"--out_dir={base_dir}", *common, "--max_steps=0"]
        print(" ".join(cmd[1:]), flush=True)
        with open(os.path.join(base_dir, "train.log"), "w") as log:
            if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                raise SystemExit(f"warm start failed: see {base_dir}/train.log")
    todo = [(n, e) for n, e in runs() if not os.path.exists(os.path.join(out_dir, n, "final_eval.json"))]
    running, failed = [], []
    while todo or running:
        while todo and len(running) < jobs:
            name, extra = todo.pop(0)
            os.makedirs(os.path.join(out_dir, name), exist_ok=True)
            p, cmd = launch(name, extra)
            print(f"[{time.time() - t0:6.0f}s] start {name}: {' '.join(cmd[1:])}", flush=True)
            running.append((name, p))
        time.sleep(1)
        for name, p in [r for r in running if r[1].poll() is not None]:
            running.remove((name, p))
            print(f"[{time.time() - t0:6.0f}s] done  {name} (exit {p.returncode})", flush=True)
            if p.returncode != 0:
                failed.append(name)
    if failed:
        raise SystemExit(f"runs failed: {failed}; see {out_dir}/<run>/train.log "
                         f"(finished runs are kept: re-run to resume)")
    return time.time() - t0


# ----------------------------------------------------------------------------- results
def load_run(name):
    with open(os.path.join(out_dir, name, "final_eval.json")) as f:
        res = json.load(f)
    with open(os.path.join(out_dir, name, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    steps = [r for r in records if "step" in r]
    seconds = sum(r["time_rollout"] + r["time_reward"] + r["time_train"] for r in steps) + sum(
        r["eval_time"] for r in records if "eval_step" in r)  # the run's own time, whatever else ran
    n = res["n"]
    curve = [sum(pass_at_k(n, c, k) for c in res["correct"]) / len(res["correct"]) for k in range(1, n + 1)]
    return {"pass@k": curve, "entropy": res["entropy"], "distinct": res["distinct_correct"], "seconds": seconds,
            "accuracy_curve": [r["accuracy"] for r in steps], "entropy_curve": [r["entropy"] for r in steps]}


def mean_std(xs):
    m = sum(xs) / len(xs)
    return m, (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0


def k_prime(curve, target):
    """Smallest k whose pass@k reaches target (None if no k <= n does)."""
    return next((k for k, v in enumerate(curve, 1) if v >= target - 1e-12), None)


def summarise():
    rows = {"warm start": [load_run("base")]}
    rows.update({m: [load_run(f"{m}_s{s}") for s in range(1, seeds + 1)] for m in METHODS})
    n = len(rows["warm start"][0]["pass@k"])
    ks = [k for k in (1, 8, 64, 256) if k <= n]
    summary = {}
    for m, rs in rows.items():
        curves = [r["pass@k"] for r in rs]
        summary[m] = {
            "seeds": len(rs),
            "pass@k_mean": [mean_std([c[k] for c in curves])[0] for k in range(n)],
            "pass@k_std": [mean_std([c[k] for c in curves])[1] for k in range(n)],
            "entropy": mean_std([r["entropy"] for r in rs]), "distinct": mean_std([r["distinct"] for r in rs]),
        }
    ref = "grpo" if "grpo" in summary else "warm start"
    targets = {k: summary[ref]["pass@k_mean"][k - 1] for k in (64, 256) if k <= n}
    for m, s in summary.items():
        s["k_prime"] = {k: k_prime(s["pass@k_mean"], t) for k, t in targets.items()}
    sweep = {}
    for a in ALPHAS:
        for b in BETAS:
            c = load_run(f"ds-grpo_a{a}_b{b}")["pass@k"]
            sweep[f"{a},{b}"] = {"pass@1": c[0], f"pass@{min(64, len(c))}": c[min(64, len(c)) - 1]}
    seconds = sum(r["seconds"] for rs in rows.values() for r in rs) + sum(
        load_run(f"ds-grpo_a{a}_b{b}")["seconds"] for a in ALPHAS for b in BETAS)
    return rows, summary, ks, ref, targets, sweep, seconds


def table(summary, ks, ref, targets):
    cols = ["method", *(f"pass@{k}" for k in ks), "entropy", "distinct correct",
            *(f"k′ to {ref} pass@{k}" for k in targets)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for m, s in summary.items():
        cells = [f"{s['pass@k_mean'][k - 1]:.3f} ± {s['pass@k_std'][k - 1]:.3f}" for k in ks]
        cells += [f"{s['entropy'][0]:.3f} ± {s['entropy'][1]:.3f}",
                  f"{s['distinct'][0]:.2f} ± {s['distinct'][1]:.2f}"]
        cells += [str(s["k_prime"][k]) if s["k_prime"][k] else f">{len(s['pass@k_mean'])}" for k in targets]
        lines.append(f"| {m} (×{s['seeds']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plots(rows, summary, sweep):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m, s in summary.items():
        k = range(1, len(s["pass@k_mean"]) + 1)
        lo = [a - b for a, b in zip(s["pass@k_mean"], s["pass@k_std"])]
        hi = [a + b for a, b in zip(s["pass@k_mean"], s["pass@k_std"])]
        line, = ax.plot(k, s["pass@k_mean"], label=m, lw=2 if m in ("grpo", "ds-grpo") else 1.2,
                        ls="--" if m == "warm start" else "-", color="k" if m == "warm start" else None)
        ax.fill_between(k, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="k (samples per problem)", ylabel="pass@k", title="Countdown, held-out problems (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "passk.png"), dpi=120)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for m, rs in rows.items():
        if m == "warm start":
            continue
        for ax, key in zip(axes, ("accuracy_curve", "entropy_curve")):
            curve = [sum(v) / len(v) for v in zip(*[r[key] for r in rs])]  # mean over seeds
            w = max(1, len(curve) // 15)  # running mean: a step is 32 prompts, noisy
            smooth = [sum(curve[max(0, i - w + 1):i + 1]) / min(i + 1, w) for i in range(len(curve))]
            ax.plot(range(1, len(curve) + 1), smooth, label=m, lw=2 if m in ("grpo", "ds-grpo") else 1.2)
    axes[0].set(xlabel="RL step", ylabel="rollout accuracy", title="training accuracy (running mean)")
    axes[1].set(xlabel="RL step", ylabel="mean token entropy", title="rollout entropy")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "training.png"), dpi=120)

    if sweep:
        keys = list(next(iter(sweep.values())))
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for ax, key in zip(axes, keys):
            grid = [[sweep[f"{a},{b}"][key] for b in BETAS] for a in ALPHAS]
            im = ax.imshow(grid, cmap="viridis", origin="lower")
            for i, row in enumerate(grid):
                for j, v in enumerate(row):
                    ax.text(j, i, f"{v:.3f}", ha="center", va="center", color="w", fontsize=9)
            ax.set(xticks=range(len(BETAS)), xticklabels=BETAS, yticks=range(len(ALPHAS)), yticklabels=ALPHAS,
                   xlabel="beta (γ_n, penalty on incorrect)", ylabel="alpha (γ_p, bonus on correct)",
                   title=f"DS-GRPO {key}")
            fig.colorbar(im, ax=ax, shrink=0.8)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "sweep.png"), dpi=120)
    plt.close("all")


if __name__ == "__main__":
    wall = run_all()
    rows, summary, ks, ref, targets, sweep, seconds = summarise()
    md = table(summary, ks, ref, targets)
    if sweep:
        keys = list(next(iter(sweep.values())))
        md += (f"\n\n| DS-GRPO alpha, beta (seed 1, {sweep_steps} steps, n={sweep_eval_n}) | {keys[0]} | {keys[1]} |"
               "\n|---|---|---|\n") + "\n".join(
            f"| {k} | {v[keys[0]]:.3f} | {v[keys[1]]:.3f} |" for k, v in sweep.items())
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"config": {k: globals()[k] for k in ("methods", "seeds", "max_steps", "eval_n", "eval_problems", "alphas",
                                                         "betas", "sweep_steps", "sweep_eval_n", "train_args", "quick")},
                   "train_args": common, "wall_time_s": wall, "run_seconds_summed": seconds,
                   "summary": summary, "sweep": sweep,
                   "runs": {m: [r["pass@k"] for r in rs] for m, rs in rows.items()}}, f)
    plots(rows, summary, sweep)
    print(md)
    print(f"wall time of this invocation {wall:.0f}s (a resumed comparison counts only what it ran); "
          f"RL steps + evaluations summed over all runs {seconds:.0f}s")
    print(f"wrote {out_dir}/results.json, results.md, passk.png, training.png"
          + (", sweep.png" if sweep else ""))
