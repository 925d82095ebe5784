"""End-to-end smoke runs of train.py on a tiny budget (the real default run is in the README)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--warmstart_steps=30", "--max_steps=2", "--prompts_per_step=2", "--group_size=3",
        "--n_problems=300", "--eval_problems=3", "--eval_n=2", "--final_eval_n=4", "--max_new_tokens=12",
        "--eval_interval=1", "--ckpt_interval=1"]


def run(*args, check=True):
    p = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"train.py {' '.join(args)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return p


def records(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("algo", ["grpo", "ds-grpo"])
def test_train_runs_checkpoints_and_resumes(tmp_path, algo):
    out = str(tmp_path / "run")
    run(f"--out_dir={out}", f"--algo={algo}", *TINY)
    steps = [r for r in records(out) if "step" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for key in ("reward", "accuracy", "entropy", "response_len", "ds_abs", "time_rollout", "time_train"):
        assert all(key in r for r in steps)
    if algo == "grpo":
        assert all(r["ds_abs"] == 0 for r in steps)
    else:  # the DS term is never exactly zero: responses have log-prob < 0
        assert all(r["ds_abs"] > 0 for r in steps)
    final = json.load(open(os.path.join(out, "final_eval.json")))
    assert set(final["pass@k"]) == {"1", "2", "4"} and final["n"] == 4
    assert os.path.exists(os.path.join(out, "ckpt", "model.safetensors"))
    assert not os.path.exists(os.path.join(out, "ckpt.tmp"))
    # a killed run continues where it stopped: what it logged after its last checkpoint (here a step 3
    # record written just before the "kill") is dropped, and resuming to step 3 appends it once
    with open(os.path.join(out, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": 3, "reward": -1.0}) + "\n")
    # only what changes is given again: the run's own settings (algo, sizes, ...) come from the checkpoint
    run(f"--out_dir={out}", "--init_from=resume", "--max_steps=3")
    steps = [r for r in records(out) if "step" in r]
    assert [r["step"] for r in steps] == [1, 2, 3] and steps[-1]["reward"] >= 0
    assert (steps[-1]["ds_abs"] > 0) == (algo == "ds-grpo")  # the saved algo, not the default


def test_fresh_run_starts_a_fresh_log_and_never_overwrites_a_run(tmp_path):
    out = str(tmp_path / "run")
    os.makedirs(out)
    with open(os.path.join(out, "metrics.jsonl"), "w") as f:  # left by an attempt that died before any checkpoint
        f.write(json.dumps({"step": 1, "reward": -1.0, "time_rollout": 99.0}) + "\n")
    p = run(f"--out_dir={out}", *TINY)
    recs = records(out)
    assert [r["step"] for r in recs if "step" in r] == [1, 2] and all(r["reward"] >= 0 for r in recs if "step" in r)
    assert [r["eval_step"] for r in recs if "eval_step" in r] == [0, 1, 2]  # start (final n), step 1, final
    for key in ("groups_all_correct", "groups_all_wrong", "groups_mixed"):  # fractions of the step's groups
        assert all(0 <= r[key] <= 1 for r in recs if "step" in r)
    assert all(abs(r["groups_all_correct"] + r["groups_all_wrong"] + r["groups_mixed"] - 1) < 1e-6
               for r in recs if "step" in r)
    final = json.load(open(os.path.join(out, "final_eval.json")))
    assert final["start"]["eval_step"] == 0 and final["start"]["n"] == final["n"]  # the side-by-side row
    assert "starting policy" in p.stdout and "after 2 steps" in p.stdout
    # a second fresh run in the same out_dir would overwrite the first: refused, and nothing is touched
    before = open(os.path.join(out, "metrics.jsonl")).read()
    p = run(f"--out_dir={out}", *TINY, check=False)
    assert p.returncode != 0 and "--init_from=resume" in p.stderr.strip().splitlines()[-1]
    assert open(os.path.join(out, "metrics.jsonl")).read() == before


def test_seed_alone_decides_the_samples(tmp_path):
    # the first run builds the warm start, the second finds it cached: the same seed gives the same run
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    run(f"--out_dir={a}", *TINY, "--eval_at_start=False")
    shutil.copytree(os.path.join(a, "warmstart_countdown"), os.path.join(b, "warmstart_countdown"))
    run(f"--out_dir={b}", *TINY, "--eval_at_start=False")
    strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith(("time", "eval_time"))} for r in rs]
    assert strip(records(a)) == strip(records(b))


@pytest.mark.parametrize("algo", ["dr-grpo", "entropy-bonus", "entropy-penalty", "20-entropy", "stapo", "ict"])
def test_train_runs_every_other_algo(tmp_path, algo):
    # one short run each (no resume); ict's warm-up is 1 step so step 2 takes the sparse path
    out = str(tmp_path / "run")
    run(f"--out_dir={out}", f"--algo={algo}", "--ict_warmup_steps=1", *TINY)
    steps = [r for r in records(out) if "step" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for key in ("kept_frac", "entropy_correct", "entropy_incorrect", "ds_correct", "ds_incorrect"):
        assert all(key in r for r in steps)
    kept = [r["kept_frac"] for r in steps]
    if algo == "20-entropy":  # about the top 20% of the batch's tokens (more only on ties)
        assert all(0 < k < .5 for k in kept)
    elif algo == "ict":  # step 1 is the dense warm-up, step 2 keeps ~10% of each response
        assert kept[0] == 1 and 0 < kept[1] < 1
    elif algo == "stapo":  # silences only rare spurious tokens, often none
        assert all(0 < k <= 1 for k in kept)
    else:
        assert kept == [1, 1]
    assert os.path.exists(os.path.join(out, "final_eval.json"))


def test_train_runs_under_bf16_autocast(tmp_path):
    # the GPU path (float32 weights, bfloat16 autocast for rollouts, log-probs and loss) on the CPU:
    # the rollout's KV cache must take the states autocast hands it (float32 keys, bfloat16 values)
    out = str(tmp_path / "run")
    run(f"--out_dir={out}", "--dtype=bfloat16", *TINY)
    steps = [r for r in records(out) if "step" in r]
    assert [r["step"] for r in steps] == [1, 2] and all(r["loss"] == r["loss"] for r in steps)
    assert os.path.exists(os.path.join(out, "final_eval.json"))


@pytest.mark.parametrize("arg, message", [
    ("--no_such_key=1", "unknown config key 'no_such_key'"),
    ("--max_steps=ten", "max_steps must be int"),
    ("--lr=fast", "lr must be float"),
    ("--algo=ppo", "algo must be one of"),
    ("--init_from=./no/such/model", "does not exist"),
    ("nonexistent_config.py", "cannot read config file"),
])
def test_bad_config_is_a_one_line_error(tmp_path, arg, message):
    p = run(f"--out_dir={tmp_path}", arg, check=False)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert message in last and "Traceback" not in p.stderr
