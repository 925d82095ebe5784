"""Nothing lost, whatever happens: a kill at any instant of a checkpoint save, two runs into one out_dir, a resume
that asks for what it cannot honour, merge_lora.py pointed at an existing run, a full disk, and every damaged
file or bad input one readable line. Each case is a real run, a real file or the function a run calls."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

import checkpoint
import countdown
import math_task
import tasks
from configurator import configure
from model import char_tokenizer, load_policy, tiny_model
from test_hub_data import COUNTDOWN, REPOS, local_datasets_cache, write_repo  # noqa: F401 (the fixture)
from test_train import ROOT, TINY, records, run

SHORT = [*TINY, "--init_from=tiny", "--eval_interval=100", "--eval_at_start=False"]  # the shipped base: no warm start


def last_line(p):
    return p.stderr.strip().splitlines()[-1]


def one_line(p, message):
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert message in last_line(p), last_line(p)


# ============================================================================= checkpoints
@pytest.fixture
def small():
    torch.manual_seed(0)
    tok = char_tokenizer()
    return tiny_model(tok, n_layer=1, n_embd=16), tok


def test_a_leftover_ckpt_old_does_not_break_the_next_save(tmp_path, small):
    # a kill after save_checkpoint's second rename leaves ckpt (new) and ckpt.old (the one before): the next save
    # used to fail moving ckpt onto the non-empty ckpt.old (OSError: Directory not empty), losing every later step
    ckpt = str(tmp_path / "ckpt")
    checkpoint.save_checkpoint(ckpt, *small, {"step": 1})
    shutil.copytree(ckpt, ckpt + ".old")
    checkpoint.save_checkpoint(ckpt, *small, {"step": 2})
    assert torch.load(os.path.join(ckpt, "state.pt"))["step"] == 2 and not os.path.exists(ckpt + ".old")


def test_recover_puts_a_checkpoint_killed_between_the_renames_back(tmp_path, small):
    # killed after ckpt -> ckpt.old, before ckpt.tmp -> ckpt: the complete checkpoint is ckpt.old; ckpt.tmp is dropped
    ckpt = str(tmp_path / "ckpt")
    checkpoint.save_checkpoint(ckpt, *small, {"step": 1})
    os.replace(ckpt, ckpt + ".old")
    os.makedirs(ckpt + ".tmp")
    checkpoint.recover(ckpt)
    assert torch.load(os.path.join(ckpt, "state.pt"))["step"] == 1
    assert not os.path.exists(ckpt + ".old") and not os.path.exists(ckpt + ".tmp")


def test_a_full_disk_says_so_removes_its_partial_files_and_keeps_the_last_checkpoint(tmp_path, small, monkeypatch):
    ckpt = str(tmp_path / "ckpt")
    checkpoint.save_checkpoint(ckpt, *small, {"step": 1})

    def full(state, path):  # what torch.save raises when the disk fills mid-write, after a partial file
        open(path, "wb").write(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1234 vs 1200")
    monkeypatch.setattr(checkpoint.torch, "save", full)
    with pytest.raises(SystemExit, match=r"cannot write the checkpoint of step 2 .*a full disk\?.*is intact"):
        checkpoint.save_checkpoint(ckpt, *small, {"step": 2})
    monkeypatch.undo()
    assert not os.path.exists(ckpt + ".tmp")  # not left filling the disk
    assert torch.load(os.path.join(ckpt, "state.pt"))["step"] == 1


# A kill at each point of the second save (step 2): os._exit is as abrupt as SIGKILL (no cleanup, no finally)
KILL = """
import os, torch, checkpoint
point, saves = {point!r}, [0]
real_policy, real_replace = checkpoint.save_policy, os.replace
def save_policy(*a, **k):
    saves[0] += 1
    real_policy(*a, **k)
    if point == "after the weights" and saves[0] == 2: os._exit(137)
class Torch:
    def __getattr__(self, k): return getattr(torch, k)
    def save(self, *a, **k):
        torch.save(*a, **k)
        if point == "after the state" and saves[0] == 2: os._exit(137)
class Os:
    def __getattr__(self, k): return getattr(os, k)
    def replace(self, a, b):
        real_replace(a, b)
        first, second = str(a).endswith("ckpt"), str(a).endswith("ckpt.tmp")
        if saves[0] == 2 and ((point == "between the renames" and first) or (point == "after the renames" and second)):
            os._exit(137)
checkpoint.save_policy, checkpoint.torch, checkpoint.os = save_policy, Torch(), Os()
"""


def test_a_kill_anywhere_in_a_save_resumes_to_the_same_final_state(tmp_path):
    straight = tmp_path / "straight"
    run(f"--out_dir={straight}", *SHORT, "--max_steps=3")
    want = load_file(straight / "ckpt" / "model.safetensors")
    for point in ("after the weights", "after the state", "between the renames", "after the renames"):
        out = tmp_path / point.replace(" ", "_")
        p = run(f"--out_dir={out}", *SHORT, "--max_steps=3", check=False, patch=KILL.format(point=point))
        assert p.returncode == 137, (point, p.stderr[-1500:])
        run(f"--out_dir={out}", "--init_from=resume", "--max_steps=3")
        got = load_file(out / "ckpt" / "model.safetensors")
        assert all(torch.equal(got[k], want[k]) for k in want), point
        assert [r["step"] for r in records(out) if "step" in r] == [1, 2, 3], point
        assert not any(os.path.exists(out / d) for d in ("ckpt.old", "ckpt.tmp")), point


# ============================================================================= one run per out_dir
def test_a_second_run_into_a_live_out_dir_is_refused_and_a_killed_run_resumes(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "train.py", f"--out_dir={out}", *SHORT, "--max_steps=10000",
                              "--ckpt_interval=1"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not os.path.exists(out / "ckpt" / "state.pt") and time.time() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert first.poll() is None, "the first run ended early"
        for args in ([*SHORT], ["--init_from=resume"]):  # a fresh start and a resume: both would mix into its files
            one_line(run(f"--out_dir={out}", *args, check=False), f"in use by another train.py (pid {first.pid})")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    step = torch.load(out / "ckpt" / "state.pt", weights_only=False)["step"]
    run(f"--out_dir={out}", "--init_from=resume", f"--max_steps={step + 1}")  # the dead run's lock is gone with it
    assert json.load(open(out / "final_eval.json"))["algo"] == "ds-grpo"


# ============================================================================= resume
def test_resume_refuses_what_it_cannot_honour_and_accepts_what_is_safe(tmp_path):
    out = tmp_path / "run"
    run(f"--out_dir={out}", *SHORT, "--max_steps=1")
    p = run(f"--out_dir={out}", "--init_from=resume", "--max_steps=2", "--task=math", "--lora_rank=8", check=False)
    one_line(p, "a resumed run cannot change task ('countdown' -> math), lora_rank (0 -> 8)")
    one_line(run(f"--out_dir={out}", "--init_from=resume", "--cd_max_target=30", check=False), "cd_max_target (50 -> 30)")
    run(f"--out_dir={out}", "--init_from=resume", "--max_steps=2", "--log_interval=1", "--ckpt_interval=5",
        "--task=countdown")  # the same task again, and intervals: fine
    assert [r["step"] for r in records(out) if "step" in r] == [1, 2]


def test_a_partial_last_metrics_line_is_dropped_at_resume_with_a_note(tmp_path):
    out = tmp_path / "run"
    run(f"--out_dir={out}", *SHORT, "--max_steps=1")
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "loss": 0.1')  # a kill while writing step 2's record
    import plot
    assert [r["step"] for r in plot.read_metrics(str(out))[0]] == [1]
    p = run(f"--out_dir={out}", "--init_from=resume", "--max_steps=2")
    assert "its last line was cut short" in p.stdout + p.stderr
    assert [r["step"] for r in records(out) if "step" in r] == [1, 2]


# ============================================================================= merge_lora.py
def merge(*args):
    return subprocess.run([sys.executable, "merge_lora.py", *args], cwd=ROOT, capture_output=True, text=True)


def test_merge_lora_never_writes_over_a_run_or_a_file(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    run_ckpt = tmp_path / "run" / "ckpt"
    run_ckpt.mkdir(parents=True)
    (run_ckpt / "model.safetensors").write_bytes(b"another run's weights")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    for out in (run_ckpt, a_file):
        one_line(merge(f"--ckpt={adapter}", f"--out={out}"), "already exists: give a new directory")
    assert (run_ckpt / "model.safetensors").read_bytes() == b"another run's weights" and a_file.read_text() == "mine"
    one_line(merge(f"--ckpt={adapter}", "--out=/proc/merged"), "cannot write to --out='/proc/merged'")


# ============================================================================= damaged files
def test_config_file_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("lr = 1e-3\nmax_steps = = 3\n")
    with pytest.raises(SystemExit, match=re.escape(f"config file {bad}, line 2: invalid syntax")):
        configure({"lr": 1.0, "max_steps": 1}, [str(bad)])
    bad.write_text("lr = 1e-3\nmax_steps = 1 / 0\n")
    with pytest.raises(SystemExit, match=re.escape(f"config file {bad}, line 2: ZeroDivisionError: division by zero")):
        configure({"lr": 1.0, "max_steps": 1}, [str(bad)])


def test_truncated_weights_state_or_missing_tokenizer_are_one_line(tmp_path, small):
    ckpt = str(tmp_path / "ckpt")
    checkpoint.save_checkpoint(ckpt, *small, {"step": 1})
    for name in ("model.safetensors", "state.pt"):
        path = os.path.join(ckpt, name)
        data = open(path, "rb").read()
        open(path, "wb").write(data[:len(data) // 2])
    with pytest.raises(SystemExit, match=r"could not load .*ckpt.* a truncated or corrupt file\?"):
        load_policy(ckpt)
    with pytest.raises(SystemExit, match=r"cannot read .*state.pt .*the checkpoint is damaged"):
        checkpoint.load_state(ckpt)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        os.remove(os.path.join(ckpt, name))
    with pytest.raises(SystemExit, match=r"has no tokenizer files \(tokenizer.json, tokenizer_config.json\)"):
        load_policy(ckpt)


def test_a_damaged_final_eval_in_compare_is_one_line(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "final_eval.json").write_text('{"n": 8, "pass@k": {"1": 0.')
    p = subprocess.run([sys.executable, "compare.py", "--quick", f"--out_dir={tmp_path}", "--methods=grpo", "--pairs=",
                        "--alphas=", "--bonus_coefs="], cwd=ROOT, capture_output=True, text=True)
    one_line(p, "final_eval.json is damaged")


def test_compare_checks_its_method_names_before_any_run(tmp_path):
    p = subprocess.run([sys.executable, "compare.py", "--quick", f"--out_dir={tmp_path}", "--methods=grpo,foo"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    one_line(p, "(unknown: ['foo'])")
    assert not os.listdir(tmp_path)


# ============================================================================= data
def test_hub_sets_offline_say_how_to_make_them_available(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    for args in (["--dataset=hf"], ["--task=math", "--dataset=gsm8k", "--template=instruct"]):
        p = subprocess.run([sys.executable, "train.py", f"--out_dir={tmp_path / 'run'}", *args], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
        one_line(p, "Offline, a hub set must be in the datasets cache (load it once with the network)")


def test_empty_or_garbage_data_files_are_one_line(tmp_path):
    root = write_repo(tmp_path / "empty", None, {"test.jsonl": []})
    with pytest.raises(SystemExit, match="cannot load the data set|has no rows"):
        math_task.load_math("math500", path=root)
    configs, files, _ = REPOS["aime24"]
    root = write_repo(tmp_path / "garbage", configs, files)
    open(os.path.join(root, "data/train-00000-of-00001.parquet"), "wb").write(b"not a parquet file")
    with pytest.raises(SystemExit, match="cannot load the data set .*ArrowInvalid.*check its files"):
        math_task.load_math("aime24", path=root)
    pq.write_table(pa.Table.from_pylist([], schema=pa.schema([("problem", pa.string()), ("answer", pa.string())])),
                   os.path.join(root, "data/train-00000-of-00001.parquet"))  # an empty parquet file
    with pytest.raises(SystemExit, match="cannot load the data set .*check its files|has no rows"):
        math_task.load_math("aime24", path=root)


def test_rows_that_can_never_be_scored_are_refused_at_load(tmp_path, monkeypatch):
    huge = write_repo(tmp_path / "huge", *COUNTDOWN, edit=lambda rows: [{**rows[0], "nums": [10 ** 15, 2, 3]}])
    with pytest.raises(ValueError, match=r"row 0: .*out of range"):
        countdown.load_countdown_hf(huge)
    negative = write_repo(tmp_path / "neg", *COUNTDOWN, edit=lambda rows: [{**rows[0], "target": -4}])
    with pytest.raises(ValueError, match=r"row 0: .*out of range"):
        countdown.load_countdown_hf(negative)
    configs, files, _ = REPOS["gsm8k"]
    words = write_repo(tmp_path / "gsm", configs, files,
                       lambda rows: [{**r, "answer": r["answer"].replace("#### 5", "#### five")} for r in rows])
    with pytest.raises(ValueError, match=re.escape("row 0: the answer after '####' is 'five', not a number")):
        math_task.load_math("gsm8k", path=words)
    configs, files, _ = REPOS["amc"]
    nan = write_repo(tmp_path / "amc", configs, files, lambda rows: [{**r, "answer": float("nan")} for r in rows])
    with pytest.raises(ValueError, match="row 0: field 'answer' is nan, which no answer can equal"):
        math_task.load_math("amc", path=nan)
    # through tasks.load, as a run loads it: one line, no traceback
    monkeypatch.setitem(math_task.HUB_DATASETS["gsm8k"], "path", words)
    with pytest.raises(SystemExit, match="not a number"):
        tasks.load("math", "gsm8k", 10)


def test_plot_to_a_path_it_cannot_write_is_one_line(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward": 0.5}) + "\n")
    p = subprocess.run([sys.executable, "plot.py", str(out), "/proc/curves.png"], cwd=ROOT, capture_output=True,
                       text=True)
    one_line(p, "cannot write '/proc/curves.png'")
