"""Smoke runs of compare.py --quick, bench.py and gpu_check.py (its CPU dry run) on the tiny shape: they run end to end and write what
they promise. Neither asserts a result of the paper or a speed (those are measurements, in the README)."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
FROM_BASE = ["--train_args=--init_from=tiny", "--betas=0.0", "--seeds=1"]  # the shipped base (no warm start to build), a
# 1 x 1 sweep, one seed: every step of the comparison, at the least cost


def run(*args):
    p = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=900, env=ENV)
    assert p.returncode == 0, f"{args} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p.stdout


def killed_mid_run(out):
    """Starts compare.py --quick and SIGKILLs it (and its train.py children) as soon as one run has a
    checkpoint but no final evaluation; returns that run's directory."""
    args = [sys.executable, "compare.py", "--quick", f"--out_dir={out}", "--methods=grpo,ds-grpo",
            "--pairs=ds-grpo:grpo", *FROM_BASE]
    p = subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and p.poll() is None:
        half = [os.path.dirname(os.path.dirname(c)) for c in glob.glob(f"{out}/*/ckpt/state.pt")
                if not os.path.exists(os.path.join(os.path.dirname(os.path.dirname(c)), "final_eval.json"))]
        if half:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            return half[0]
        time.sleep(0.02)
    raise AssertionError("compare.py ended before any run could be killed mid-way")


def test_compare_quick_resumes_a_killed_run(tmp_path):
    out = tmp_path / "cmp"
    half = killed_mid_run(str(out))
    stdout = run("compare.py", "--quick", f"--out_dir={out}", "--methods=grpo,ds-grpo", "--pairs=ds-grpo:grpo", *FROM_BASE)
    name = os.path.basename(half)
    assert f"resume {name}" in stdout and f"start {name}" not in stdout  # continued from its checkpoint
    with open(os.path.join(half, "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f if '"step"' in line]
    assert steps == [1, 2, 3, 4, 5, 6]  # one record per step: nothing of the killed attempt twice
    res = json.load(open(out / "results.json"))
    assert set(res["summary"]) == {"warm start", "grpo", "ds-grpo"}
    assert set(res["chosen"]) == {"alpha", "beta", "entropy_coef"} and res["chosen"]["alpha"] == 1.0
    assert set(res["sweep"]) == {"sweep_grpo", "sweep_ds_a1.0_b0.0", "sweep_bonus_c0.01"}
    for s in res["summary"].values():
        lo, mean, hi = s["pass@1"]["low"], s["pass@1"]["mean"], s["pass@1"]["high"]
        assert 0 <= lo <= mean <= hi <= 1
    d = res["paired"]["ds-grpo - grpo"]["pass@1"]
    assert d["low"] <= d["high"] and d["excludes_zero"] == (d["low"] > 0 or d["high"] < 0)
    assert len(res["runs"]["grpo"]) == 1 and len(res["runs"]["grpo"][0]["correct"]) == 8  # 1 seed x 8 problems
    for png in ("passk.png", "training.png", "sweep.png"):
        assert (out / png).stat().st_size > 1000
    assert "| grpo (×1) |" in (out / "results.md").read_text()
    # a second call finds every run finished and only re-summarises
    stdout = run("compare.py", "--quick", f"--out_dir={out}", "--methods=grpo,ds-grpo", "--pairs=ds-grpo:grpo", *FROM_BASE)
    assert "] start " not in stdout and "] resume " not in stdout
    # a larger n evaluates every final run again from its last checkpoint (the warm start too), trains nothing
    stdout = run("compare.py", "--quick", f"--out_dir={out}", "--methods=grpo,ds-grpo", "--pairs=ds-grpo:grpo", *FROM_BASE,
                 "--eval_n=16")
    assert "] start " not in stdout and stdout.count("] resume ") == 2  # 2 methods x 1 seed; the sweep is kept
    for name in ("base", "grpo_s1", "ds-grpo_s1"):
        assert json.load(open(out / name / "final_eval.json"))["n"] == 16
        assert json.load(open(out / name / "final_eval_n8.json"))["n"] == 8  # the old evaluation, kept
    with open(out / "grpo_s1" / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records if "step" in r] == [1, 2, 3, 4, 5, 6]  # not trained again
    assert [r["n"] for r in records if "eval_step" in r] == [8, 16]
    res = json.load(open(out / "results.json"))
    assert len(res["runs"]["grpo"][0]["correct"]) == 8 and "pass@16" in res["summary"]["grpo"]


def test_bench_tiny(tmp_path):
    stdout = run("bench.py", "--prompts=2", "--group_size=2", "--new_tokens=4", "--iters=1",
                 f"--out={tmp_path}/bench.json")
    res = json.load(open(tmp_path / "bench.json"))
    for key in ("ours_tok_s", "hf_tok_s", "rollout_speedup", "hf_static_tok_s", "rollout_speedup_static", "train_tok_s", "grpo_step_s", "ours_warmup_s",
                "skip_old_logp_speedup", "sort_trim_speedup", "update_speedup", "decode_check_speedup"):
        assert res[key] > 0
    assert "rollout speed-up" in stdout


def test_bench_trl_tiny(tmp_path):  # TRL is not a requirement: runs where it is installed (the GPU bench)
    pytest.importorskip("trl")
    run("bench.py", "--prompts=2", "--group_size=2", "--new_tokens=4", "--iters=1", "--micro_batch_size=2",
        "--baseline=False", "--ablate=False", "--trl=True", f"--out={tmp_path}/bench.json")
    res = json.load(open(tmp_path / "bench.json"))
    assert res["trl_step_s"] > 0 and res["trl_speedup"] > 0


def test_compare_dasd_needs_the_hinted_base():  # else DASD would start from another warm start than the rest
    p = subprocess.run([sys.executable, "compare.py", "--methods=grpo,dasd"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env=ENV)
    assert p.returncode == 1 and "--warmstart_hint_frac=0.5" in p.stderr


def test_gpu_check_dry_run_writes_every_part(tmp_path):
    # the prepared GPU command, on the CPU at tiny shapes (issue 26): every part runs, and the report names each
    # with its figures; on this machine the CUDA tests are collected and skipped
    stdout = run("gpu_check.py", "--dry_run=True", f"--out_dir={tmp_path}")
    res = json.load(open(tmp_path / "gpu_check.json"))
    parts = res["parts"]
    assert list(parts) == ["cuda_tests", "bench_tiny", "lm_head", "config_countdown_tiny_lowacc", "tiny_default"]
    assert all(p["ok"] for p in parts.values()), {k: p["tail"] for k, p in parts.items() if not p["ok"]}
    assert "skipped" in parts["cuda_tests"]["tail"]
    assert parts["bench_tiny"]["figures"]["rollout_speedup"] > 0
    lm = parts["lm_head"]["figures"]
    assert lm["float32"]["ratio_max_abs_dev"] < 1e-4  # float32 on a CPU: the two passes agree (no bf16 here)
    assert parts["tiny_default"]["figures"]["wall_s"] > 0
    config = parts["config_countdown_tiny_lowacc"]["figures"]  # one update at the config's settings: 2 x 128 rows
    assert config["rows"] == 256 and config["tokens_per_row"] == 24 + 32 and config["train_tok_s"] > 0
    assert "| lm_head | yes |" in open(tmp_path / "gpu_check.md").read() and "gpu_check.md" in stdout
