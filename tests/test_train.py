"""End-to-end smoke runs of train.py on a tiny budget (the real default run is in the README)."""
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

import checks
from safetensors.torch import load_file
from model import shipped_base
from configurator import configure, script_defaults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--init_from=tiny", "--warmstart_steps=30", "--max_steps=2", "--prompts_per_step=2", "--group_size=3",
        "--n_problems=300", "--eval_problems=3", "--eval_n=2", "--final_eval_n=4", "--max_new_tokens=12",
        "--eval_interval=1", "--ckpt_interval=1",
        "--beta=0.1"]  # a penalty on incorrect responses too, so DS's term is in every step (the default is 0)


def run(*args, check=True, patch=""):
    """train.py with these arguments; patch: Python run first in the same process (to change a module)."""
    code = f"import runpy, sys\n{patch}\nsys.argv = ['train.py', *sys.argv[1:]]\nrunpy.run_path('train.py', run_name='__main__')"
    cmd = [sys.executable, "-c", code] if patch else [sys.executable, "train.py"]
    p = subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
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
    # only what changes is given again: the run's own settings (algo, sizes, ...) come from the checkpoint,
    # and what is given wins, the optimizer's hyperparameters included (the saved optimizer has its own)
    run(f"--out_dir={out}", "--init_from=resume", "--max_steps=3", "--weight_decay=0.5")
    steps = [r for r in records(out) if "step" in r]
    assert [r["step"] for r in steps] == [1, 2, 3] and steps[-1]["reward"] >= 0
    assert (steps[-1]["ds_abs"] > 0) == (algo == "ds-grpo")  # the saved algo, not the default
    state = torch.load(os.path.join(out, "ckpt", "state.pt"), weights_only=False)
    assert state["config"]["weight_decay"] == 0.5
    assert [g["weight_decay"] for g in state["optimizer"]["param_groups"]] == [0.5]
    # a max_steps before the checkpoint's step is refused, and the finished run's result is left alone
    final = open(os.path.join(out, "final_eval.json")).read()
    p = run(f"--out_dir={out}", "--init_from=resume", "--max_steps=2", check=False)
    assert p.returncode != 0 and "before the checkpoint's step 3" in p.stderr.strip().splitlines()[-1]
    assert open(os.path.join(out, "final_eval.json")).read() == final


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
    # init_from='scratch' (a base built here, at a small size): the first run builds its warm start, the second
    # finds it cached; the same seed gives the same run
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    scratch = ["--init_from=scratch", "--warmstart_steps=30", "--eval_at_start=False"]
    run(f"--out_dir={a}", *TINY, *scratch)
    shutil.copytree(os.path.join(a, "warmstart_countdown"), os.path.join(b, "warmstart_countdown"))
    run(f"--out_dir={b}", *TINY, *scratch)
    strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith(("time", "eval_time"))} for r in rs]
    assert strip(records(a)) == strip(records(b))


@pytest.mark.parametrize("algo", ["dr-grpo", "20-entropy", "ict"])
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
    else:
        assert kept == [1, 1]
    assert os.path.exists(os.path.join(out, "final_eval.json"))


def test_entropy_bonus_and_penalty_add_minus_and_plus_c_times_the_entropy(tmp_path):
    # same seed, so the same step-1 rollouts and the same policy loss; the two losses then differ by the
    # entropy term alone: (-c H) - (+c H) = -2 c H, H the token-mean entropy of the current policy, which at
    # step 1 is the rollout's (the 'entropy' metric). Without the term, or with the wrong sign, they would not.
    c, loss, entropy = 0.5, {}, {}
    for algo in ("entropy-bonus", "entropy-penalty"):
        out = str(tmp_path / algo)
        run(f"--out_dir={out}", f"--algo={algo}", f"--entropy_coef={c}", *TINY, "--max_steps=1")
        step1 = next(r for r in records(out) if r.get("step") == 1)
        loss[algo], entropy[algo] = step1["loss"], step1["entropy"]
        assert step1["kept_frac"] == 1
    assert entropy["entropy-bonus"] == entropy["entropy-penalty"] > 0.1  # the same rollouts (the base's: ~0.2)
    assert loss["entropy-bonus"] - loss["entropy-penalty"] == pytest.approx(-2 * c * entropy["entropy-bonus"],
                                                                            abs=1e-4)


# Every token counts as low-probability (tau_p > 1), and a response whose character codes add up to an even
# number is "correct" (a coin flip that mixes the groups). Then STAPO's tau_h is the q-quantile of the
# correct responses' token entropies, and the tokens below it in responses with A > 0 are silenced. At the
# real tau_p = 0.002 a two-step tiny run silences nothing, and kept_frac = 1 could not tell STAPO from GRPO.
STAPO_EVERYWHERE = """
import loss, tasks
loss.stapo_keep_mask.__defaults__ = (1.1,)
tasks.reward = lambda task, text, problem: float(sum(map(ord, text)) % 2 == 0)
"""


def test_stapo_silences_tokens_in_a_run(tmp_path):
    out = str(tmp_path / "run")
    run(f"--out_dir={out}", "--algo=stapo", *TINY, patch=STAPO_EVERYWHERE)
    steps = [r for r in records(out) if "step" in r]
    assert all(0 < r["accuracy"] < 1 for r in steps)  # groups with correct and incorrect responses
    assert all(0 < r["kept_frac"] < 1 for r in steps)  # some tokens silenced, never all of them


def test_mask_truncated_completions_takes_their_gradient_away(tmp_path):
    # 3 new tokens: no tiny-model answer ('<answer>...</answer>', one token a character) ends that soon, so every
    # response is truncated; masked, no token learns and the weights stay as they were (a zero gradient moves
    # AdamW nowhere without weight decay); unmasked, every token learns
    masked, plain = tmp_path / "masked", tmp_path / "plain"
    common = [*TINY, "--max_steps=1", "--max_new_tokens=3", "--eval_at_start=False"]
    run(f"--out_dir={masked}", *common, "--mask_truncated_completions=True")
    run(f"--out_dir={plain}", *common)
    m, p = ([r for r in records(d) if "step" in r][0] for d in (masked, plain))
    assert m["truncated"] == p["truncated"] == 1.0
    assert m["kept_frac"] == 0.0 and p["kept_frac"] == 1.0
    base, after = load_file(os.path.join(shipped_base(0), "model.safetensors")), load_file(masked / "ckpt" / "model.safetensors")
    assert all(torch.equal(base[k], after[k]) for k in base)


def test_ds_metrics_follow_ds_form(tmp_path):
    # ds_form='reward' adds the DS term to the reward before group centring: what reaches the advantage is
    # the term minus its group mean, so over the batch it sums to zero (the 'seq' form does not: every
    # incorrect response gets beta * L_i < 0). The logged DS metrics are that centred term.
    out = str(tmp_path / "run")
    run(f"--out_dir={out}", "--algo=ds-grpo", "--ds_form=reward", *TINY)
    for r in (r for r in records(out) if "step" in r):
        assert r["ds_abs"] > 0.01
        mean = r["accuracy"] * r["ds_correct"] + (1 - r["accuracy"]) * r["ds_incorrect"]
        assert mean == pytest.approx(0, abs=1e-6)


def test_train_runs_under_bf16_autocast(tmp_path):
    # the GPU path (float32 weights, bfloat16 autocast for rollouts, log-probs and loss) on the CPU:
    # the rollout's KV cache must take the states autocast hands it (float32 keys, bfloat16 values)
    out = str(tmp_path / "run")
    run(f"--out_dir={out}", "--dtype=bfloat16", *TINY)
    steps = [r for r in records(out) if "step" in r]
    assert [r["step"] for r in steps] == [1, 2] and all(math.isfinite(r["loss"]) for r in steps)
    assert os.path.exists(os.path.join(out, "final_eval.json"))


@pytest.mark.parametrize("arg, message", [
    ("--no_such_key=1", "unknown config key 'no_such_key'"),
    ("--max_steps=ten", "max_steps must be int"),
    ("--lr=fast", "lr must be float"),
    ("--algo=ppo", "algo must be one of"),
    ("--init_from=./no/such/model", "init_from must be 'tiny', 'scratch', 'resume', 'smollm2-135m' (fetched once), a hub"),
    ("--init_from=SmolLM2-135M.gguf", "an existing directory or .gguf file"),  # not a hub name: a missing file
    ("nonexistent_config.py", "cannot read config file"),
    ("--out_dir=/proc/x", "cannot write to out_dir='/proc/x'"),
    ("--out_dir=/dev/null/x", "cannot write to out_dir='/dev/null/x' (Not a directory)"),
    ("--cd_sizes=four", "cd_sizes must be"),
    ("--val_problems=8000", "val_problems must be < n_problems=8000"),  # before the problems are generated
    ("--val_problems=7500", "val_problems=7500 would leave none of the"),  # known once they are
    ("--cd_sizes=6", "cd_sizes must be sizes from 2 to 4"),  # would solve for minutes in silence
    ("--device=cuda", "device must be 'cpu' on this machine: torch sees no CUDA GPU"),
    ("--base_seed=7", "base_seed must be one of the shipped bases [0, 1]"),
    ("--dynamic_max_draws=0", "dynamic_max_draws must be >= 1"),
])
def test_bad_config_is_a_one_line_error(tmp_path, arg, message):
    # what train.py does with its arguments before anything is loaded or written: configure, then checks.check, in
    # this process (a train.py process would spend 2 s importing torch for each); END_TO_END below runs train.py
    if arg in END_TO_END:
        p = run(f"--out_dir={tmp_path}", arg, check=False)
        assert p.returncode != 0 and "Traceback" not in p.stderr
        assert message in p.stderr.strip().splitlines()[-1]
        return
    with pytest.raises(SystemExit) as e:
        checks.check(configure(train_defaults(), [arg]))
    assert message in str(e.value) and "\n" not in str(e.value)


def train_defaults():
    """train.py's constants, read without running it, on this machine's device (as train.py would pick it)."""
    return {**script_defaults(os.path.join(ROOT, "train.py")), "device": "cpu", "dtype": "float32"}


# the mistakes found only by train.py itself (its out_dir, the problems once loaded, a config file it reads), and one
# of each kind above, so that the whole path to the one printed line is run
END_TO_END = ("--no_such_key=1", "nonexistent_config.py", "--out_dir=/proc/x", "--out_dir=/dev/null/x",
              "--val_problems=7500", "--init_from=./no/such/model", "--temperature=-1", "--reuse_max=4 --lora_rank=8")


@pytest.mark.parametrize("arg, message", [
    ("--temperature=-1", "temperature must be > 0"),  # would train on an inverted distribution
    ("--temperature=0", "temperature must be > 0"),
    ("--max_steps=-3", "max_steps must be >= 0"),
    ("--lr=0", "lr must be > 0"),
    ("--lr=1e999", "lr must be > 0, got inf"),
    ("--alpha=-1.0", "alpha must be >= 0"),
    ("--beta=-0.1", "beta must be >= 0"),
    ("--kl_coef=-0.1", "kl_coef must be >= 0"),
    ("--entropy_coef=-0.01", "entropy_coef must be >= 0"),
    ("--eps_low=1.0", "eps_low must be in [0, 1)"),
    ("--eps_high=-0.2", "eps_high must be >= 0"),
    ("--top_entropy_frac=0", "top_entropy_frac must be in (0, 1]"),
    ("--stapo_q=1.5", "stapo_q must be in [0, 1]"),
    ("--group_size=1", "group_size must be >= 2"),
    ("--ds_form=tokens", "ds_form must be 'seq', 'token' or 'reward'"),
    ("--scale_rewards=global", "scale_rewards must be 'group', 'batch' or 'none'"),
    ("--eval_split=train", "eval_split must be 'test' or 'val'"),
    ("--cd_target=easy", "cd_target must be 'uniform' or 'weighted'"),
    ("--cd_min_num=20", "cd_min_num must be in 1..cd_max_num=15"),
    ("--parallelism=zero3", "parallelism must be 'ddp' or 'fsdp'"),
    ("--reuse_max=0", "reuse_max must be >= 1"),
    ("--dgg_signal=norm", "dgg_signal must be 'energy' or 'delta'"),
    ("--dgg_window=1", "dgg_window must be >= 2"),
    ("--reuse_max=4 --ppo_epochs=2", "reuse_max must be 1 when ppo_epochs > 1"),
    ("--reuse_max=4 --lora_rank=8", "or with LoRA (DGG watches the LM head's gradient, and LoRA freezes it)"),
])
def test_a_value_out_of_range_is_one_line_and_nothing_is_written(tmp_path, arg, message):
    # a finished run's directory: a bad value must not touch it (no warm start, no checkpoint, no result). The range
    # checks in this process (checks.check, as train.py calls it first); END_TO_END ones through train.py
    if arg not in END_TO_END:
        with pytest.raises(SystemExit) as e:
            checks.check(configure(train_defaults(), [*TINY, *arg.split()]))
        assert message in str(e.value) and "\n" not in str(e.value)
        return
    out = tmp_path / "run"
    out.mkdir()
    (out / "final_eval.json").write_text('{"pass@k": {"1": 0.5}}')
    p = run(f"--out_dir={out}", *TINY, *arg.split(), check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert message in p.stderr.strip().splitlines()[-1]
    assert os.listdir(out) == ["final_eval.json"] and (out / "final_eval.json").read_text() == '{"pass@k": {"1": 0.5}}'


# Saves the gradient of the first optimizer step (as clipping sees it) and how many pi_old passes the rollout
# had run by then.
GRAD_SPY = """
import sys, torch, rollout
calls, real_logprobs, real_clip = [], rollout.response_logprobs, torch.nn.utils.clip_grad_norm_
rollout.response_logprobs = lambda *a, **k: calls.append(1) or real_logprobs(*a, **k)
def spy(params, *a, **k):
    params = list(params)
    if sys._getframe(1).f_globals["__name__"] == "update":  # not the warm start's
        torch.save({{"grads": [p.grad.clone() for p in params], "old_logp_passes": len(calls)}}, {path!r})
        torch.nn.utils.clip_grad_norm_ = real_clip
    return real_clip(params, *a, **k)
torch.nn.utils.clip_grad_norm_ = spy
"""


@pytest.mark.parametrize("algo, form", [("grpo", "seq"), ("entropy-bonus", "seq"), ("ds-grpo", "seq")])
def test_skipping_the_pi_old_pass_gives_the_same_update(tmp_path, algo, form):
    # ppo_epochs = 1: pi_old is the policy being trained, so its log-probs are the training pass's own,
    # detached (the ratio is exactly 1): no forward pass of its own. Same rollouts (the same seed), so the same
    # step: loss, gradient and the pi_old-based metrics. DS-GRPO keeps the pass: DS-Eq.6's term is part of the
    # advantage, computed before the update.
    runs = {}
    for skip in (False, True):
        out = tmp_path / str(skip)
        run(f"--out_dir={out}", f"--algo={algo}", f"--ds_form={form}", *TINY, "--max_steps=1", "--eval_at_start=False",
            "--micro_batch_size=2", f"--skip_old_logp={skip}", patch=GRAD_SPY.format(path=str(out / "grads.pt")))
        runs[skip] = next(r for r in records(out) if r.get("step") == 1), torch.load(out / "grads.pt")
    (rec, spied), (rec_skip, spied_skip) = runs[False], runs[True]
    assert spied["old_logp_passes"] == 1 and spied_skip["old_logp_passes"] == (algo == "ds-grpo")  # skipped or kept
    for a, b in zip(spied_skip["grads"], spied["grads"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    for key in ("loss", "grad_norm", "entropy", "entropy_correct", "ds_abs", "ds_correct", "ds_incorrect"):
        assert rec_skip[key] == pytest.approx(rec[key], rel=1e-5, abs=1e-7), key
    assert rec_skip["kl_old"] == rec_skip["clip_low"] == rec_skip["clip_high"] == 0  # the ratio is exactly 1
    assert (rec["ds_abs"] > 0) == (algo == "ds-grpo")


def test_dgg_reuses_batches_logs_its_gate_and_resumes_with_the_same_decisions(tmp_path):
    # DGG: up to 3 optimizer passes per rollout batch; a window of 2 fills during step 1, so from then on a
    # reuse pass can be gated (tau = 0: whenever its LM-head gradient energy is above the window's mean).
    # The gate's window is in the checkpoint: a run stopped after step 2 and resumed decides at step 3
    # exactly as the uninterrupted run (with an empty window its z would be null, its passes 3).
    dgg = ["--reuse_max=3", "--dgg_window=2", "--dgg_tau=0.0", "--eval_interval=100", "--eval_at_start=False"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run(f"--out_dir={straight}", *TINY, *dgg, "--max_steps=3")
    run(f"--out_dir={stopped}", *TINY, *dgg, "--max_steps=2")
    run(f"--out_dir={stopped}", "--init_from=resume", "--max_steps=3")
    steps = [r for r in records(straight) if "step" in r]
    assert [r["rollouts"] for r in steps] == [6, 12, 18]  # cumulative responses: 2 prompts x G = 3 per step
    for r in steps:  # passes applied: 3, or fewer when the gate fired (never on the first)
        assert (1 <= r["passes"] < 3) if r["dgg_fired"] else r["passes"] == 3
        assert r["dgg_g"] > 0
    assert steps[-1]["dgg_z"] is not None  # the window was full at step 3
    a, b = steps[-1], next(r for r in records(stopped) if r.get("step") == 3)
    for key in ("passes", "dgg_fired", "dgg_g", "dgg_z", "loss", "grad_norm"):
        assert a[key] == pytest.approx(b[key], rel=1e-6), key
    state = torch.load(stopped / "ckpt" / "state.pt", weights_only=False)
    assert len(state["dgg"]["window"]) == 2
