"""Data parallelism with torchrun on 2 CPU processes (gloo): train.py end to end, and the loss /
gradient recipe it uses (global normaliser + summed gradients) against one process on the same batch."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from model import shipped_base

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--init_from=tiny", "--warmstart_steps=30", "--max_steps=2", "--prompts_per_step=4", "--group_size=3",
        "--n_problems=300", "--eval_problems=5", "--eval_n=2", "--final_eval_n=4", "--max_new_tokens=12",
        "--eval_interval=1", "--ckpt_interval=1",
        "--beta=0.1"]  # DS's penalty (the default beta is 0): a step moves the weights even when every response is wrong


def torchrun(script, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        script, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    if p.returncode != 0:
        raise AssertionError(f"torchrun {script} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return p


@pytest.mark.parametrize("extra", [[], ["--reuse_max=3", "--dgg_window=2", "--dgg_tau=0.0"]], ids=["plain", "dgg"])
def test_torchrun_train_two_ranks_stay_identical(tmp_path, extra):
    # with DGG the gate reads the all-reduced gradient, the same on both ranks: they decide alike, or their
    # parameters would part (one stepping, the other not)
    out = str(tmp_path / "run")
    torchrun("train.py", f"--out_dir={out}", "--algo=ds-grpo", *TINY, *extra)
    final = json.load(open(os.path.join(out, "final_eval.json")))
    assert final["world_size"] == 2
    assert final["ddp_max_param_diff"] == 0.0  # both ranks end with bit-identical parameters
    assert final["problems"] == 5  # the two ranks' evaluation shards (3 + 2 problems) were merged
    with open(os.path.join(out, "metrics.jsonl")) as f:
        steps = [r for r in map(json.loads, f) if "step" in r]
    assert [r["step"] for r in steps] == [1, 2]  # rank 0 alone logs
    assert all(0 <= r["accuracy"] <= 1 and r["entropy"] > 0 for r in steps)
    assert os.path.exists(os.path.join(out, "ckpt", "model.safetensors"))
    assert all(1 <= r["passes"] <= (3 if extra else 1) and ("dgg_z" in r) == bool(extra) for r in steps)


@pytest.mark.parametrize("parallelism", ["ddp", "fsdp"])
def test_torchrun_resume_gives_each_rank_its_own_sampling_stream(tmp_path, parallelism):
    # every rank samples its own responses from its own generator: a run stopped after step 1 and resumed
    # must draw exactly what the uninterrupted run drew at step 2, on every rank (restoring rank 0's
    # stream on all ranks, or a fresh one on ranks >= 1, changes rank 1's responses and so the metrics).
    # FSDP: the checkpoint's weights and AdamW state are gathered whole on rank 0 and sharded again on resume
    no_eval = ["--eval_interval=100", f"--parallelism={parallelism}"]  # evaluations draw from the generator too
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
    keys = [set(safe_open(os.path.join(out, d, "model.safetensors"), "pt").keys())
            for out, d in (("", shipped_base(0)), (stopped, "ckpt"))]
    assert keys[0] == keys[1]  # a plain save_pretrained checkpoint, the tied LM head written once
    # the weights after step 2 depend on AdamW's state after step 1: restored, they are the same
    a, b = (load_file(os.path.join(out, "ckpt", "model.safetensors")) for out in (straight, stopped))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fsdp_with_lora_trains_as_ddp_does(tmp_path):
    # the same run (LoRA adapters on the tiny model) with the model sharded (FSDP2) and replicated (DDP): the
    # same metrics, and the same adapter in the checkpoint, gathered whole from the shards on rank 0
    lora = ["--lora_rank=4", "--lora_alpha=8", "--lr=1e-2", "--eval_interval=100"]
    runs = {p: str(tmp_path / p) for p in ("ddp", "fsdp")}
    for p, out in runs.items():
        torchrun("train.py", f"--out_dir={out}", *TINY, *lora, f"--parallelism={p}")
    recs = {}
    for p, out in runs.items():
        with open(os.path.join(out, "metrics.jsonl")) as f:
            recs[p] = [r for r in map(json.loads, f) if "step" in r]
    for a, b in zip(recs["ddp"], recs["fsdp"]):
        for key in ("reward", "entropy", "loss", "grad_norm", "response_len"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    a, b = (load_file(os.path.join(out, "ckpt", "adapter_model.safetensors")) for out in runs.values())
    assert a.keys() == b.keys() and any("lora_B" in k and v.abs().sum() > 0 for k, v in a.items())
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


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
# losses add up to it, because the normaliser is the global one) and, through train.py's update (DDP with
# no_sync over 2 micro-batches, or FSDP2; each scaled by the world size so that their mean is our sum), the
# single-process gradient and the same parameters after one AdamW step.
BATCH = textwrap.dedent("""
    import torch
    import loss
    import parallel
    import update
    from model import char_tokenizer, response_logprobs, tiny_model

    def batch(checkpointing=False):
        torch.manual_seed(0)
        tok = char_tokenizer()
        model = tiny_model(tok, n_layer=2, n_embd=32, n_head=2)  # tied LM head and embedding
        if checkpointing:
            model.gradient_checkpointing_enable()
        B, G, P, T = 8, 4, 5, 7  # 2 groups of 4
        ids = torch.randint(4, len(tok), (B, P + T))
        att = torch.ones(B, P + T, dtype=torch.long)
        att[:3, :2] = 0  # left padding
        mask = (torch.arange(T) < torch.randint(2, T + 1, (B, 1))).float()  # (B, T) responses of varied length
        att[:, P:] = mask.long()
        rewards = torch.tensor([1., 0., 0., 1., 0., 0., 0., 1.])
        adv = loss.advantages("ds-grpo", rewards, rewards, -torch.rand(B, T) * mask, mask, G, 1.0, 0.1)[0]
        with torch.no_grad():
            old = response_logprobs(model, ids, att, P)[0] - 0.05 * torch.rand(B, T)  # ratios != 1
        return model, ids, att, P, mask, adv, old

    def full(t):  # FSDP holds shards (DTensors)
        return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone()

    class Recording(torch.optim.AdamW):  # AdamW that keeps the (whole) gradient it steps with
        def step(self):
            self.grads = [full(p.grad) for g in self.param_groups for p in g["params"]]
            return super().step()

    def one_update(model, ids, att, P, mask, adv, old, agg, parallelism=None):
        world = torch.distributed.get_world_size() if parallelism else 1
        trained = parallel.wrap(model, parallelism, "cpu")
        denom = loss.normaliser(mask, agg, distributed=parallelism is not None)
        def micro_loss(rows, T, logp, entropy):
            objective = loss.policy_loss(logp, old[rows, :T], adv[rows, :T], mask[rows, :T], denom, agg)
            return objective, torch.zeros(3)
        opt = Recording(model.parameters(), lr=1e-2)
        res = update.update(trained, model, opt, ids, att, P, mask, micro_loss, micro_batch_size=2, world=world)
        return res["loss"], opt.grads, [full(p) for p in model.parameters()]
""")

WORKER = BATCH + textwrap.dedent("""
    import sys
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    model, ids, att, P, mask, adv, old = batch(sys.argv[4] == "checkpointing")
    rows = slice(4 * rank, 4 * rank + 4)  # rank r holds group r, whole: 2 micro-batches of 2
    objective, grads, params = one_update(model, ids[rows], att[rows], P, mask[rows], adv[rows], old[rows], sys.argv[2],
                                          sys.argv[3])
    torch.save({"loss": objective, "grads": grads, "params": params}, f"{sys.argv[1]}/rank{rank}.pt")
    parallel.teardown()  # a barrier first: a rank that leaves while the other is still in gloo can abort it
""")


@pytest.mark.parametrize("parallelism, agg, checkpointing", [
    ("ddp", "token-mean", ""), ("ddp", "seq-mean", "checkpointing"),
    ("fsdp", "token-mean", ""), ("fsdp", "seq-mean", "checkpointing")])
def test_two_rank_loss_and_gradients_equal_single_process(tmp_path, parallelism, agg, checkpointing):
    (tmp_path / "worker.py").write_text(WORKER)
    torchrun(str(tmp_path / "worker.py"), str(tmp_path), agg, parallelism, checkpointing or "none")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    scope = {}
    sys.path.insert(0, ROOT)
    exec(BATCH, scope)
    objective, grads, params = scope["one_update"](*scope["batch"](bool(checkpointing)), agg)
    assert ranks[0]["loss"] + ranks[1]["loss"] == pytest.approx(objective, rel=1e-5, abs=1e-6)
    assert ranks[0]["loss"] != pytest.approx(objective)  # each rank holds only its share
    for r in ranks:
        for g_rank, g in zip(r["grads"], grads):  # the sum of the ranks' gradients, not their mean
            torch.testing.assert_close(g_rank, g, rtol=1e-4, atol=1e-6)
        for p_rank, p in zip(r["params"], params):  # after AdamW: the same step on every rank
            torch.testing.assert_close(p_rank, p, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(ranks[0]["params"], ranks[1]["params"]))
