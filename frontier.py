"""
The frontier experiment of assets/frontier/PLAN.md (issue 27): DS-GRPO's (pass@1, pass@64) frontier against the
entropy bonus's, the entropy penalty's and GRPO's, from the shipped bases.

  python frontier.py --stage=val              # the validation grid of PLAN.md: 63 runs, resumable
  python frontier.py --stage=val --dry_run=True   # list the runs and their train.py arguments, run nothing
  python frontier.py --stage=val_report       # the finished validation runs: val.md, val.json, validation.png

Every run is a plain `train.py` subprocess in its own out_dir under `out_dir`: a finished run (final_eval.json)
is skipped, a run with a checkpoint resumes, so a stopped stage continues where it stopped. Runs go seed-major
(every grid point at seed 1, then seed 2, ...), so a stage stopped early has a whole frontier at fewer seeds.
Each line of `out_dir/<stage>.log` gives a run's start, end and exit code with wall-clock times.
"""
import json
import math
import os
import subprocess
import sys
import time

from configurator import configure

# ----------------------------------------------------------------------------- config
out_dir = "out/frontier"
stage = "val"  # 'val': the validation grid (base seed 0, validation problems); 'val_report': its table so far
jobs = 1  # train.py processes at once (two at most on the 2-core CPU)
threads = 1  # torch threads per process
dry_run = False  # print the runs, start none
configure(globals(), sys.argv[1:])
# -----------------------------------------------------------------------------
ALPHAS = (1.0, 3.0, 10.0, 30.0)  # PLAN.md: alpha x beta in {0, 0.3 alpha, alpha}
BONUS = (0.003, 0.01, 0.03, 0.1, 0.3)  # entropy bonus c (extended past the best later, PLAN.md)
PENALTY = (0.003, 0.01, 0.03)
VAL_SEEDS = (1, 2, 3)
VAL_EVAL = ["--max_steps=200", "--base_seed=0", "--eval_split=val", "--val_problems=200", "--eval_problems=200", "--eval_n=64",
            "--final_eval_n=64", "--eval_interval=100", "--ckpt_interval=25", "--log_interval=50"]


def val_points():
    """{point name: train.py arguments} of PLAN.md's validation grid."""
    points = {"grpo": ["--algo=grpo"]}
    for a in ALPHAS:
        for b in (0.0, round(0.3 * a, 6), a):
            points[f"ds_a{a:g}_b{b:g}"] = ["--algo=ds-grpo", f"--alpha={a}", f"--beta={b}"]
    points.update({f"bonus_c{c:g}": ["--algo=entropy-bonus", f"--entropy_coef={c}"] for c in BONUS})
    points.update({f"penalty_c{c:g}": ["--algo=entropy-penalty", f"--entropy_coef={c}"] for c in PENALTY})
    return points


def runs():
    if stage not in ("val", "val_report"):
        raise SystemExit(f"stage must be 'val' or 'val_report' (the final stage comes after the validation choice), "
                         f"got {stage!r}")
    return {f"{name}_s{s}": [*args, *VAL_EVAL, f"--seed={s}"] for s in VAL_SEEDS for name, args in val_points().items()}


def method(point):
    """The method a grid point belongs to: 'grpo', 'ds', 'bonus' or 'penalty'."""
    return point.split("_")[0]


def pareto(points):
    """The names of the points {name: (pass@1, pass@64)} that no other point dominates (at least as high on both,
    higher on one): a method's frontier, drawn through them in order of pass@1."""
    dominated = lambda a, b: b[0] >= a[0] and b[1] >= a[1] and b != a  # b dominates a
    return sorted((n for n, a in points.items() if not any(dominated(a, b) for b in points.values())),
                  key=lambda n: points[n][0])


COLORS = {"grpo": "black", "ds": "tab:blue", "bonus": "tab:orange", "penalty": "tab:green"}


def figure(table, path):
    """validation.png: each point's seed-mean (pass@1, pass@64) with its 95% seed-level intervals, each method's
    frontier, and the sharpening paths (seed means at steps 0, 100, 200) as thin lines from the base."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, ax_path) = plt.subplots(1, 2, figsize=(13, 5.5))
    for name, e in table.items():
        c = COLORS[method(name)]
        err = [e[k]["half_width"] or 0.0 for k in ("pass@1", "pass@64")]
        ax.errorbar(e["pass@1"]["mean"], e["pass@64"]["mean"], xerr=err[0], yerr=err[1], fmt="o", color=c,
                    ms=4, lw=0.8, capsize=2)
        ax.annotate(name.split("_", 1)[-1] if "_" in name else name, (e["pass@1"]["mean"], e["pass@64"]["mean"]),
                    fontsize=6, xytext=(3, 3), textcoords="offset points")
        xs, ys = [p[1] for p in e["path"]], [p[2] for p in e["path"]]
        ax_path.plot(xs, ys, "-o", color=c, lw=0.8, ms=2, alpha=0.7)
    for m, c in COLORS.items():
        points = {n: (e["pass@1"]["mean"], e["pass@64"]["mean"]) for n, e in table.items() if method(n) == m}
        front = pareto(points)
        if front:
            ax.plot([points[n][0] for n in front], [points[n][1] for n in front], "-", color=c, lw=1.5,
                    label=f"{m} ({len(points)} points)")
    base = next(iter(table.values()))["path"][0]
    for a in (ax, ax_path):
        a.plot(base[1], base[2], "k*", ms=10, label="base (step 0)" if a is ax else None)
        a.set_xlabel("pass@1")
        a.set_ylabel("pass@64")
        a.grid(alpha=0.3)
    ax.set_title("validation: seed means, 95% seed-level t intervals, each method's frontier")
    ax_path.set_title("sharpening paths: steps 0, 100, 200 (seed means)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def report():
    """Each grid point's finished seeds: mean pass@1 and pass@64 at the end, with a seed-level t-interval (95%) where
    there are 2 seeds or more, and the sharpening path (pass@1, pass@64 at steps 0, 100, 200, seed means). Written
    to out_dir/val.md and val.json; unfinished runs are left out and counted."""
    import stats
    from checkpoint import read_log
    rows, missing = {}, 0
    for name in runs():
        run_dir = os.path.join(out_dir, "val", name)
        if not os.path.exists(os.path.join(run_dir, "final_eval.json")):
            missing += 1
            continue
        evals = {r["eval_step"]: r for r in read_log(os.path.join(run_dir, "metrics.jsonl")) if "eval_step" in r}
        path = [(s, evals[s]["pass@k"]["1"], evals[s]["pass@k"]["64"]) for s in sorted(evals)]
        rows.setdefault(name.rsplit("_s", 1)[0], []).append(path)
    table = {}
    for point, paths in rows.items():
        ends = [(p[-1][1], p[-1][2]) for p in paths]
        entry = {"seeds": len(paths), "path": [[sum(p[i][k] for p in paths) / len(paths) for k in range(3)]
                                               for i in range(min(len(p) for p in paths))]}
        for j, key in enumerate(("pass@1", "pass@64")):
            v = [e[j] for e in ends]
            mean = sum(v) / len(v)
            half = (stats.t_quantile(.975, len(v) - 1) * (sum((x - mean) ** 2 for x in v) / (len(v) - 1)) ** .5
                    / math.sqrt(len(v))) if len(v) > 1 else None
            entry[key] = {"mean": mean, "half_width": half}
        table[point] = entry
    fmt = lambda e: f"{e['mean']:.3f}" + (f" ± {e['half_width']:.3f}" if e["half_width"] is not None else "")
    lines = [f"Validation runs finished: {sum(e['seeds'] for e in table.values())} of {len(runs())} "
             f"({missing} to do). Mean over seeds, ± the 95% seed-level t half-width (2+ seeds).", "",
             "| point | seeds | pass@1 | pass@64 | path: (pass@1, pass@64) at steps 0 / 100 / 200 |", "|---|---|---|---|---|"]
    lines += [f"| {p} | {e['seeds']} | {fmt(e['pass@1'])} | {fmt(e['pass@64'])} | "
              + " / ".join(f"({a:.3f}, {b:.3f})" for _, a, b in e["path"]) + " |" for p, e in table.items()]
    with open(os.path.join(out_dir, "val.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out_dir, "val.json"), "w") as f:
        json.dump(table, f, indent=2)
    if table:
        figure(table, os.path.join(out_dir, "validation.png"))
    print("\n".join(lines))


def main():
    todo = [(name, a) for name, a in runs().items()
            if not os.path.exists(os.path.join(out_dir, stage, name, "final_eval.json"))]
    print(f"{len(runs())} runs in stage {stage!r}, {len(todo)} to do")
    if dry_run:
        for name, a in todo:
            print(name, " ".join(a))
        return
    os.makedirs(os.path.join(out_dir, stage), exist_ok=True)
    journal = open(os.path.join(out_dir, f"{stage}.log"), "a")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    running, failed = [], []
    while todo or running:
        while todo and len(running) < jobs:
            name, args = todo.pop(0)
            run_dir = os.path.join(out_dir, stage, name)
            resume = ["--init_from=resume"] if os.path.exists(os.path.join(run_dir, "ckpt")) else []
            cmd = [sys.executable, "train.py", f"--out_dir={run_dir}", *args, *resume]
            os.makedirs(run_dir, exist_ok=True)
            p = subprocess.Popen(cmd, stdout=open(os.path.join(run_dir, "train.log"), "a"), stderr=subprocess.STDOUT,
                                 env=env)
            running.append((name, p, time.time()))
            print(f"{time.strftime('%F %T')} start {name}: {' '.join(cmd[1:])}", file=journal, flush=True)
        time.sleep(2)
        for name, p, t in [r for r in running if r[1].poll() is not None]:
            running.remove((name, p, t))
            print(f"{time.strftime('%F %T')} done {name} exit {p.returncode} in {time.time() - t:.0f}s", file=journal,
                  flush=True)
            if p.returncode:
                failed.append(name)
    if failed:
        raise SystemExit(f"runs failed: {failed}; see {out_dir}/{stage}/<run>/train.log (run again to resume)")


if __name__ == "__main__":
    report() if stage == "val_report" else main()
