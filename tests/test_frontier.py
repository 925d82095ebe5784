"""frontier.py: PLAN.md's validation grid, each method's frontier, and the report on finished runs."""
import json
import os
import subprocess
import sys

_argv, sys.argv = sys.argv, sys.argv[:1]  # frontier.py reads its --key=value settings at import, as train.py does
import frontier  # noqa: E402
sys.argv = _argv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_grid_is_plan_md_s():
    points = frontier.val_points()
    by_method = {m: [p for p in points if frontier.method(p) == m] for m in ("grpo", "ds", "bonus", "penalty")}
    assert {m: len(v) for m, v in by_method.items()} == {"grpo": 1, "ds": 12, "bonus": 5, "penalty": 3}
    assert {"ds_a1_b0", "ds_a1_b0.3", "ds_a1_b1", "ds_a30_b9", "ds_a30_b30"} <= set(points)  # beta = 0, 0.3 alpha, alpha
    assert points["ds_a3_b0.9"] == ["--algo=ds-grpo", "--alpha=3.0", "--beta=0.9"]
    runs = frontier.runs()
    assert len(runs) == 63 and "--seed=3" in runs["grpo_s3"] and "--max_steps=200" in runs["grpo_s3"]


def test_pareto_by_hand():
    # b dominates a (higher on both); c is higher on pass@1 only, d on pass@64 only; e ties c exactly
    points = {"a": (0.10, 0.80), "b": (0.15, 0.85), "c": (0.20, 0.70), "d": (0.05, 0.95), "e": (0.20, 0.70)}
    assert frontier.pareto(points) == ["d", "b", "c", "e"]  # in order of pass@1; equal points do not dominate
    assert frontier.pareto({"x": (0.1, 0.9)}) == ["x"]
    assert frontier.pareto({"x": (0.1, 0.9), "y": (0.1, 0.8)}) == ["x"]  # equal on one, higher on the other


def write_run(root, name, path):
    """A finished run directory: its evaluations (step, pass@1, pass@64) in metrics.jsonl, and final_eval.json."""
    run_dir = os.path.join(root, "val", name)
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        for step, p1, p64 in path:
            f.write(json.dumps({"eval_step": step, "pass@k": {"1": p1, "64": p64}}) + "\n")
    with open(os.path.join(run_dir, "final_eval.json"), "w") as f:
        json.dump({"pass@k": {"1": path[-1][1], "64": path[-1][2]}}, f)


def test_report_on_two_seeds_by_hand(tmp_path):
    write_run(tmp_path, "grpo_s1", [(0, 0.1, 0.8), (100, 0.15, 0.9), (200, 0.1, 0.9)])
    write_run(tmp_path, "grpo_s2", [(0, 0.1, 0.8), (100, 0.15, 0.8), (200, 0.2, 0.7)])
    write_run(tmp_path, "bonus_c0.01_s1", [(0, 0.1, 0.8), (100, 0.12, 0.9), (200, 0.14, 0.95)])
    p = subprocess.run([sys.executable, "frontier.py", "--stage=val_report", f"--out_dir={tmp_path}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    table = json.load(open(tmp_path / "val.json"))
    # pass@1 over seeds 0.1 and 0.2: mean 0.15, sd 0.1/sqrt(2), t(0.975, 1 df) = 12.706: half-width 12.706 * 0.05
    assert abs(table["grpo"]["pass@1"]["mean"] - 0.15) < 1e-12
    assert abs(table["grpo"]["pass@1"]["half_width"] - 12.7062 * 0.05) < 1e-3
    expected_path = [[0, 0.1, 0.8], [100, 0.15, 0.85], [200, 0.15, 0.8]]  # seed means at steps 0, 100, 200
    assert all(abs(a - b) < 1e-12 for got, want in zip(table["grpo"]["path"], expected_path) for a, b in zip(got, want))
    assert table["bonus_c0.01"]["seeds"] == 1 and table["bonus_c0.01"]["pass@64"]["half_width"] is None
    assert "Validation runs finished: 3 of 63 (60 to do)" in open(tmp_path / "val.md").read()
    assert (tmp_path / "validation.png").stat().st_size > 10_000
