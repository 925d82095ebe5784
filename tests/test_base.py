"""The shipped tiny bases (assets/base, made by base.py): init_from='tiny' loads one with no warm start, loading
checks the weights against the manifest's sha256, and base.py builds one from scratch (here at a small size)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from model import SHIPPED_BASE, file_sha256, load_policy
from test_train import ROOT, TINY, run

SEEDS = (0, 1)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_shipped_base_matches_its_manifest_and_loads(seed):
    path = SHIPPED_BASE.format(seed)
    manifest = json.load(open(os.path.join(path, "manifest.json")))
    assert file_sha256(os.path.join(path, "model.safetensors")) == manifest["sha256"]
    for name, sha in manifest["files"].items():  # tokenizer and config too
        assert file_sha256(os.path.join(path, name)) == sha, name
    assert manifest["seed"] == seed and manifest["command"].startswith("python base.py")
    model, tok = load_policy(path)
    assert sum(p.numel() for p in model.parameters()) == manifest["parameters"]
    assert 0 < manifest["eval"]["pass@k"]["1"] < 1 and manifest["eval"]["n"] == 256


def test_a_changed_or_missing_weights_file_is_one_line(tmp_path):
    copy = tmp_path / "seed0"
    shutil.copytree(SHIPPED_BASE.format(0), copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(SystemExit, match=r"model.safetensors does not match its manifest \(sha256 [0-9a-f]{12} != "):
        load_policy(str(copy))
    weights.unlink()
    with pytest.raises(SystemExit, match=r"does not match its manifest \(sha256 missing != "):
        load_policy(str(copy))


def test_train_starts_from_the_shipped_base_without_a_warm_start(tmp_path):
    p = run(f"--out_dir={tmp_path}", *TINY, "--init_from=tiny", "--base_seed=1", "--max_steps=1", "--eval_at_start=False")
    assert not any(d.startswith("warmstart") for d in os.listdir(tmp_path)) and "warm start" not in p.stderr
    state_src = json.load(open(tmp_path / "final_eval.json"))["config"]
    assert state_src["init_from"] == "tiny" and state_src["base_seed"] == 1


def test_base_py_builds_a_base_from_scratch_at_a_small_size(tmp_path):
    # the recipe end to end on a small regime (numbers 2..6): train, evaluate, manifest; then it loads, checked
    out = tmp_path / "seed3"
    small = ["--cd_max_num=6", "--n_problems=40", "--val_problems=5", "--steps=4", "--batch_size=8",
             "--snapshot_every=2", "--eval_problems=3", "--eval_n=4", "--seed=3", f"--out_dir={out}"]
    p = subprocess.run([sys.executable, "base.py", *small], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    manifest = json.load(open(out / "manifest.json"))
    assert manifest["steps"] == 4 and manifest["seed"] == 3 and manifest["eval"]["n"] == 4
    assert manifest["sha256"] == file_sha256(out / "model.safetensors")
    assert os.path.isdir(tmp_path / "seed3_snapshots" / "step2")
    load_policy(str(out))  # the manifest's check passes


def default_config():
    """train.py's settings as a plain `python train.py` has them (its config block, run without the loop)."""
    src = open(os.path.join(ROOT, "train.py")).read()
    scope = {}
    exec(src[:src.index("config = configure(")], scope)
    return {k: v for k, v in scope.items() if not k.startswith("_") and type(v) in (int, float, bool, str)}


def test_the_shipped_grpo_row_is_from_the_default_settings():
    # the row a default run prints beside itself must come from a run of today's defaults: a changed default
    # fails here until assets/default_run/grpo.json is made again (its command is in the file)
    import eval as ev
    config = default_config()
    assert all(k == k.lower() for k in config)  # an imported constant is no setting (it would differ per clone)
    ref = ev.reference_run(config)
    assert ref is not None and ref["algo"] == "grpo" and ref["command"].startswith("python train.py --algo=grpo")


def test_the_slices_of_the_shipped_bases_add_up_to_their_manifests():
    # four equal quarters of the 200 test problems: their pass@1 average to the manifest's, whatever the feature
    p = subprocess.run([sys.executable, "base.py", "--stage=slices"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    blocks = p.stdout.split("seed ")[1:]
    for k, block in enumerate(blocks):
        manifest = os.path.join(ROOT, "assets", "base", f"seed{k}", "manifest.json")
        accuracy = json.load(open(manifest))["eval"]["accuracy"]
        lines = block.strip().splitlines()[1:]
        assert len(lines) == 4
        for line in lines:
            quarters = [float(cell.split(": ")[1].split(" / ")[0]) for cell in line.split("   ") if ": " in cell]
            assert len(quarters) == 4 and abs(sum(quarters) / 4 - accuracy) < 0.001
