"""The GPU paths, on a CUDA GPU only (marked `cuda`: skipped elsewhere, run by gpu_check.py): bf16 autocast against
the training pass, the compiled decode step and its static cache, and the tiny default's update on the GPU against
the CPU's. Tolerances are stated beside each assertion; they were set before any GPU ran these (issue 26): the
figures gpu_check.py records are what to revise them from."""
import pytest
import torch

import loss
import parallel
import update
from model import load_policy, response_logprobs, shipped_base
from rollout import generate, rollout

pytestmark = pytest.mark.cuda
PROMPTS = ["12 3 4 5 -> 7 =", "2 9 9 14 -> 31 =", "3 3 8 11 -> 22 =", "6 7 13 15 -> 50 ="]


@pytest.fixture(scope="module")
def base():
    model, tok = load_policy(shipped_base(0), "cuda")
    return model.eval(), tok


def test_bf16_rollout_log_probs_match_the_training_pass(base):
    # pi_old from the rollout's pass (one batch) against the training pass (micro-batches of 4, gradients on), both
    # under bf16 autocast with the float32 LM head: the same tokens, other batch shapes. At ppo_epochs = 1 the ratio
    # should be 1; bf16 rounding moves it. Stated tolerance: mean |log ratio| < 0.01, max < 0.1.
    model, tok = base
    torch.manual_seed(0)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ro = rollout(model, tok, PROMPTS, 8, 24, 1.0, 32)
        logp = torch.cat([response_logprobs(model.train(), ro.input_ids[r], ro.attention_mask[r], ro.n_prompt)[0]
                          for r in torch.arange(len(ro.texts), device="cuda").split(4)])
    model.eval()
    diff = ((logp.detach() - ro.old_logp) * ro.response_mask).abs()
    n = ro.response_mask.sum()
    print(f"bf16 |log ratio|: mean {diff.sum() / n:.2e}, max {diff.max():.2e} over {int(n)} tokens")
    assert diff.sum() / n < 0.01 and diff.max() < 0.1


def test_compiled_decode_step_does_not_recompile_after_warm_up(base):
    # compile=True: after one rollout and one evaluation-shaped call, more calls of those shapes compile nothing
    # new (torch._dynamo's frame counter) and reuse the same static cache (CUDA graphs replay, not re-record)
    import torch._dynamo.utils as dynamo_utils
    model, tok = base
    enc = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left").to("cuda")
    shapes = [(8, 24), (16, 24)]  # (G, new tokens): the training rollout's and an evaluation's
    with torch.autocast("cuda", dtype=torch.bfloat16):
        for G, T in shapes:  # warm-up: one compile per shape
            generate(model, enc.input_ids, enc.attention_mask, G, T, 1.0, [tok.eos_token_id], tok.pad_token_id, True)
        frames = sum(dynamo_utils.counters["frames"].values())
        for _ in range(2):
            for G, T in shapes:
                generate(model, enc.input_ids, enc.attention_mask, G, T, 1.0, [tok.eos_token_id], tok.pad_token_id,
                         True)
                cache = model._rollout_cache[1]
                generate(model, enc.input_ids, enc.attention_mask, G, T, 1.0, [tok.eos_token_id], tok.pad_token_id,
                         True)
                assert model._rollout_cache[1] is cache  # the static cache is reused: same buffers
    assert sum(dynamo_utils.counters["frames"].values()) == frames, dict(dynamo_utils.counters["frames"])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_tiny_defaults_update_on_the_gpu_equals_the_cpus(dtype):
    # one batch sampled on the CPU, then the same update step (train.py's loss, update.update) on the CPU in float32
    # and on the GPU: the loss, the gradient norm and the new weights agree. Stated tolerance: float32 rel 1e-4
    # (other kernels, other summation orders); bf16 autocast rel 3e-2.
    results = {}
    torch.manual_seed(0)
    model_cpu, tok = load_policy(shipped_base(0), "cpu")
    ro = rollout(model_cpu.eval(), tok, PROMPTS, 8, 24, 1.0, 32)
    rewards = (torch.rand(len(ro.texts)) < 0.3).float()
    for device in ("cpu", "cuda"):
        model, _ = load_policy(shipped_base(0), device)
        model.train()
        mask = ro.response_mask.float().to(device)
        adv, _ = loss.advantages("ds-grpo", rewards.to(device), rewards.to(device), ro.old_logp.to(device), mask, 8,
                                 10.0, 0.0)
        denom = loss.normaliser(mask, "token-mean")
        old = ro.old_logp.to(device)

        def micro_loss(rows, T, logp, entropy):
            return loss.policy_loss(logp, old[rows, :T], adv[rows, :T], mask[rows, :T], denom), torch.zeros(3,
                                                                                                           device=device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, betas=(0.9, 0.99))
        ctx = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda" and dtype == "bfloat16")
        out = update.update(parallel.wrap(model, None, device), model, optimizer, ro.input_ids.to(device), ro.attention_mask.to(device),
                            ro.n_prompt, mask, micro_loss, micro_batch_size=16, ctx=ctx)
        results[device] = out["loss"], out["grad_norm"], [p.detach().cpu() for p in model.parameters()]
    rel = 1e-4 if dtype == "float32" else 3e-2
    (loss_c, norm_c, w_c), (loss_g, norm_g, w_g) = results["cpu"], results["cuda"]
    assert loss_g == pytest.approx(loss_c, rel=rel, abs=1e-6) and norm_g == pytest.approx(norm_c, rel=rel)
    # one AdamW step of lr 2e-4 moves a weight by about +-2e-4 (m / sqrt(v) = g / |g|): a weight whose tiny gradient
    # changes sign between the devices differs by up to 4e-4; almost all must agree to 1e-5
    w_c, w_g = torch.cat([w.flatten() for w in w_c]), torch.cat([w.flatten() for w in w_g])
    assert (w_g - w_c).abs().max() <= 4e-4 + 1e-6
    assert ((w_g - w_c).abs() > 1e-5).float().mean() < (0.01 if dtype == "float32" else 0.1)
