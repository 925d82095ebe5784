"""frontier.py: PLAN.md's validation grid, each method's frontier, and the report on finished runs."""
import json
import os
import subprocess
import sys

_argv, sys.argv = sys.argv, sys.argv[:1]  # frontier.py reads its --key=value settings at import, as train.py does
import frontier  # noqa: E402
import pytest  # noqa: E402
sys.argv = _argv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_grid_is_plan_md_s():
    points = frontier.val_points()
    by_method = {m: [p for p in points if frontier.method(p) == m] for m in frontier.COLORS}
    assert {m: len(v) for m, v in by_method.items()} == {"grpo": 1, "grpo-dyn": 1, "ds": 12, "bonus": 5, "penalty": 3}
    assert {"ds_a1_b0", "ds_a1_b0.3", "ds_a1_b1", "ds_a30_b9", "ds_a30_b30"} <= set(points)  # beta 0, 0.3 a, a
    assert points["ds_a3_b0.9"] == ["--algo=ds-grpo", "--alpha=3.0", "--beta=0.9"]
    runs = frontier.runs()
    assert points["grpo-dyn"] == ["--algo=grpo", "--dynamic_sampling=True"]  # PLAN.md's dynamic-sampling pair
    assert len(runs) == 66 and "--seed=3" in runs["grpo_s3"] and "--max_steps=200" in runs["grpo_s3"]


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
    (tmp_path / "val" / "grpo_s3").mkdir()  # started, not finished: left out, counted as to do
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
    assert "Validation runs finished: 3 of 66 (63 to do)" in open(tmp_path / "val.md").read()
    assert (tmp_path / "validation.png").stat().st_size > 10_000


def val_table(points):
    return {p: {"seeds": 3, "pass@1": {"mean": a}, "pass@64": {"mean": b}} for p, (a, b) in points.items()}


def test_choose_follows_plan_md_by_hand():
    table = val_table({
        "grpo": (0.185, 0.86), "grpo-dyn": (0.19, 0.85),  # ahead on pass@1 only: dynamic sampling stays off
        "bonus_c0.01": (0.180, 0.90), "bonus_c0.03": (0.176, 0.92), "bonus_c0.1": (0.13, 0.95),
        "ds_a1_b0": (0.195, 0.89), "ds_a3_b0": (0.177, 0.93), "ds_a10_b10": (0.17, 0.96), "ds_a3_b3": (0.195, 0.70),
        "penalty_c0.01": (0.188, 0.83), "penalty_c0.03": (0.192, 0.71)})
    choice = frontier.choose(table)
    # 1. bonus*: pass@1 >= 0.185 - 0.01 = 0.175 keeps c 0.01 and 0.03; the higher pass@64 is c 0.03 (0.176, 0.92)
    # 2. DS-match: pass@1 >= 0.176 keeps a1_b0, a3_b0, a3_b3; the highest pass@64 is a3_b0 (a10_b10 is too inaccurate)
    # 3. DS-acc: pass@1 0.195 twice, the tie broken by pass@64: a1_b0.  4. penalty*: the highest pass@1, c 0.03
    assert {k: choice[k] for k in frontier.ROLES} == {"grpo": "grpo", "bonus": "bonus_c0.03", "ds-match": "ds_a3_b0",
                                                      "ds-acc": "ds_a1_b0", "penalty": "penalty_c0.03"}
    assert choice["dynamic_sampling"] is False and choice["fallbacks"] == {"bonus": False, "ds-match": False}
    table["grpo-dyn"] = {"seeds": 3, "pass@1": {"mean": 0.19}, "pass@64": {"mean": 0.87}}  # ahead on both
    table["bonus_c0.01"]["pass@1"]["mean"] = table["bonus_c0.03"]["pass@1"]["mean"] = 0.1  # none near GRPO
    choice = frontier.choose(table)
    assert choice["dynamic_sampling"] is True and choice["bonus"] == "bonus_c0.1" and choice["fallbacks"]["bonus"]


def test_the_final_stage_needs_a_complete_validation(tmp_path):
    json.dump({"grpo": {"seeds": 2}}, open(tmp_path / "val.json", "w"))
    p = subprocess.run([sys.executable, "frontier.py", "--stage=choose", f"--out_dir={tmp_path}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "validation is not complete (64 runs to do)" in p.stderr
    p = subprocess.run([sys.executable, "frontier.py", "--stage=final", f"--out_dir={tmp_path}", "--dry_run=True"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "run --stage=choose first" in p.stderr


def write_choice(root, dynamic=False):
    choice = {"grpo": "grpo", "bonus": "bonus_c0.03", "ds-match": "ds_a3_b0", "ds-acc": "ds_a1_b0",
              "penalty": "penalty_c0.03", "dynamic_sampling": dynamic}
    json.dump(choice, open(os.path.join(root, "choice.json"), "w"))


def test_the_final_runs(tmp_path, monkeypatch):
    write_choice(tmp_path, dynamic=True)
    monkeypatch.setattr(frontier, "out_dir", str(tmp_path))
    monkeypatch.setattr(frontier, "stage", "final")
    runs = frontier.runs()
    assert len(runs) == 2 + 5 * 2 * 10  # each base's evaluation, then 5 roles x 2 bases x seeds 11..20
    assert list(runs)[:4] == ["base_b0", "base_b1", "grpo_b0_s11", "bonus_b0_s11"]  # seed-major
    args = runs["ds-match_b1_s20"]
    assert args[:4] == ["--algo=ds-grpo", "--alpha=3.0", "--beta=0.0", "--dynamic_sampling=True"]
    assert {"--base_seed=1", "--seed=20", "--final_eval_n=128", "--eval_problems=500", "--eval_split=test"} <= set(args)
    assert runs["base_b1"][-1] == "--max_steps=0"  # the last value of a key wins in configure()


def test_final_report_on_runs_computed_by_hand(tmp_path):
    # 500 problems are not needed: 4 problems, n = 128. DS-match solves every problem with 64 of 128 samples, in
    # 4 distinct answers of 16 each; bonus* solves them with 32 of 128 in one answer, on every seed and base.
    write_choice(tmp_path)
    for role, correct, counts in (("ds-match", 64, [16] * 4), ("bonus", 32, [32])):
        for b in (0, 1):
            for s in (11, 12, 13):
                run_dir = tmp_path / "final" / f"{role}_b{b}_s{s}"
                run_dir.mkdir(parents=True)
                json.dump({"n": 128, "correct": [correct] * 4, "distinct": [len(counts)] * 4,
                           "answer_counts": [counts] * 4}, open(run_dir / "final_eval.json", "w"))
    p = subprocess.run([sys.executable, "frontier.py", "--stage=final_report", f"--out_dir={tmp_path}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = {r["endpoint"]: r for r in json.load(open(tmp_path / "final.json"))}
    assert rows["pass@1"]["diff"] == pytest.approx(0.5 - 0.25)  # 64/128 - 32/128
    assert rows["pass@128"]["diff"] == 0.0 and rows["distinct"]["diff"] == 3.0
    # matched: 32 correct samples each; DS keeps 32 of its 64 over 4 answers of 16: each is missed with chance
    # C(48, 32)/C(64, 32), about 1e-5, so 4 (1 - that) against bonus*'s 1
    assert rows["distinct at matched correct"]["diff"] == pytest.approx(3.0, abs=1e-3)
    assert rows["pass@1"]["p"] == 0.0 and rows["pass@1"]["p_holm"] == 0.0 and "p_holm" not in rows["distinct"]
    assert rows["pass@1"]["seeds"] == {"0": 3, "1": 3}
    assert "Final runs finished: 12 of 100" in open(tmp_path / "final.md").read()


def test_choose_asks_for_the_bonus_grid_to_extend_past_its_edge(tmp_path):
    # every point at 3 seeds; the smallest bonus c is bonus*: PLAN.md extends the grid (x 3) before any choice
    table = val_table({p: (0.18, 0.85) for p in frontier.val_points()})
    table["bonus_c0.003"] = {"seeds": 3, "pass@1": {"mean": 0.18}, "pass@64": {"mean": 0.95}}
    json.dump(table, open(tmp_path / "val.json", "w"))
    p = subprocess.run([sys.executable, "frontier.py", "--stage=choose", f"--out_dir={tmp_path}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "add c = 0.001 to BONUS" in p.stderr and not (tmp_path / "choice.json").exists()
    table["bonus_c0.01"]["pass@64"]["mean"] = 0.96  # an inner best: the choice is written
    json.dump(table, open(tmp_path / "val.json", "w"))
    p = subprocess.run([sys.executable, "frontier.py", "--stage=choose", f"--out_dir={tmp_path}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and json.load(open(tmp_path / "choice.json"))["bonus"] == "bonus_c0.01"
