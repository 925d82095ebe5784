"""The hub loaders (Countdown-Tasks-3to4; GSM8K, MATH, MATH-500, AIME 2024, AMC) on small local copies of
each hub repository: the same file formats, directory layout, README `configs` and column names and types
as the hub holds, written here, and read by the same datasets.load_dataset call a run makes (a local
directory in place of the hub name; nothing is downloaded). A renamed column or a bad row upstream then
fails here, with the one-line error a run would print.
Layouts as on the hub's dataset cards; math-ai/amc23's (data/test-*.parquet, float answers) is from memory."""
import json
import os
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import countdown
import math_task
import tasks

GSM = [{"question": "Tom has 3 pens and buys 2. How many pens?", "answer": "3 + 2 = <<3+2=5>>5\n#### 5"},
       {"question": "A box holds 400 eggs. How many in 3 boxes?", "answer": "3 * 400 = 1200\n#### 1,200"}]
MATH = [{"problem": "What is $\\frac{1}{2}+\\frac{1}{2}$?", "level": "Level 1", "type": "Prealgebra",
         "solution": "The sum is $\\boxed{1}$."},
        {"problem": "Solve $x^2=4$, $x>0$.", "level": "Level 2", "type": "Algebra",
         "solution": "So $x=\\boxed{\\sqrt{4}}=2$... we take $\\boxed{2}$."}]
MATH500 = [{"problem": "Compute $2^{10}$.", "solution": "$2^{10}=1024$.", "answer": "1024", "subject": "Algebra",
            "level": 1, "unique_id": "test/algebra/1.json"},
           {"problem": "Simplify $\\sqrt{8}$.", "solution": "...", "answer": "2\\sqrt{2}", "subject": "Algebra",
            "level": 2, "unique_id": "test/algebra/2.json"}]
AIME = [{"id": 60, "problem": "Find the remainder when $2024$ is divided by $1000$.", "solution": "24.",
         "answer": "024", "url": "https://artofproblemsolving.com/x", "year": "2024"},
        {"id": 61, "problem": "Find $m+n$.", "solution": "...", "answer": "104", "url": "u", "year": "2024"}]
AMC = [{"id": 0, "problem": "What is $6 \\cdot 7$?", "answer": 42.0, "url": "u"},
       {"id": 1, "problem": "What is $5/2$?", "answer": 2.5, "url": "u"}]
AMC23 = [{"id": 0, "question": "What is $6 \\cdot 7$?", "answer": 42.0, "url": "u"},
         {"id": 1, "question": "What is $1/4$ as a decimal?", "answer": 0.25, "url": "u"}]

# name -> (README configs {config: {split: file pattern}} or None, {file: rows}, what load_math returns).
# The values carry the hub's column types (pyarrow infers them): int64 ids, float64 AMC answers, string AIME
# answers such as "024", a list of int64 for Countdown's nums.
REPOS = {
    "gsm8k": ({"main": {"train": "main/train-*", "test": "main/test-*"}},
              {"main/train-00000-of-00001.parquet": GSM[::-1], "main/test-00000-of-00001.parquet": GSM},
              [{"question": GSM[0]["question"], "answer": "5"}, {"question": GSM[1]["question"], "answer": "1200"}]),
    "math": ({"default": {"train": "data/train-*", "test": "data/test-*"}},
             {f"data/{s}-00000-of-00001.parquet": MATH for s in ("train", "test")},
             [{"question": MATH[0]["problem"], "answer": "1"}, {"question": MATH[1]["problem"], "answer": "2"}]),
    "math500": (None, {"test.jsonl": MATH500},
                [{"question": r["problem"], "answer": r["answer"]} for r in MATH500]),
    "aime24": ({"default": {"train": "data/train-*"}},
               {"data/train-00000-of-00001.parquet": AIME},
               [{"question": AIME[0]["problem"], "answer": "024"}, {"question": AIME[1]["problem"], "answer": "104"}]),
    "amc": ({"default": {"train": "data/train-*"}},
            {"data/train-00000-of-00001.parquet": AMC},
            [{"question": AMC[0]["problem"], "answer": "42"}, {"question": AMC[1]["problem"], "answer": "2.5"}]),
    "amc23": ({"default": {"test": "data/test-*"}},
              {"data/test-00000-of-00001.parquet": AMC23},
              [{"question": AMC23[0]["question"], "answer": "42"}, {"question": AMC23[1]["question"], "answer": "0.25"}]),
}
COUNTDOWN = ({"default": {"train": "data/train-*"}},
             {"data/train-00000-of-00001.parquet": [{"target": 24, "nums": [3, 8, 1]}, {"target": 7, "nums": [1, 2, 3, 4]}]})


def write_repo(root, configs, files, edit=lambda rows: rows):
    """A local copy of a hub dataset repository; `edit` changes the rows of every file (a bad upstream)."""
    os.makedirs(root, exist_ok=True)
    if configs:  # the README front matter that tells datasets which files make which config and split
        lines = ["---", "configs:"]
        for name, splits in configs.items():
            lines += [f"- config_name: {name}", "  data_files:"]
            lines += [f"  - split: {s}\n    path: {p}" for s, p in splits.items()]
        with open(os.path.join(root, "README.md"), "w") as f:
            f.write("\n".join(lines + ["---", ""]))
    for rel, rows in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        rows = edit([dict(r) for r in rows])
        if rel.endswith(".jsonl"):
            with open(path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
        else:
            pq.write_table(pa.Table.from_pylist(rows), path)
    return str(root)


@pytest.fixture(autouse=True)
def local_datasets_cache(tmp_path, monkeypatch):
    import datasets
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")  # not ~/.cache


def rename(old, new):
    return lambda rows: [{(new if k == old else k): v for k, v in r.items()} for r in rows]


def null_in_row_1(field):
    return lambda rows: [{**r, field: None} if i == 1 else r for i, r in enumerate(rows)]


@pytest.mark.parametrize("name", list(math_task.HUB_DATASETS))
def test_math_hub_layout_loads(name, tmp_path):
    configs, files, expected = REPOS[name]
    root = write_repo(tmp_path / name, configs, files)
    assert math_task.load_math(name, path=root) == expected
    assert math_task.load_math(name, path=root, limit=1) == expected[:1]


@pytest.mark.parametrize("name", list(math_task.HUB_DATASETS))
def test_math_hub_renamed_column_or_bad_row_is_one_line_error(name, tmp_path):
    spec = math_task.HUB_DATASETS[name]
    configs, files, _ = REPOS[name]
    where = f"{name}[{spec['split']}]"
    q, a = spec["question"], spec["answer"]
    root = write_repo(tmp_path / "renamed", configs, files, rename(q, q + "_x"))
    with pytest.raises(ValueError, match=re.escape(f"{where} row 0: missing or empty field '{q}'")):
        math_task.load_math(name, path=root)
    root = write_repo(tmp_path / "null", configs, files, null_in_row_1(a))
    with pytest.raises(ValueError, match=re.escape(f"{where} row 1: missing or empty field '{a}'")):
        math_task.load_math(name, path=root)


def test_tasks_load_takes_gsm8k_train_and_test_splits(tmp_path, monkeypatch):
    # what `--task=math --dataset=gsm8k` reads: the train split to learn from, the test split to evaluate
    configs, files, expected = REPOS["gsm8k"]
    monkeypatch.setitem(math_task.HUB_DATASETS["gsm8k"], "path", write_repo(tmp_path, configs, files))
    train, test = tasks.load("math", "gsm8k", n_problems=10)
    assert test == expected and train == expected[::-1]


def test_countdown_hub_layout_loads(tmp_path):
    root = write_repo(tmp_path, *COUNTDOWN)
    assert countdown.load_countdown_hf(root) == [{"nums": [3, 8, 1], "target": 24}, {"nums": [1, 2, 3, 4], "target": 7}]
    assert countdown.load_countdown_hf(root, limit=1) == [{"nums": [3, 8, 1], "target": 24}]


@pytest.mark.parametrize("edit, row", [(rename("nums", "numbers"), 0), (null_in_row_1("target"), 1)])
def test_countdown_hub_renamed_column_or_bad_row_is_one_line_error(tmp_path, edit, row):
    root = write_repo(tmp_path, *COUNTDOWN, edit=edit)
    with pytest.raises(ValueError, match=re.escape(f"[train] row {row}: need integer list 'nums' and integer 'target'")):
        countdown.load_countdown_hf(root)
