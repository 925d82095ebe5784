"""Unbiased pass@k (METHODS.md section 7) against a brute-force count, and the k grid."""
import itertools
import json
import math
import os
import subprocess
import sys
import types

import pytest
import torch

import countdown
import eval as eval_module
import tasks
from eval import evaluate, format_table, ks_for, pass_at_k, summarize
from model import char_tokenizer, tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def brute_force_pass_at_k(n, c, k):
    """Fraction of all k-subsets of n samples (c of them correct) that contain a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_brute_force_for_all_small_cases():
    for n in range(1, 9):
        for c in range(0, n + 1):
            for k in range(1, n + 1):
                expected = brute_force_pass_at_k(n, c, k)
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)
                # and the closed form 1 - C(n-c, k) / C(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k),
                                                           abs=1e-12)


def test_pass_at_k_known_values():
    assert pass_at_k(2, 1, 1) == pytest.approx(0.5)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the accuracy c/n
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(8, 0, 1) == 0.0
    assert pass_at_k(8, 0, 8) == 0.0
    assert pass_at_k(8, 5, 4) == 1.0  # n - c = 3 < k = 4: every 4-subset holds a correct one
    assert pass_at_k(8, 8, 1) == 1.0
    assert pass_at_k(1, 1, 1) == 1.0


def test_pass_at_k_is_not_the_biased_estimate():
    # the naive 1 - (1 - c/n)^k differs: n=4, c=1, k=2 -> .4375 instead of .5
    assert pass_at_k(4, 1, 2) != pytest.approx(1 - (1 - 1 / 4) ** 2)


@pytest.mark.parametrize("n,c,k", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5), (0, 0, 1), (4, 2, -1)])
def test_pass_at_k_bad_arguments_raise(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_ks_for():
    assert ks_for(64) == [1, 2, 4, 8, 16, 32, 64]
    assert ks_for(1) == [1]
    assert ks_for(12) == [1, 2, 4, 8, 12]
    assert ks_for(12)[-1] == 12
    for n in range(1, 70):
        ks = ks_for(n)
        assert ks[-1] == n and ks == sorted(set(ks)) and all(k <= n for k in ks)


def test_merging_shards_equals_one_evaluation():
    # data-parallel evaluation: per-problem counts of disjoint shards merge into the full result
    from eval import merge_results
    full = summarize(8, 1.0, [0, 3, 8, 1, 5], [0, 2, 1, 1, 3], 12.0, 30)
    shards = [summarize(8, 1.0, [0, 8, 5], [0, 1, 3], 7.0, 18), summarize(8, 1.0, [3, 1], [2, 1], 5.0, 12),
              summarize(8, 1.0, [], [], 0.0, 0)]  # a rank with no problem
    merged = merge_results(shards)
    for key in ("pass@k", "accuracy", "distinct_correct", "entropy", "problems"):
        assert merged[key] == pytest.approx(full[key])
    assert full["pass@k"][1] == pytest.approx((0 + 3 + 8 + 1 + 5) / 40)  # pass@1 = mean accuracy
    counted = [summarize(8, 1.0, [3], [2], 1.0, 2, [[2, 1]]), summarize(8, 1.0, [1], [1], 1.0, 2, [[1]])]
    assert merge_results(counted)["answer_counts"] == [[2, 1], [1]]  # the answers' counts merge like the rest


def test_answer_counts_count_each_distinct_correct_answer(monkeypatch):
    # 2 x (3 + 4) = 14 and 4 x 3 + 2 = 14 are the two answers; (4 + 3) * 2 is the first again, 5 is wrong
    texts = ["<answer>2*(3+4)</answer>", "<answer>(4+3)*2</answer>", "<answer>4*3+2</answer>", "<answer>5</answer>"]
    fake = types.SimpleNamespace(texts=texts, entropy=torch.zeros(4, 3), response_mask=torch.ones(4, 3))
    monkeypatch.setattr(eval_module, "rollout", lambda *args, **kwargs: fake)
    res = evaluate(None, None, "countdown", [{"nums": [2, 3, 4], "target": 14}], n=4)
    assert (res["correct"], res["distinct"], res["answer_counts"]) == ([3], [2], [[2, 1]])


# ============================================================================= evaluate() on a tiny model
def tiny_policy():
    tok = char_tokenizer()
    torch.manual_seed(0)
    return tiny_model(tok, n_layer=1, n_embd=32, n_head=2).eval(), tok


def test_greedy_evaluation_works():
    # temperature 0 is greedy decoding: the n samples of a problem are one response, so each problem is
    # all right or all wrong, and the entropy (of softmax(logits), T = 1) is a number, not NaN
    m, tok = tiny_policy()
    problems = countdown.generate_problems(3, seed=0)
    res = evaluate(m, tok, "countdown", problems, n=3, temperature=0, max_new_tokens=8, rows_per_batch=9)
    assert math.isfinite(res["entropy"]) and res["entropy"] > 0
    assert all(c in (0, 3) for c in res["correct"]) and res["temperature"] == 0
    torch.manual_seed(1)  # another seed, the same responses
    assert evaluate(m, tok, "countdown", problems, n=3, temperature=0, max_new_tokens=8, rows_per_batch=9)["entropy"] == \
        pytest.approx(res["entropy"], abs=1e-6)


def test_evaluation_bounds_the_rows_of_its_log_prob_pass():
    # the entropy pass runs over every generated row; for 2048-token responses all rows at once do not fit
    # (README, "Memory"): at most logprob_batch_size rows go through the model together
    m, tok = tiny_policy()
    rows = []
    hook = m.model.register_forward_hook(lambda mod, args, kwargs, out: rows.append(kwargs["input_ids"].shape),
                                         with_kwargs=True)
    problems = countdown.generate_problems(4, seed=0)
    evaluate(m, tok, "countdown", problems, n=4, max_new_tokens=6, rows_per_batch=16, logprob_batch_size=3)
    hook.remove()
    P = max(s[1] for s in rows if s[0] == 4)  # the prefill: the 4 prompts of a batch, once each
    full = [s for s in rows if s[1] > P]  # prompt + response: the log-prob passes
    assert full and all(s[0] <= 3 for s in full) and sum(s[0] for s in full) == 16


def test_distinct_answers_are_n_a_for_math():
    # every correct math answer has the same value; a key on the response text counts samples (two
    # wordings of one solution were two "distinct answers"), so the number is not reported: n/a
    p = {"question": "Tom has 7 pens and buys 7 more. How many pens does he have?", "answer": "14"}
    right = ["7 + 7 = 14, so \\boxed{14}", "He has 7 + 7 = \\boxed{14} pens."]
    assert all(tasks.reward("math", r, p) == 1.0 for r in right)
    assert {tasks.answer_key("math", r, p) for r in right} == {None}
    res = summarize(2, 1.0, [2, 0], [None, None], 3.0, 10)
    assert res["distinct_correct"] is None and "distinct correct answers / problem: n/a" in format_table(res)
    # Countdown keeps its count: distinct up to commutativity and associativity
    cd = {"nums": [3, 5, 7], "target": 22}
    assert len({tasks.answer_key("countdown", f"<answer>{a}</answer>", cd) for a in ("3*5+7", "7+5*3", "(3*5)+7")}) == 1


def eval_py(*args):
    return subprocess.run([sys.executable, "eval.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_eval_py_runs_under_bf16_autocast_and_greedy(tmp_path):
    # eval.py has train.py's dtype handling (autocast, float32 weights): the GPU path, on the CPU
    m, tok = tiny_policy()
    m.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "res.json"
    p = eval_py(f"--ckpt={tmp_path / 'ckpt'}", "--n=2", "--eval_problems=2", "--n_problems=300",
                "--max_new_tokens=4", "--dtype=bfloat16", "--temperature=0", f"--out={out}")
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.load(open(out))
    assert res["problems"] == 2 and math.isfinite(res["entropy"])


def test_eval_py_evaluates_with_the_runs_own_settings(tmp_path):
    # a checkpoint of a run on another regime, split and sampling (its settings.json, as train.py writes it):
    # eval.py poses the same problems the same way; what the command line gives wins
    m, tok = tiny_policy()
    m.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    run = {"n_problems": 400, "cd_max_target": 30, "eval_split": "val", "val_problems": 7, "eval_problems": 5,
           "max_new_tokens": 6, "temperature": .7, "data_seed": 3}
    with open(tmp_path / "ckpt" / "settings.json", "w") as f:
        json.dump({**run, "lr": 1.0}, f)  # and settings eval.py does not read
    p = eval_py(f"--ckpt={tmp_path / 'ckpt'}", "--n=2", "--eval_problems=4", f"--out={tmp_path / 'res.json'}")
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.load(open(tmp_path / "res.json"))
    assert res["settings"] == {**res["settings"], **run, "eval_problems": 4}  # the run's, and the command line's
    assert res["settings"]["cd_sizes"] == "4" and res["settings"]["template"] == "tiny"  # train.py's defaults
    assert res["problems"] == 4 and res["temperature"] == .7


@pytest.mark.parametrize("arg, message", [
    ("--temperature=-1", "temperature must be >= 0"),
    ("--n=0", "must be >= 1"),
    ("--out=/proc/no/such/dir/res.json", "cannot write the results to '/proc/no/such/dir/res.json'"),
])
def test_eval_py_bad_input_is_one_line_before_loading(arg, message):
    # the checkpoint does not exist either: the bad value is found first, before anything is loaded
    p = eval_py("--ckpt=./no/such/ckpt", arg)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert message in p.stderr.strip().splitlines()[-1]


def test_the_shipped_grpo_row_is_shown_only_beside_a_run_with_the_same_settings(tmp_path, monkeypatch):
    import eval as ev
    ref = {"algo": "grpo", "config": {"algo": "grpo", "lr": 2e-4, "max_steps": 200, "out_dir": "out/grpo"},
           "n": 64, "pass@k": {"1": 0.3, "16": 0.8, "64": 0.9}, "distinct_correct": 5.0}
    path = tmp_path / "grpo.json"
    path.write_text(json.dumps(ref))
    monkeypatch.setattr(ev, "REFERENCE", str(path))
    same = {"algo": "ds-grpo", "lr": 2e-4, "max_steps": 200, "out_dir": "out", "device": "cpu"}
    assert ev.reference_run(same)["pass@k"]["1"] == 0.3  # out_dir and device do not change the numbers
    assert ev.reference_run({**same, "lr": 1e-4}) is None  # another lr: not comparable, not shown
    assert ev.reference_run({**same, "algo": "grpo"}) is None  # a GRPO run is not shown beside itself
    start = {"n": 64, "pass@k": {"1": 0.25, "16": 0.7, "64": 0.95}, "distinct_correct": 6.0}
    final = {"n": 64, "pass@k": {"1": 0.35, "16": 0.8, "64": 0.94}, "distinct_correct": 5.5}
    table = ev.format_start_vs_final(start, final, 200, "ds-grpo", ev.reference_run(same))
    lines = table.splitlines()
    assert lines[0].split() == ["pass@1", "pass@16", "pass@64", "distinct"]
    assert lines[2].split()[-4:] == ["0.3500", "0.8000", "0.9400", "5.50"]
    assert lines[3].startswith(" " * 2) and "grpo, same settings*" in lines[3] and lines[3].split()[-1] == "5.00"
    assert lines[4].startswith("* read from") and "not run now" in lines[4]
