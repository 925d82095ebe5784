"""
The frontier experiment of assets/frontier/PLAN.md (issue 27): DS-GRPO's (pass@1, pass@64) frontier against the
entropy bonus's, the entropy penalty's and GRPO's, from the shipped bases.

  python frontier.py --stage=val              # the validation grid of PLAN.md: 63 runs, resumable
  python frontier.py --stage=val --dry_run=True   # list the runs and their train.py arguments, run nothing

Every run is a plain `train.py` subprocess in its own out_dir under `out_dir`: a finished run (final_eval.json)
is skipped, a run with a checkpoint resumes, so a stopped stage continues where it stopped. Runs go seed-major
(every grid point at seed 1, then seed 2, ...), so a stage stopped early has a whole frontier at fewer seeds.
Each line of `out_dir/<stage>.log` gives a run's start, end and exit code with wall-clock times.
"""
import os
import subprocess
import sys
import time

from configurator import configure

# ----------------------------------------------------------------------------- config
out_dir = "out/frontier"
stage = "val"  # 'val': the validation grid (base seed 0, validation problems)
jobs = 1  # train.py processes at once (two at most on the 2-core CPU)
threads = 1  # torch threads per process
dry_run = False  # print the runs, start none
configure(globals(), sys.argv[1:])
# -----------------------------------------------------------------------------
ALPHAS = (1.0, 3.0, 10.0, 30.0)  # PLAN.md: alpha x beta in {0, 0.3 alpha, alpha}
BONUS = (0.003, 0.01, 0.03, 0.1, 0.3)  # entropy bonus c (extended past the best later, PLAN.md)
PENALTY = (0.003, 0.01, 0.03)
VAL_SEEDS = (1, 2, 3)
VAL_EVAL = ["--base_seed=0", "--eval_split=val", "--val_problems=200", "--eval_problems=200", "--eval_n=64",
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
    if stage != "val":
        raise SystemExit(f"stage must be 'val' (the final stage comes after the validation choice), got {stage!r}")
    return {f"{name}_s{s}": [*args, *VAL_EVAL, f"--seed={s}"] for s in VAL_SEEDS for name, args in val_points().items()}


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
    main()
