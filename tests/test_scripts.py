"""Smoke runs of compare.py --quick and bench.py on the tiny shape: they run end to end and write what
they promise. Neither asserts a result of the paper or a speed (those are measurements, in the README)."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    p = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, f"{args} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p.stdout


def test_compare_quick(tmp_path):
    out = tmp_path / "cmp"
    stdout = run("compare.py", "--quick", f"--out_dir={out}", "--methods=grpo,ds-grpo")
    res = json.load(open(out / "results.json"))
    assert set(res["summary"]) == {"warm start", "grpo", "ds-grpo"}
    for s in res["summary"].values():
        assert len(s["pass@k_mean"]) == 8  # k = 1..n, n = 8 in --quick
        assert all(0 <= v <= 1 for v in s["pass@k_mean"])
        assert s["pass@k_mean"] == sorted(s["pass@k_mean"])  # pass@k never decreases in k
    assert set(res["sweep"]) == {"1.0,0.1", "1.0,0.3"}
    for png in ("passk.png", "training.png", "sweep.png"):
        assert (out / png).stat().st_size > 1000
    assert "| grpo (×1) |" in stdout and "| warm start (×1) |" in (out / "results.md").read_text()
    # a second call finds every run finished and only re-summarises
    assert "s] start " not in run("compare.py", "--quick", f"--out_dir={out}", "--methods=grpo,ds-grpo")


def test_bench_tiny(tmp_path):
    stdout = run("bench.py", "--prompts=2", "--group_size=2", "--new_tokens=4", "--iters=1",
                 f"--out={tmp_path}/bench.json")
    res = json.load(open(tmp_path / "bench.json"))
    for key in ("ours_tok_s", "hf_tok_s", "rollout_speedup", "train_tok_s", "grpo_step_s", "ours_warmup_s"):
        assert res[key] > 0
    assert "rollout speed-up" in stdout
