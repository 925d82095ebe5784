"""plot.py on a hand-written metrics.jsonl: what it reads, and that it writes a PNG of the promised size."""
import json
import os
import subprocess
import sys

import matplotlib.image
import pytest

from plot import plot, read_metrics, series

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDS = [  # as train.py writes them: an evaluation at step 0, two steps, an evaluation at step 2
    {"eval_step": 0, "n": 4, "pass@k": {"1": 0.25, "2": 0.4, "4": 0.5}, "accuracy": 0.25, "entropy": 0.9},
    {"step": 1, "reward": 0.1, "accuracy": 0.0, "entropy": 0.8, "response_len": 10.0},  # a run older than kl_old
    {"step": 2, "reward": 0.3, "accuracy": 0.2, "entropy": 0.7, "response_len": 9.5, "kl_old": 0.01},
    {"eval_step": 2, "n": 4, "pass@k": {"1": 0.5, "2": 0.6, "4": 0.75}, "accuracy": 0.5, "entropy": 0.6},
]


@pytest.fixture
def run_dir(tmp_path):
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in RECORDS)
    return str(tmp_path)


def test_read_metrics_and_series(run_dir):
    steps, evals = read_metrics(run_dir)
    assert [r["step"] for r in steps] == [1, 2] and [r["eval_step"] for r in evals] == [0, 2]
    assert series(steps, "reward") == ([1, 2], [0.1, 0.3])
    assert series(steps, "kl_old") == ([2], [0.01])  # only the records that have it
    assert series(evals, "accuracy", "eval_step") == ([0, 2], [0.25, 0.5])


def test_plot_writes_a_png(run_dir, tmp_path):
    path = plot(run_dir)
    assert path == os.path.join(run_dir, "curves.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(path).shape[:2] == (800, 1500)  # 15 x 8 inches at 100 dpi
    other = str(tmp_path / "other.png")
    p = subprocess.run([sys.executable, "plot.py", run_dir, other], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0 and os.path.getsize(other) > 10_000


def test_plot_without_metrics_is_a_one_line_error(tmp_path):
    p = subprocess.run([sys.executable, "plot.py", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1] == f"no metrics.jsonl in {str(tmp_path)!r}: give the out_dir of a train.py run"


def test_passk_figure_of_final_evaluations(tmp_path):
    # two final_eval.json files as train.py writes them: one PNG of their pass@k curves and the start's; a file that
    # is not one is a one-line error
    final = {"algo": "ds-grpo", "config": {"max_steps": 2}, "n": 4, "problems": 3, "distinct_correct": 1.5,
             "pass@k": {"1": .5, "2": .6, "4": .75}, "start": {"n": 4, "pass@k": {"1": .25, "2": .4, "4": .5}}}
    other = {**final, "algo": "grpo", "start": None}
    for name, r in (("a.json", final), ("b.json", other)):
        (tmp_path / name).write_text(json.dumps(r))
    out = tmp_path / "passk.png"
    p = subprocess.run([sys.executable, "plot.py", str(tmp_path / "a.json"), str(tmp_path / "b.json"), str(out)],
                       cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert matplotlib.image.imread(out).shape[:2] == (462, 660)  # 6 x 4.2 inches at 110 dpi
    (tmp_path / "bad.json").write_text("{")
    p = subprocess.run([sys.executable, "plot.py", str(tmp_path / "bad.json"), str(out)], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode != 0 and p.stderr.strip().splitlines()[-1].startswith(f"cannot read {str(tmp_path / 'bad.json')!r}")
