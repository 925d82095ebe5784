"""
DS-GRPO against GRPO and the entropy heuristics, in one command, with statistics that can tell:

  python compare.py           # the README "Results" table: sweep on validation, then methods x seeds on test
  python compare.py --quick   # smoke test (CI): tiny everything, a couple of minutes

1. One warm start, shared by every run; `train.py --max_steps=0` evaluates it on the test problems.
2. The sweep, one seed, scored on the *validation* split (training problems that are never trained on):
   DS-GRPO's alpha x beta grid (it includes beta = 0 and alpha = beta) and the entropy bonus's c, with a
   GRPO run for reference. The setting with the best score = (pass@1 + pass@`sweep_eval_n`) / 2 is
   fixed for the final runs; the test problems are never looked at to choose it.
3. The final runs: every method x `seeds` seeds, the same steps and rollouts, evaluated on the same
   `eval_problems` test problems with n = `eval_n` samples at the training temperature.
4. Means with 95% bootstrap intervals over problems and seeds, and paired differences (DS - GRPO on the
   same problems); a method is called better only where the interval of the difference excludes zero.
   Each DS form is paired with GRPO under the same normalisation (with or without the std division).

Every run is a plain `train.py` subprocess with its own out_dir under `out_dir`: finished runs are skipped,
runs with a checkpoint resume (--init_from=resume), so a killed comparison continues where it stopped; a
larger eval_n later evaluates the finished runs again from their final checkpoints, without training.
Writes results.json, results.md, passk.png, training.png, sweep.png.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

import stats
from checkpoint import read_log
from checks import ALGOS
from configurator import configure

# ----------------------------------------------------------------------------- config
out_dir = "out/compare"
methods = "grpo,ds-grpo,grpo-nostd,ds-grpo-reward,entropy-bonus,entropy-penalty"  # names: METHOD_ARGS below
pairs = "ds-grpo:grpo,ds-grpo-reward:grpo-nostd,ds-grpo:entropy-bonus"  # paired differences a - b
seeds = 5  # RL seeds per method (prompt order and sampling)
max_steps = 150  # RL steps of every run (train.py defaults: 16 prompts x G = 16 per step)
method_steps = ""  # "name:steps,..." where a method gets another budget (DGG: half GRPO's rollouts, say)
eval_n = 256  # samples per test problem
eval_problems = 500  # test problems
alphas = "0.3,1.0,3.0"  # sweep: DS-GRPO gamma_p ...
betas = "0.0,0.3,1.0"  # ... x gamma_n (empty: no sweep, train.py's alpha/beta)
bonus_coefs = "0.003,0.01,0.03"  # sweep: entropy bonus c (also used for the penalty); empty: train.py's
sweep_eval_n = 64  # samples per validation problem in the sweep
sweep_problems = 200  # validation problems (train.py's val_problems)
jobs = 2  # train.py processes at once
threads = 1  # torch threads per process
warmstart_steps = 4000  # more than train.py's 1500: pass@1 0.09 and 3.45 distinct answers at n = 64 (README)
ckpt_every = 25  # steps between checkpoints of each run (what a killed run resumes from)
train_args = ""  # extra --key=value for every train.py run, space-separated (e.g. another regime)
boot = 2000  # bootstrap replicates
quick = False  # smoke test: 6 steps, 2 seeds, n = 8 on 8 problems, a 1 x 2 sweep
configure(globals(), sys.argv[1:])
if quick:  # the smoke test's sizes, then the command line again: what it gives wins
    seeds, max_steps, eval_n, eval_problems, warmstart_steps, ckpt_every = 2, 6, 8, 8, 30, 2
    alphas, betas, bonus_coefs, sweep_eval_n, sweep_problems, boot = "1.0", "0.0,0.3", "0.01", 8, 8, 200
    configure(globals(), sys.argv[1:])
# -----------------------------------------------------------------------------
METHOD_ARGS = {  # what each method name runs; any other name is a train.py algo with its defaults
    "grpo": ["--algo=grpo"],
    "grpo-nostd": ["--algo=grpo", "--scale_rewards=none"],
    "ds-grpo": ["--algo=ds-grpo", "--ds_form=seq"],
    "ds-grpo-reward": ["--algo=ds-grpo", "--ds_form=reward", "--scale_rewards=none"],  # the authors' final code
    "grpo-k4": ["--algo=grpo", "--ppo_epochs=4"],  # every rollout batch used for 4 optimizer passes, no gate
    "grpo-dgg": ["--algo=grpo", "--reuse_max=4"],  # DGG: up to 4 passes, those after the first gated (gate.py)
}
METHODS, PAIRS = methods.split(","), [p.split(":") for p in pairs.split(",") if p]
ALPHAS, BETAS = ([float(x) for x in alphas.split(",")], [float(x) for x in betas.split(",")]) if alphas and betas \
    else ([], [])
COEFS = [float(x) for x in bonus_coefs.split(",")] if bonus_coefs else []
STEPS = {m: int(n) for m, n in (p.split(":") for p in method_steps.split(",") if p)}
if "dasd" in METHODS and "--warmstart_hint_frac=" not in train_args:  # one base for all, and DASD's needs hints
    raise SystemExit("--methods has dasd: add --train_args=--warmstart_hint_frac=0.5, so that every method starts "
                     "from the hinted warm start that DASD's teacher needs")
unknown = [m for m in METHODS + [x for p in PAIRS for x in p] + list(STEPS) if m not in METHOD_ARGS and m not in ALGOS]
if unknown or any(len(p) != 2 or p[0] not in METHODS or p[1] not in METHODS for p in PAIRS):  # before hours of runs
    raise SystemExit(f"--methods, --pairs and --method_steps take names of {sorted(METHOD_ARGS)} or train.py algos "
                     f"{list(ALGOS)}, and pairs a:b of the given methods; got methods={methods!r} pairs={pairs!r}"
                     + (f" (unknown: {sorted(set(unknown))})" if unknown else ""))
KS = [k for k in (1, 16, 64, 256) if k <= eval_n]
common = ["--init_from=scratch", f"--max_steps={max_steps}", f"--warmstart_steps={warmstart_steps}",
          f"--val_problems={sweep_problems}",
          f"--eval_interval={max_steps}", f"--ckpt_interval={ckpt_every}", f"--log_interval={max(max_steps // 5, 1)}",
          "--eval_at_start=False", *(["--n_problems=500", "--prompts_per_step=4", "--group_size=4"] if quick else []),
          *train_args.split()]
test_eval = [f"--final_eval_n={eval_n}", f"--eval_problems={eval_problems}"]
val_eval = ["--eval_split=val", f"--final_eval_n={sweep_eval_n}", f"--eval_problems={sweep_problems}", "--seed=1"]


SWEEP_DS = {f"sweep_ds_a{a}_b{b}": {"alpha": a, "beta": b} for a in ALPHAS for b in BETAS}  # run: its setting
SWEEP_BONUS = {f"sweep_bonus_c{c}": {"entropy_coef": c} for c in COEFS}


def sweep_runs():
    if not (SWEEP_DS or SWEEP_BONUS):
        return {}
    todo = {"sweep_grpo": ["--algo=grpo", *val_eval]}
    todo.update({n: [*METHOD_ARGS["ds-grpo"], f"--alpha={s['alpha']}", f"--beta={s['beta']}", *val_eval]
                 for n, s in SWEEP_DS.items()})
    todo.update({n: ["--algo=entropy-bonus", f"--entropy_coef={s['entropy_coef']}", *val_eval]
                 for n, s in SWEEP_BONUS.items()})
    return todo


def final_runs(chosen):
    todo = {}
    for s in range(1, seeds + 1):  # seed-major: a comparison stopped early has every method at the same seeds
        for m in METHODS:
            extra = METHOD_ARGS.get(m, [f"--algo={m}"])
            if m.startswith("ds-grpo") and "alpha" in chosen:
                extra = extra + [f"--alpha={chosen['alpha']}", f"--beta={chosen['beta']}"]
            if m.startswith("entropy-") and "entropy_coef" in chosen:
                extra = extra + [f"--entropy_coef={chosen['entropy_coef']}"]
            steps = [f"--max_steps={STEPS[m]}", f"--eval_interval={STEPS[m]}"] if m in STEPS else []
            todo[f"{m}_s{s}"] = [*extra, f"--seed={s}", *test_eval, *steps]
    return todo


# ----------------------------------------------------------------------------- running
def finished(name, n):
    """Whether run `name` has its final evaluation with n samples per problem. One with another n is set aside
    (final_eval_n<old>.json) and counts as unfinished: resumed from its final checkpoint, it only evaluates
    again, so raising eval_n on a finished comparison costs evaluations, not training."""
    path = os.path.join(out_dir, name, "final_eval.json")
    if not os.path.exists(path):
        return False
    old = read_json(path)["n"]
    if old != n:
        os.replace(path, os.path.join(out_dir, name, f"final_eval_n{old}.json"))
    return old == n


def run_jobs(todo, t0, n):
    """Runs {name: train.py args}, `jobs` at once: skips runs finished with n samples per problem, resumes
    runs with a checkpoint."""
    todo = [(name, a) for name, a in todo.items() if not finished(name, n)]
    base = os.path.join(out_dir, "base")  # the warm start train.py cached there (its name says if hinted)
    warm = next((d for d in sorted(os.listdir(base)) if d.startswith("warmstart_")), None) if todo else None
    running, failed = [], []
    while todo or running:
        while todo and len(running) < jobs:
            name, extra = todo.pop(0)
            run_dir = os.path.join(out_dir, name)
            if warm and not os.path.exists(os.path.join(run_dir, warm)):
                shutil.copytree(os.path.join(base, warm), os.path.join(run_dir, warm))
            os.makedirs(run_dir, exist_ok=True)  # (from the shipped base there is no warm start copied in to make it)
            resume = ["--init_from=resume"] if os.path.exists(os.path.join(run_dir, "ckpt")) else []
            cmd = [sys.executable, "train.py", f"--out_dir={run_dir}", *common, *extra, *resume]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            p = subprocess.Popen(cmd, stdout=open(os.path.join(run_dir, "train.log"), "a"),
                                 stderr=subprocess.STDOUT, env=env)
            print(f"[{time.time() - t0:6.0f}s] {'resume' if resume else 'start'} {name}: {' '.join(cmd[2:])}",
                  flush=True)
            running.append((name, p))
        time.sleep(1)
        for name, p in [r for r in running if r[1].poll() is not None]:
            running.remove((name, p))
            print(f"[{time.time() - t0:6.0f}s] done  {name} (exit {p.returncode})", flush=True)
            if p.returncode:
                failed.append(name)
    if failed:
        raise SystemExit(f"runs failed: {failed}; see {out_dir}/<run>/train.log (re-run to resume)")


def read_json(path):
    """A run's final_eval.json; a damaged one (a kill while it was written) is one line saying what to do."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise SystemExit(f"{path} is damaged ({e.msg}, line {e.lineno}): delete it and run compare.py again, which "
                         f"evaluates that run again from its final checkpoint")


def load_run(name):
    res = read_json(os.path.join(out_dir, name, "final_eval.json"))
    records = read_log(os.path.join(out_dir, name, "metrics.jsonl"))
    steps = [r for r in records if "step" in r]
    seconds = sum(r["time_rollout"] + r["time_reward"] + r["time_train"] for r in steps) + sum(
        r["eval_time"] for r in records if "eval_step" in r)  # the run's own time, whatever else ran
    return {"n": res["n"], "correct": res["correct"], "distinct": res["distinct"], "entropy": res["entropy"],
            "seconds": seconds, "curves": {k: [r.get(k, 1.0 if k == "passes" else 0.0) for r in steps]  # (runs before DGG: 1 pass)
                                           for k in ("accuracy", "entropy", "groups_mixed", "groups_all_wrong",
                                                     "passes")}
            | {"seconds": np.cumsum([r["time_rollout"] + r["time_reward"] + r["time_train"] for r in steps])}}


def choose(t0):
    """Runs the sweep on the validation split and returns the settings it picks (before any final run)."""
    runs = sweep_runs()
    run_jobs(runs, t0, sweep_eval_n)
    score = {}
    for name in runs:
        r = load_run(name)
        curve = stats.pass_at_k_matrix(r["n"], r["correct"]).mean(0)
        score[name] = {"pass@1": curve[0], f"pass@{r['n']}": curve[-1], "score": (curve[0] + curve[-1]) / 2}
    chosen = {}
    for grid in (SWEEP_DS, SWEEP_BONUS):  # the best validation score of each grid
        if grid:
            chosen.update(grid[max(grid, key=lambda n: score[n]["score"])])
    return chosen, score


# ----------------------------------------------------------------------------- results
def summarise(chosen):
    rows = {"warm start": [load_run("base")]}
    rows.update({m: [load_run(f"{m}_s{s}") for s in range(1, seeds + 1)] for m in METHODS})
    names = list(rows)
    curves = {m: np.stack([stats.pass_at_k_matrix(r["n"], r["correct"]) for r in rs]) for m, rs in rows.items()}
    metrics = {f"pass@{k}": [curves[m][:, :, k - 1] for m in names] for k in KS}  # (S, N) per method
    metrics["distinct"] = [np.array([r["distinct"] for r in rows[m]], dtype=float) for m in names]
    out = {m: {"seeds": len(rows[m]), "entropy": float(np.mean([r["entropy"] for r in rows[m]]))} for m in names}
    diffs = {f"{a} - {b}": {} for a, b in PAIRS}
    for key, values in metrics.items():
        means, reps = stats.summary(values, boot)
        for m, (mean, lo, hi) in zip(names, means):
            out[m][key] = {"mean": mean, "low": lo, "high": hi}
        for a, b in PAIRS:
            i, j = names.index(a), names.index(b)
            diffs[f"{a} - {b}"][key] = stats.paired_difference(reps, i, j, means[i][0] - means[j][0])
    if "grpo" in names:  # rollout batches, and the run's own seconds, to reach GRPO's final training accuracy
        w = min([10] + [len(r["curves"]["accuracy"]) for m in names[1:] for r in rows[m]])  # trailing mean over
        #   10 steps (one step's accuracy is 16 prompts' worth), fewer in the smoke test
        trail = {m: [np.convolve(r["curves"]["accuracy"], np.ones(w) / w, "valid") for r in rows[m]] for m in names[1:]}
        target = float(np.mean([t[-1] for t in trail["grpo"]]))
        for m in names[1:]:
            hit = [next((i for i, v in enumerate(t) if v >= target), None) for t in trail[m]]
            out[m]["to_grpo_final_acc"] = {"target": target, "steps": [None if i is None else i + w for i in hit],
                                           "seconds": [None if i is None else float(r["curves"]["seconds"][i + w - 1])
                                                       for i, r in zip(hit, rows[m])],
                                           "passes_per_batch": float(np.mean([np.mean(r["curves"]["passes"])
                                                                              for r in rows[m]]))}
    mean_curve = {m: curves[m].mean((0, 1)) for m in names}
    ref = "grpo" if "grpo" in names else "warm start"
    for m in names:  # k': the samples a method needs to match GRPO's pass@64 / pass@256
        out[m]["k_prime"] = {k: next((int(i) + 1 for i, v in enumerate(mean_curve[m])
                                      if v >= mean_curve[ref][k - 1] - 1e-12), None) for k in KS if k >= 64}
    ks = sorted({int(k) for k in np.unique(np.geomspace(1, eval_n, 24).round())})
    bands = {m: [stats.interval(stats.bootstrap_means([curves[m][:, :, k - 1]], 300)[:, 0]) for k in ks] for m in names}
    return rows, out, diffs, mean_curve, ks, bands


def fmt(s, d=3):
    return f"{s['mean']:.{d}f} [{s['low']:.{d}f}, {s['high']:.{d}f}]"


def tables(out, diffs, chosen, score):
    keys = [f"pass@{k}" for k in KS] + ["distinct"]
    kp = list(next(iter(out.values()))["k_prime"])
    lines = ["| method | " + " | ".join(keys) + " | token entropy | " + " | ".join(f"k′ to GRPO pass@{k}" for k in kp)
             + " |", "|" + "---|" * (len(keys) + 2 + len(kp))]
    for m, s in out.items():
        lines.append(f"| {m} (×{s['seeds']}) | " + " | ".join(fmt(s[k], 2 if k == "distinct" else 3) for k in keys)
                     + f" | {s['entropy']:.3f} | " + " | ".join(str(v) if v else f">{eval_n}" for v in s["k_prime"].values())
                     + " |")
    lines += ["", "| paired difference (same problems) | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for pair, d in diffs.items():
        lines.append(f"| {pair} | " + " | ".join(
            f"{'**' if d[k]['excludes_zero'] else ''}{d[k]['diff']:+.3f} [{d[k]['low']:+.3f}, {d[k]['high']:+.3f}]"
            f"{'**' if d[k]['excludes_zero'] else ''}" for k in keys) + " |")
    if any("to_grpo_final_acc" in s for s in out.values()):
        lines += ["", "| method | optimizer passes per rollout batch | rollout batches to GRPO's final training accuracy "
                  "(trailing mean of 10 steps), per seed | seconds of its own, per seed |", "|---|---|---|---|"]
        lines += [f"| {m} | {s['to_grpo_final_acc']['passes_per_batch']:.2f} | "
                  + ", ".join(str(v) if v is not None else "not reached" for v in s["to_grpo_final_acc"]["steps"]) + " | "
                  + ", ".join(f"{v:.0f}" if v is not None else "–" for v in s["to_grpo_final_acc"]["seconds"]) + " |"
                  for m, s in out.items() if "to_grpo_final_acc" in s]
    lines += ["", f"chosen on the validation split: {chosen}", "",
              f"| sweep run (seed 1, validation) | pass@1 | pass@{sweep_eval_n} | score |", "|---|---|---|---|"]
    lines += [f"| {n} | " + " | ".join(f"{v:.3f}" for v in s.values()) + " |" for n, s in score.items()]
    return "\n".join(lines)


def plots(rows, mean_curve, ks, bands, score):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for m, curve in mean_curve.items():
        line, = ax.plot(range(1, len(curve) + 1), curve, label=m, lw=2 if m in ("grpo", "ds-grpo") else 1.2,
                        ls="--" if m == "warm start" else "-", color="k" if m == "warm start" else None)
        ax.fill_between(ks, [b[0] for b in bands[m]], [b[1] for b in bands[m]], color=line.get_color(), alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="k (samples per problem)", ylabel="pass@k",
           title="held-out problems: mean, 95% bootstrap band (problems × seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "passk.png"), dpi=120)

    keys = [("accuracy", "rollout accuracy"), ("entropy", "mean token entropy"), ("groups_mixed", "mixed groups")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for m, rs in rows.items():
        if m == "warm start":
            continue
        for ax, (key, label) in zip(axes, keys):
            curve = np.mean([r["curves"][key] for r in rs], 0)  # mean over seeds
            w = max(1, len(curve) // 15)  # running mean: a step is only 32 prompts
            ax.plot(np.convolve(curve, np.ones(w) / w, "valid"), label=m, lw=2 if m in ("grpo", "ds-grpo") else 1.2)
            ax.set(xlabel="RL step", ylabel=label, title=f"{label} (mean over seeds, running mean)")
            ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "training.png"), dpi=120)

    if ALPHAS:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        for ax, key in zip(axes, ["pass@1", f"pass@{sweep_eval_n}", "score"]):
            grid = np.array([[score[f"sweep_ds_a{a}_b{b}"][key] for b in BETAS] for a in ALPHAS])
            im = ax.imshow(grid, cmap="viridis", origin="lower")
            for (i, j), v in np.ndenumerate(grid):
                ax.text(j, i, f"{v:.3f}", ha="center", va="center", color="w", fontsize=9)
            ax.set(xticks=range(len(BETAS)), xticklabels=BETAS, yticks=range(len(ALPHAS)), yticklabels=ALPHAS,
                   xlabel="β (penalty on incorrect)", ylabel="α (bonus on correct)",
                   title=f"DS-GRPO {key} (GRPO: {score['sweep_grpo'][key]:.3f})")
            fig.colorbar(im, ax=ax, shrink=0.8)
        fig.suptitle("validation split, seed 1", fontsize=10)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "sweep.png"), dpi=120)
    plt.close("all")


if __name__ == "__main__":
    t0 = time.time()
    os.makedirs(os.path.join(out_dir, "base"), exist_ok=True)
    if not finished("base", eval_n):  # the warm start and its evaluation
        cmd = [sys.executable, "train.py", f"--out_dir={out_dir}/base", *common, *test_eval, "--max_steps=0"]
        print(" ".join(cmd[1:]), flush=True)
        with open(os.path.join(out_dir, "base", "train.log"), "w") as log:
            if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode:
                raise SystemExit(f"warm start failed: see {out_dir}/base/train.log")
    chosen, score = choose(t0)
    print(f"chosen on the validation split: {chosen}", flush=True)
    run_jobs(final_runs(chosen), t0, eval_n)
    rows, out, diffs, mean_curve, ks, bands = summarise(chosen)
    md = tables(out, diffs, chosen, score)
    seconds = sum(load_run(n)["seconds"] for n in [*sweep_runs(), *final_runs(chosen), "base"])
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"config": {k: globals()[k] for k in ("methods", "pairs", "seeds", "max_steps", "eval_n",
                                                         "eval_problems", "alphas", "betas", "bonus_coefs",
                                                         "sweep_eval_n", "sweep_problems", "train_args", "quick")},
                   "train_args": common, "chosen": chosen, "sweep": score, "summary": out, "paired": diffs,
                   "run_seconds_summed": seconds, "wall_time_s": time.time() - t0,
                   "runs": {m: [{"correct": r["correct"], "distinct": r["distinct"]} for r in rs]
                            for m, rs in rows.items()}}, f)
    plots(rows, mean_curve, ks, bands, score)
    print(md)
    print(f"wall time of this invocation {time.time() - t0:.0f}s (a resumed comparison counts only what it ran); "
          f"RL steps + evaluations summed over all runs {seconds:.0f}s\nwrote {out_dir}/results.json, results.md, "
          f"passk.png, training.png" + (", sweep.png" if ALPHAS else ""))
