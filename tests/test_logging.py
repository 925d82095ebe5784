"""What a run logs, on one short train.py run: the per-step diagnostics (clip fractions, KL(pi_old ||
pi_theta), groups with zero advantage), the same records in wandb's offline run file (WANDB_MODE=offline:
nothing leaves the machine), and plot.py on the run."""
import glob
import json
import os
import struct
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wandb_history(run_file):
    """The history rows ({key: value}) of an offline run file. The file is a LevelDB-style log: a 7-byte
    header, then 32 KiB blocks of chunks, each a 7-byte header (crc32, length, type: 1 full, 2 first,
    3 middle, 4 last) and its bytes; a whole record is a wandb Record protobuf."""
    from wandb.proto import wandb_internal_pb2 as pb
    data = open(run_file, "rb").read()
    assert data[:4] == b":W&B"
    pos, chunk, rows = 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("logged") / "run")
    home = os.path.dirname(out)
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": home,
           "WANDB_CACHE_DIR": home, "WANDB_DATA_DIR": home}
    # two updates per batch with a large lr: the second one sees rho != 1, so the diagnostics are not all 0
    args = ["--init_from=tiny", "--max_steps=3", "--prompts_per_step=2", "--group_size=3", "--n_problems=300",
            "--eval_problems=3", "--eval_n=2", "--final_eval_n=4", "--max_new_tokens=12", "--eval_interval=2",
            "--ppo_epochs=2", "--lr=5e-3", "--beta=0.1", "--wandb_log=True", "--wandb_run_name=test-run", f"--out_dir={out}"]
    p = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def records(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_diagnostics_per_step(run_dir):
    steps = [r for r in records(run_dir) if "step" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for r in steps:
        assert 0 <= r["clip_low"] <= 1 and 0 <= r["clip_high"] <= 1 and 0 <= r["zero_adv_groups"] <= 1
        assert r["kl_old"] > 0  # the second update of each batch moved away from pi_old
        assert r["zero_adv_groups"] in (0, .5, 1)  # two groups per step


def test_wandb_offline_run_holds_the_metrics(run_dir):
    run_files = glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "run-*.wandb"))
    assert len(run_files) == 1
    rows = wandb_history(run_files[0])
    logged = {}  # step -> every key logged at that step (a step and its evaluation share one row)
    for row in rows:
        logged.setdefault(row["_step"], {}).update(row)
    assert sorted(logged) == [0, 1, 2, 3]
    for r in records(run_dir):
        if "step" in r:
            for key in ("reward", "accuracy", "entropy", "response_len", "clip_low", "kl_old", "zero_adv_groups"):
                assert logged[r["step"]][key] == r[key], (r["step"], key)
        else:  # evaluations under eval/, pass@k flattened; the per-problem lists stay in metrics.jsonl
            got = logged[r["eval_step"]]
            assert got["eval/accuracy"] == r["accuracy"] and got["eval/entropy"] == r["entropy"]
            assert {k: got[f"eval/pass@{k}"] for k in r["pass@k"]} == r["pass@k"]
            assert "eval/correct" not in got


def test_plot_the_run(run_dir):
    p = subprocess.run([sys.executable, "plot.py", run_dir], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert os.path.getsize(os.path.join(run_dir, "curves.png")) > 10_000
