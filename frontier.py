"""
The frontier experiment of assets/frontier/PLAN.md (issue 27): DS-GRPO's (pass@1, pass@64) frontier against the
entropy bonus's, the entropy penalty's and GRPO's, from the shipped bases.

  python frontier.py --stage=val              # the validation grid of PLAN.md: 66 runs, resumable
  python frontier.py --stage=val --dry_run=True   # list the runs and their train.py arguments, run nothing
  python frontier.py --stage=val_report       # the finished validation runs: val.md, val.json, validation.png
  python frontier.py --stage=choose           # PLAN.md's rules on val.json: the final points, choice.json
  python frontier.py --stage=final            # the final runs at those points: 2 bases x 10 seeds, resumable
  python frontier.py --stage=final_report     # the Holm-adjusted family of PLAN.md: final.md, final.json

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
stage = "val"  # 'val', 'val_report', 'choose', 'final', 'final_report' (the docstring's order)
jobs = 1  # train.py processes at once (two at most on the 2-core CPU)
threads = 1  # torch threads per process
dry_run = False  # print the runs, start none
configure(globals(), sys.argv[1:])
# -----------------------------------------------------------------------------
ALPHAS = (1.0, 3.0, 10.0, 30.0)  # PLAN.md: alpha x beta in {0, 0.3 alpha, alpha}
BONUS = (0.003, 0.01, 0.03, 0.1, 0.3)  # entropy bonus c (extended past the best later, PLAN.md)
PENALTY = (0.003, 0.01, 0.03)
VAL_SEEDS = (1, 2, 3)
FINAL_SEEDS = range(11, 21)
BASES = (0, 1)
FINAL_EVAL = ["--max_steps=200", "--eval_split=test", "--eval_problems=500", "--eval_n=128", "--final_eval_n=128",
              "--eval_interval=200", "--eval_at_start=False", "--ckpt_interval=25", "--log_interval=50"]
ROLES = ("grpo", "bonus", "ds-match", "ds-acc", "penalty")  # PLAN's GRPO, bonus*, DS-match, DS-acc, penalty*
FAMILY = [("ds-match", "bonus"), ("ds-acc", "grpo"), ("bonus", "grpo"), ("penalty", "grpo")]  # x (pass@1, pass@64)
VAL_EVAL = ["--max_steps=200", "--base_seed=0", "--eval_split=val", "--val_problems=200", "--eval_problems=200",
            "--eval_n=64", "--final_eval_n=64", "--eval_interval=100", "--ckpt_interval=25", "--log_interval=50"]


def val_points():
    """{point name: train.py arguments} of PLAN.md's validation grid."""
    points = {"grpo": ["--algo=grpo"], "grpo-dyn": ["--algo=grpo", "--dynamic_sampling=True"]}  # PLAN: the pair
    for a in ALPHAS:
        for b in (0.0, round(0.3 * a, 6), a):
            points[f"ds_a{a:g}_b{b:g}"] = ["--algo=ds-grpo", f"--alpha={a}", f"--beta={b}"]
    points.update({f"bonus_c{c:g}": ["--algo=entropy-bonus", f"--entropy_coef={c}"] for c in BONUS})
    points.update({f"penalty_c{c:g}": ["--algo=entropy-penalty", f"--entropy_coef={c}"] for c in PENALTY})
    return points


def runs():
    """{run name: train.py arguments} of the stage: the validation grid, or the final runs at choice.json's points
    (each base's evaluation once, then seed-major: every role on both bases at seed 11, then 12, ...)."""
    if stage in ("val", "val_report"):
        return {f"{name}_s{s}": [*args, *VAL_EVAL, f"--seed={s}"]
                for s in VAL_SEEDS for name, args in val_points().items()}
    if stage not in ("final", "final_report"):
        raise SystemExit(f"stage must be one of val, val_report, choose, final, final_report; got {stage!r}")
    path = os.path.join(out_dir, "choice.json")
    if not os.path.exists(path):
        raise SystemExit(f"no {path}: run --stage=choose first (it needs every validation run)")
    with open(path) as f:
        choice = json.load(f)
    dynamic = ["--dynamic_sampling=True"] if choice["dynamic_sampling"] else []
    points = val_points()
    out = {f"base_b{b}": [*FINAL_EVAL, f"--base_seed={b}", "--seed=11", "--max_steps=0"] for b in BASES}
    for s in FINAL_SEEDS:
        for b in BASES:
            for role in ROLES:
                out[f"{role}_b{b}_s{s}"] = [*points[choice[role]], *dynamic, *FINAL_EVAL, f"--base_seed={b}",
                                            f"--seed={s}"]
    return out


def choose(table):
    """PLAN.md's mechanical choice of the final points from the validation table {point: {'pass@1': {'mean': ..},
    'pass@64': {'mean': ..}, 'seeds': ..}}. Tuples compare lexicographically: max over (pass@1, pass@64) is the
    highest pass@1, ties broken by pass@64."""
    m = {p: (e["pass@1"]["mean"], e["pass@64"]["mean"]) for p, e in table.items()}
    of = lambda kind: {p: v for p, v in m.items() if method(p) == kind}
    bonus, ds = of("bonus"), of("ds")
    near_grpo = [p for p in bonus if bonus[p][0] >= m["grpo"][0] - 0.01]  # 1. bonus*: pass@1 within 0.01 of GRPO's
    bonus_star = max(near_grpo, key=lambda p: bonus[p][::-1]) if near_grpo else max(bonus, key=bonus.get)
    as_accurate = [p for p in ds if ds[p][0] >= bonus[bonus_star][0]]  # 2. DS-match: at least bonus*'s pass@1
    ds_match = max(as_accurate, key=lambda p: ds[p][::-1]) if as_accurate else max(ds, key=ds.get)
    return {"grpo": "grpo", "bonus": bonus_star, "ds-match": ds_match,
            "ds-acc": max(ds, key=ds.get),  # 3. the highest pass@1
            "penalty": max(of("penalty"), key=m.get),  # 4. the highest pass@1
            "dynamic_sampling": "grpo-dyn" in m and all(d > g for d, g in zip(m["grpo-dyn"], m["grpo"])),
            "fallbacks": {"bonus": not near_grpo, "ds-match": not as_accurate}}  # a rule's 'if none qualifies'


def choose_stage():
    with open(os.path.join(out_dir, "val.json")) as f:
        table = json.load(f)
    short = {p: len(VAL_SEEDS) - table.get(p, {"seeds": 0})["seeds"] for p in val_points()}
    if any(short.values()):
        raise SystemExit(f"validation is not complete ({sum(short.values())} runs to do): finish --stage=val, then "
                         f"--stage=val_report, before choosing")
    choice = choose(table)
    edges = {f"bonus_c{BONUS[0]:g}": BONUS[0] / 3, f"bonus_c{BONUS[-1]:g}": BONUS[-1] * 3}
    if choice["bonus"] in edges:  # PLAN: the bonus's grid extends by x3 past its best until both neighbours are lower
        raise SystemExit(f"bonus* is {choice['bonus']}, the edge of the grid: add c = {edges[choice['bonus']]:g} to "
                         f"BONUS, run its seeds (--stage=val) and --stage=val_report, then choose")
    with open(os.path.join(out_dir, "choice.json"), "w") as f:
        json.dump(choice, f, indent=2)
    print(json.dumps(choice, indent=2))


def method(point):
    """The method a grid point belongs to: 'grpo', 'grpo-dyn' (with dynamic sampling), 'ds', 'bonus' or 'penalty'."""
    return point.split("_")[0]


def pareto(points):
    """The names of the points {name: (pass@1, pass@64)} that no other point dominates (at least as high on both,
    higher on one): a method's frontier, drawn through them in order of pass@1."""
    dominated = lambda a, b: b[0] >= a[0] and b[1] >= a[1] and b != a  # b dominates a
    return sorted((n for n, a in points.items() if not any(dominated(a, b) for b in points.values())),
                  key=lambda n: points[n][0])


COLORS = {"grpo": "black", "grpo-dyn": "gray", "ds": "tab:blue", "bonus": "tab:orange", "penalty": "tab:green"}


def figure(table, path):
    """validation.png: each point's seed-mean (pass@1, pass@64) with its 95% seed-level intervals, each method's
    frontier, and the sharpening paths (seed means at steps 0, 100, 200) as thin lines from the base."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, ax_path) = plt.subplots(1, 2, figsize=(13, 5.5))
    base = [sum(e["path"][0][k] for e in table.values()) / len(table) for k in range(3)]  # step 0, every run's mean
    collapsed = [n for n, e in table.items() if e["pass@1"]["mean"] < base[1] / 2]  # drawn, they would squash the rest
    table = {n: e for n, e in table.items() if n not in collapsed}
    for name, e in table.items():
        c = COLORS[method(name)]
        err = [e[k]["half_width"] or 0.0 for k in ("pass@1", "pass@64")]
        ax.errorbar(e["pass@1"]["mean"], e["pass@64"]["mean"], xerr=err[0], yerr=err[1], fmt="o", color=c,
                    ms=4, lw=0.8, capsize=2)
        ax.annotate(name.split("_", 1)[-1], (e["pass@1"]["mean"], e["pass@64"]["mean"]),  # 'a1_b0', 'c0.01', 'grpo'

                    fontsize=6, xytext=(3, 3), textcoords="offset points")
        xs, ys = [p[1] for p in e["path"]], [p[2] for p in e["path"]]
        ax_path.plot(xs, ys, "-o", color=c, lw=0.8, ms=2, alpha=0.7)
    for m, c in COLORS.items():
        points = {n: (e["pass@1"]["mean"], e["pass@64"]["mean"]) for n, e in table.items() if method(n) == m}
        front = pareto(points)
        if front:
            ax.plot([points[n][0] for n in front], [points[n][1] for n in front], "-", color=c, lw=1.5,
                    label=f"{m} ({len(points)} points)")
    if collapsed:
        ax.text(0.01, 0.01, "not drawn, collapsed (pass@1 < half the base's): " + ", ".join(collapsed),
                transform=ax.transAxes, fontsize=7)
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
             "| point | seeds | pass@1 | pass@64 | path: (pass@1, pass@64) at steps 0 / 100 / 200 |",
             "|---|---|---|---|---|"]
    lines += [f"| {p} | {e['seeds']} | {fmt(e['pass@1'])} | {fmt(e['pass@64'])} | "
              + " / ".join(f"({a:.3f}, {b:.3f})" for _, a, b in e["path"]) + " |" for p, e in table.items()]
    with open(os.path.join(out_dir, "val.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out_dir, "val.json"), "w") as f:
        json.dump(table, f, indent=2)
    if table:
        figure(table, os.path.join(out_dir, "validation.png"))
    print("\n".join(lines))


def final_scores():
    """{role: {base: {seed: per-problem scores}}} of the finished final runs: pass@1, pass@64 and pass@128
    (unbiased, from each problem's correct count of n), distinct correct answers, and the answers' counts."""
    import numpy as np
    import stats
    out = {}
    for role in ROLES:
        for b in BASES:
            for s in FINAL_SEEDS:
                path = os.path.join(out_dir, "final", f"{role}_b{b}_s{s}", "final_eval.json")
                if os.path.exists(path):
                    with open(path) as f:
                        r = json.load(f)
                    curves = stats.pass_at_k_matrix(r["n"], r["correct"])  # (N, n)
                    out.setdefault(role, {}).setdefault(b, {})[s] = {
                        "pass@1": curves[:, 0], "pass@64": curves[:, 63], "pass@128": curves[:, 127],
                        "distinct": np.array(r["distinct"], dtype=float), "answer_counts": r["answer_counts"]}
    return out


def final_report():
    """PLAN.md's family: the 8 paired differences, each with the hierarchical bootstrap's interval and p-value (bases,
    seeds within a base, problems shared by the pair), Holm-adjusted together, the seed-level t-interval beside it; then
    the secondary endpoints, unadjusted. Seeds enter a pair where both of its runs have finished."""
    import numpy as np
    import stats
    runs()  # refuses without choice.json
    scores = final_scores()
    rows = []
    for x, y in FAMILY:
        common = {b: sorted(set(scores.get(x, {}).get(b, {})) & set(scores.get(y, {}).get(b, {}))) for b in BASES}
        bases = [b for b in BASES if common[b]]
        if sum(len(common[b]) for b in bases) < 2:
            continue
        for key in ("pass@1", "pass@64", "pass@128", "distinct", "distinct at matched correct"):
            if key == "distinct at matched correct":  # each seed's pair of runs, the correct counts matched per problem
                pairs = {b: [stats.matched_distinct(scores[x][b][s]["answer_counts"], scores[y][b][s]["answer_counts"])
                             for s in common[b]] for b in bases}
                a = [np.stack([p[0] for p in pairs[b]]) for b in bases]
                c = [np.stack([p[1] for p in pairs[b]]) for b in bases]
            else:
                a = [np.stack([scores[x][b][s][key] for s in common[b]]) for b in bases]
                c = [np.stack([scores[y][b][s][key] for s in common[b]]) for b in bases]
            reps = stats.hierarchical_differences(a, c, B=2000, seed=0)
            diff, t_low, t_high = stats.seed_t_interval(a, c)
            rows.append({"pair": f"{x} - {y}", "endpoint": key, "family": key in ("pass@1", "pass@64"),
                         "diff": diff, "ci": stats.interval(reps), "p": stats.bootstrap_p(reps),
                         "ci_bonferroni": stats.interval(reps, 1 - 0.05 / (2 * len(FAMILY))), "t_ci": [t_low, t_high],
                         "seeds": {b: len(common[b]) for b in bases}})
    family = [r for r in rows if r["family"]]
    for r, adjusted in zip(family, stats.holm([r["p"] for r in family]) if family else []):
        r["p_holm"] = float(adjusted)
    f3 = lambda v: f"{v:+.3f}"
    lines = [f"Final runs finished: {sum(len(v) for r in scores.values() for v in r.values())} of "
             f"{len(ROLES) * len(BASES) * len(FINAL_SEEDS)}. Differences are means over bases of paired means; "
             "95% hierarchical bootstrap (bases, seeds, problems) and seed-level t intervals.", "",
             "| pair | endpoint | difference | 95% bootstrap | simultaneous (Bonferroni) | seed-level t | p | Holm p |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['pair']} | {r['endpoint']}{'' if r['family'] else ' (secondary)'} | {f3(r['diff'])} | "
                     f"[{f3(r['ci'][0])}, {f3(r['ci'][1])}] | "
                     f"[{f3(r['ci_bonferroni'][0])}, {f3(r['ci_bonferroni'][1])}]"
                     f" | [{f3(r['t_ci'][0])}, {f3(r['t_ci'][1])}] | {r['p']:.4f} | "
                     + (f"{r['p_holm']:.4f}" if "p_holm" in r else "unadjusted") + " |")
    with open(os.path.join(out_dir, "final.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out_dir, "final.json"), "w") as f:
        json.dump(rows, f, indent=2)
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
    {"val_report": report, "choose": choose_stage, "final_report": final_report}.get(stage, main)()
