"""Every config file only sets keys that train.py has, with the right types (the configurator's check), and values
that train.py's own range checks accept; the low-accuracy config makes the regime it says it does."""
import glob
import os

import pytest

import checks
import countdown
from configurator import configure
from test_train import train_defaults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


CONFIGS = sorted(glob.glob(os.path.join(ROOT, "config", "*.py")))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_file_sets_known_keys_with_values_train_py_accepts(path):
    cfg = configure(train_defaults(), [path])  # an unknown key or a wrong type: SystemExit
    checks.check(cfg)  # every value in its range: SystemExit naming the first that is not


def test_a_config_value_out_of_range_is_caught(tmp_path):
    # the check above can fail: a config file with a value train.py refuses
    bad = tmp_path / "bad.py"
    bad.write_text("group_size = 1\n")
    with pytest.raises(SystemExit, match="group_size must be >= 2"):
        checks.check(configure(train_defaults(), [str(bad)]))


def test_the_low_accuracy_config_makes_its_regime():
    # config/countdown_tiny_lowacc.py: 3 or 4 numbers from 1..10, any solvable target up to 50
    cfg = configure(train_defaults(), [os.path.join(ROOT, "config", "countdown_tiny_lowacc.py")])
    regime = countdown.regime(cfg["cd_sizes"], cfg["cd_min_num"], cfg["cd_max_num"], cfg["cd_max_target"],
                              cfg["cd_min_solutions"], cfg["cd_target"])
    problems = countdown.generate_problems(200, 0, **regime)
    assert {len(p["nums"]) for p in problems} == {3, 4}
    assert all(1 <= x <= 10 for p in problems for x in p["nums"]) and all(1 <= p["target"] <= 50 for p in problems)
    assert min(len(p["solutions"]) for p in problems) == 1  # targets with a single solution are in


def test_overrides_are_type_checked():
    cfg = train_defaults()
    assert configure(cfg, ["--lr=3", "--algo=grpo", "--out_dir=123"])["lr"] == 3.0  # int -> float is fine
    assert cfg["algo"] == "grpo" and cfg["out_dir"] == "123"
    for bad in (["--lr=abc"], ["--max_steps=1.5"], ["--lr=True"], ["--nope=1"], ["--lr"]):
        with pytest.raises(SystemExit):
            configure(train_defaults(), bad)


def test_the_renamed_scale_std_is_read_as_scale_rewards():
    # scale_std (a bool) became scale_rewards ('group' / 'batch' / 'none'): old commands and configs keep working
    assert configure(train_defaults(), ["--scale_std=False"])["scale_rewards"] == "none"  # Dr.GRPO's advantage
    assert configure(train_defaults(), ["--scale_std"])["scale_rewards"] == "group"
    assert "scale_std" not in configure(train_defaults(), ["--scale_std=False"])
    with pytest.raises(SystemExit, match="scale_std \\(now scale_rewards\\) must be True or False"):
        configure(train_defaults(), ["--scale_std=batch"])
