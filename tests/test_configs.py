"""Every config file only sets keys that train.py has, with the right types (the configurator's check)."""
import ast
import glob
import os

import pytest

from configurator import configure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_defaults():
    """The constants at the top of train.py, read without running it (it trains on import)."""
    tree = ast.parse(open(os.path.join(ROOT, "train.py")).read())
    cfg = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                cfg[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass  # device/dtype depend on the machine
    cfg.update(device="cpu", dtype="float32")
    return cfg


REAL_MODELS = sorted(p for p in glob.glob(os.path.join(ROOT, "config", "*.py")) if "tiny" not in p)


@pytest.mark.parametrize("path", REAL_MODELS)
def test_config_file_is_valid(path):
    cfg = configure(train_defaults(), [path])
    assert cfg["lr"] == 1e-6 and cfg["group_size"] == 8 and cfg["temperature"] == 0.7
    assert cfg["alpha"] == cfg["beta"] == 0.01 and (cfg["eps_low"], cfg["eps_high"]) == (0.2, 0.25)
    assert cfg["template"] == "instruct" and cfg["gradient_checkpointing"]


def test_the_low_accuracy_regime_is_the_first_default():
    # config/countdown_tiny_lowacc.py: 3 or 4 numbers from 1..10, any solvable target, 32 prompts x G = 8
    cfg = configure(train_defaults(), [os.path.join(ROOT, "config", "countdown_tiny_lowacc.py")])
    assert (cfg["cd_sizes"], cfg["cd_min_num"], cfg["cd_max_num"], cfg["cd_max_target"], cfg["cd_min_solutions"],
            cfg["cd_target"]) == ("3,4", 1, 10, 50, 1, "uniform")
    assert (cfg["prompts_per_step"], cfg["group_size"], cfg["val_problems"]) == (32, 8, 0)


def test_overrides_are_type_checked():
    cfg = train_defaults()
    assert configure(cfg, ["--lr=3", "--algo=grpo", "--out_dir=123"])["lr"] == 3.0  # int -> float is fine
    assert cfg["algo"] == "grpo" and cfg["out_dir"] == "123"
    for bad in (["--lr=abc"], ["--max_steps=1.5"], ["--scale_std=1"], ["--nope=1"], ["--lr"]):
        with pytest.raises(SystemExit):
            configure(train_defaults(), bad)
