"""
One run's training curves and its pass@k evaluations in one PNG, read from the run's metrics.jsonl:
reward and accuracy, token entropy, response length, group/token fractions, clipping and
KL(pi_old || pi_theta) per step, and the pass@k curve of every evaluation.

  python plot.py out/                 # writes out/curves.png
  python plot.py out/grpo grpo.png    # any run directory, any output path
  python plot.py out/final_eval.json out/grpo/final_eval.json passk.png   # final pass@k curves side by side

With final_eval.json files instead, one figure of their pass@k curves, the first file's starting policy too.
"""
import json
import os
import sys

from checkpoint import read_log

# (title, the step records' keys drawn in it, the evaluation records' keys drawn as markers)
PANELS = [
    ("reward and accuracy", ["reward", "accuracy"], ["accuracy"]),
    ("token entropy", ["entropy", "entropy_correct", "entropy_incorrect"], ["entropy"]),
    ("response length (tokens)", ["response_len"], []),
    ("fractions: groups with A = 0, truncated, kept tokens", ["zero_adv_groups", "truncated", "kept_frac"], []),
    ("clipped tokens, KL(pi_old || pi_theta)", ["clip_low", "clip_high", "kl_old"], []),
]


def read_metrics(out_dir):
    """(step records, evaluation records) of a train.py run, in the order they were logged."""
    path = os.path.join(out_dir, "metrics.jsonl")
    if not os.path.exists(path):
        raise SystemExit(f"no metrics.jsonl in {out_dir!r}: give the out_dir of a train.py run")
    records = read_log(path)  # a last line cut short by a kill is left out, with a note
    return [r for r in records if "step" in r], [r for r in records if "eval_step" in r]


def series(records, key, step_key="step"):
    """(steps, values) of `key` over the records that have it (older runs lack the newer metrics)."""
    points = [(r[step_key], r[key]) for r in records if key in r]
    return [s for s, _ in points], [v for _, v in points]


def plot(out_dir, path=None):
    """Draws the run in out_dir and writes the PNG (default <out_dir>/curves.png); returns its path."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    steps, evals = read_metrics(out_dir)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (title, keys, eval_keys) in zip(axes.flat, PANELS):
        for key in keys:
            x, y = series(steps, key)
            if x:
                ax.plot(x, y, label=key)
        for key in eval_keys:
            x, y = series(evals, key, "eval_step")
            if x:
                ax.plot(x, y, "ko", ms=4, label=f"{key} (held-out eval)")
        ax.set(title=title, xlabel="step")
        if ax.lines:
            ax.legend(fontsize=8)
    ax = axes.flat[-1]
    for i, r in enumerate(evals):  # one curve per evaluation, dark to light over training
        ks = sorted(r["pass@k"], key=int)
        ax.plot([int(k) for k in ks], [r["pass@k"][k] for k in ks], "o-", ms=3,
                color=plt.get_cmap("viridis")(i / max(len(evals) - 1, 1)), label=f"step {r['eval_step']} (n={r['n']})")
    ax.set(title="pass@k of each evaluation", xlabel="k", ylim=(0, 1))
    ax.set_xscale("log", base=2)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.suptitle(out_dir)
    fig.tight_layout()
    path = path or os.path.join(out_dir, "curves.png")
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:  # a read-only or missing directory
        raise SystemExit(f"cannot write {path!r} ({e.strerror}): give a writable path as the second argument")
    finally:
        plt.close(fig)
    return path


def passk(eval_paths, path):
    """pass@k curves of train.py's final_eval.json files in one PNG, with the first one's starting policy, each
    labelled with its algo, n and distinct correct answers per problem."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = []
    for p in eval_paths:
        try:
            with open(p) as f:
                runs.append(json.load(f))
        except (OSError, ValueError) as e:
            raise SystemExit(f"cannot read {p!r} ({getattr(e, 'strerror', None) or e}): give train.py's final_eval.json")
    curves = [("starting policy", runs[0]["start"])] if runs[0].get("start") else []
    curves += [(f"{r['algo']}, {r['config']['max_steps']} steps", r) for r in runs]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for label, r in curves:
        ks = sorted(r["pass@k"], key=int)
        distinct = r.get("distinct_correct")
        ax.plot([int(k) for k in ks], [r["pass@k"][k] for k in ks], "o-", ms=4,
                label=f"{label} (n={r['n']}" + (f", {distinct:.2f} distinct correct)" if distinct else ")"))
    ax.set(xlabel="k", ylabel="pass@k", ylim=(0, 1), title=f"{runs[0].get('problems', '?')} held-out problems")
    ax.set_xscale("log", base=2)
    ax.grid(alpha=.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise SystemExit(f"cannot write {path!r} ({e.strerror}): give a writable path as the last argument")
    finally:
        plt.close(fig)
    return path


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0].endswith(".json"):
        if len(args) < 2 or not args[-1].endswith(".png"):
            raise SystemExit("usage: python plot.py <final_eval.json> [<final_eval.json> ...] <png path>")
        print(f"wrote {passk(args[:-1], args[-1])}")
    else:
        if len(args) not in (1, 2):
            raise SystemExit("usage: python plot.py <out_dir> [<png path>]")
        print(f"wrote {plot(*args)}")
