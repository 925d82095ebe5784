"""Data parallelism with torchrun on 2 CPU processes (gloo): train.py end to end, and the loss /
gradient recipe it uses (global normaliser + summed gradients) against one process on the same batch."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--warmstart_steps=30", "--max_steps=2", "--prompts_per_step=4", "--group_size=3",
        "--n_problems=300", "--eval_problems=5", "--eval_n=2", "--final_eval_n=4", "--max_new_tokens=12",
        "--eval_interval=1", "--ckpt_interval=1"]


def torchrun(script, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        script, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    if p.returncode != 0:
        raise AssertionError(f"torchrun {script} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return p


def test_torchrun_train_two_ranks_stay_identical(tmp_path):
    out = str(tmp_path / "run")
    torchrun("train.py", f"--out_dir={out}", "--algo=ds-grpo", *TINY)
    final = json.load(open(os.path.join(out, "final_eval.json")))
    assert final["world_size"] == 2
    assert final["ddp_max_param_diff"] == 0.0  # both ranks end with bit-identical parameters
    assert final["problems"] == 5  # the two ranks' evaluation shards (3 + 2 problems) were merged
    with open(os.path.join(out, "metrics.jsonl")) as f:
        steps = [r for r in map(json.loads, f) if "step" in r]
    assert [r["step"] for r in steps] == [1, 2]  # rank 0 alone logs
    assert all(0 <= r["accuracy"] <= 1 and r["entropy"] > 0 for r in steps)
    assert os.path.exists(os.path.join(out, "ckpt", "model.safetensors"))


def test_torchrun_resume_gives_each_rank_its_own_sampling_stream(tmp_path):
    # every rank samples its own responses from its own generator: a run stopped after step 1 and resumed
    # must draw exactly what the uninterrupted run drew at step 2, on every rank (restoring rank 0's
    # stream on all ranks, or a fresh one on ranks >= 1, changes rank 1's responses and so the metrics)
    no_eval = ["--eval_interval=100"]  # evaluations draw from the generator too: only at step 0 and the end
    straight, stopped = str(tmp_path / "straight"), str(tmp_path / "stopped")
    torchrun("train.py", f"--out_dir={straight}", *TINY, *no_eval)
    torchrun("train.py", f"--out_dir={stopped}", *TINY, *no_eval, "--max_steps=1")
    torchrun("train.py", f"--out_dir={stopped}", "--init_from=resume", "--max_steps=2")

    def step2(out):
        with open(os.path.join(out, "metrics.jsonl")) as f:
            return next(r for r in map(json.loads, f) if r.get("step") == 2)
    a, b = step2(straight), step2(stopped)
    for key in ("reward", "entropy", "response_len", "loss", "grad_norm"):
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key


# A loss that is not finite on one rank only: that rank must not leave alone, or the other waits for it in
# the gradient all-reduce. Both decide together and exit with the same one-line error.
NAN_ON_RANK_1 = textwrap.dedent("""
    import os, runpy, sys
    import loss
    if os.environ["RANK"] == "1":
        real = loss.policy_loss
        loss.policy_loss = lambda *a, **k: real(*a, **k) * float("nan")
    sys.argv = ["train.py", *sys.argv[1:]]
    runpy.run_path("train.py", run_name="__main__")
""")


def test_a_nan_loss_on_one_rank_stops_every_rank_with_one_line(tmp_path):
    (tmp_path / "nan_on_rank_1.py").write_text(NAN_ON_RANK_1)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(tmp_path / "nan_on_rank_1.py"), f"--out_dir={tmp_path / 'run'}", *TINY], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode != 0
    out = p.stdout + p.stderr
    assert out.count("step 0: the loss is not finite on some rank") == 2, out[-3000:]  # both ranks, no hang
    assert not os.path.exists(tmp_path / "run" / "ckpt")  # nothing from the step was saved


def test_torchrun_refuses_a_batch_it_cannot_split(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "train.py", f"--out_dir={tmp_path}", "--prompts_per_step=3"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode != 0
    assert "prompts_per_step=3 must be a multiple of the 2 torchrun processes" in p.stdout + p.stderr


# The same global batch, split by groups over 2 ranks, must give the single-process loss (the ranks'
# losses add up to it, because the normaliser is the global one) and, after summing the ranks'
# gradients as train.py does, the single-process gradient.
BATCH = textwrap.dedent("""
    import torch
    import loss
    from model import char_tokenizer, response_logprobs, tiny_model

    def batch():
        torch.manual_seed(0)
        tok = char_tokenizer()
        model = tiny_model(tok, n_layer=1, n_embd=32, n_head=2)
        B, G, P, T = 8, 4, 5, 7  # 2 groups of 4
        ids = torch.randint(4, len(tok), (B, P + T))
        att = torch.ones(B, P + T, dtype=torch.long)
        att[:3, :2] = 0  # left padding
        mask = (torch.arange(T) < torch.randint(2, T + 1, (B, 1))).float()  # (B, T) responses of varied length
        att[:, P:] = mask.long()
        rewards = torch.tensor([1., 0., 0., 1., 0., 0., 0., 1.])
        adv = loss.advantages("ds-grpo", rewards, rewards, -torch.rand(B, T) * mask, mask, G, 1.0, 0.1)
        with torch.no_grad():
            old = response_logprobs(model, ids, att, P)[0] - 0.05 * torch.rand(B, T)  # ratios != 1
        return model, ids, att, P, mask, adv, old

    def loss_and_grads(model, ids, att, P, mask, adv, old, agg, distributed=False):
        denom = loss.normaliser(mask, agg, distributed)
        logp, _ = response_logprobs(model, ids, att, P)
        objective = loss.policy_loss(logp, old, adv, mask, denom, agg)
        objective.backward()
        if distributed:  # train.py's all-reduce
            for p in model.parameters():
                torch.distributed.all_reduce(p.grad)
        return objective.detach(), [p.grad.clone() for p in model.parameters()]
""")

WORKER = BATCH + textwrap.dedent("""
    import sys
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    model, ids, att, P, mask, adv, old = batch()
    rows = slice(4 * rank, 4 * rank + 4)  # rank r holds group r, whole
    objective, grads = loss_and_grads(model, ids[rows], att[rows], P, mask[rows], adv[rows], old[rows], sys.argv[2],
                                      True)
    torch.save({"loss": objective, "grads": grads}, f"{sys.argv[1]}/rank{rank}.pt")
    torch.distributed.destroy_process_group()
""")


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean"])
def test_two_rank_loss_and_gradients_equal_single_process(tmp_path, agg):
    (tmp_path / "worker.py").write_text(WORKER)
    torchrun(str(tmp_path / "worker.py"), str(tmp_path), agg)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    scope = {}
    sys.path.insert(0, ROOT)
    exec(BATCH, scope)
    objective, grads = scope["loss_and_grads"](*scope["batch"](), agg)
    torch.testing.assert_close(ranks[0]["loss"] + ranks[1]["loss"], objective, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ranks[0]["loss"], objective)  # each rank holds only its share
    for r in ranks:
        for g_rank, g in zip(r["grads"], grads):
            torch.testing.assert_close(g_rank, g, rtol=1e-4, atol=1e-6)
