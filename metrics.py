"""
The diagnostics a practitioner looks at after each step, and the step's record in out/metrics.jsonl (one line per
step; train.py prints a few of its fields every log_interval steps). Nothing here changes the update.
"""
import torch

from loss import kl_k3


def group_composition(correct, G):
    """Fractions of groups whose G responses are all correct, all wrong, or mixed. Only mixed groups
    carry a GRPO signal; in all-wrong groups DS-GRPO's only term is the beta penalty (sharpening)."""
    right = correct.view(-1, G).sum(-1)  # (B/G,) correct responses per group
    return {"groups_all_correct": (right == G).float().mean().item(),
            "groups_all_wrong": (right == 0).float().mean().item(),
            "groups_mixed": ((right > 0) & (right < G)).float().mean().item()}


def ratio_stats(logp, old_logp, adv, mask, eps_low=0.2, eps_high=0.2):
    """Diagnostics of one update on one micro-batch: sums over its response tokens (train.py divides
    by the step's token count), as a tensor [clipped low, clipped high, KL(pi_old || pi_theta)].
    A token counts as clipped where the clip decides min() and so zeroes its gradient (as TRL counts
    it): rho < 1 - eps_low with A < 0 (low), rho > 1 + eps_high with A > 0 (high). The KL is the k3
    estimate for samples drawn from pi_old: (rho - 1) - log rho = kl_k3 with the two policies swapped.
    With ppo_epochs = 1, rho = 1 up to numerics and all three are ~0."""
    logp, old_logp = logp.detach(), old_logp.detach()
    ratio = torch.exp(logp - old_logp)  # rho_{i,t}
    low = ((ratio < 1 - eps_low) & (adv < 0)).to(mask.dtype)
    high = ((ratio > 1 + eps_high) & (adv > 0)).to(mask.dtype)
    kl = kl_k3(old_logp, logp, mask)  # exp(log rho) - log rho - 1
    return torch.stack([(low * mask).sum(), (high * mask).sum(), (kl * mask).sum()])


def zero_advantage_frac(rewards, G):
    """Fraction of groups whose G rewards are all equal: there GRPO's A_i = 0 for every response, so
    only DS's term (or a KL / entropy term) moves them."""
    r = rewards.view(-1, G)  # (B/G, G)
    return (r.max(-1).values == r.min(-1).values).float().mean()


def format_line(record):
    """The line train.py prints every log_interval steps."""
    r = record
    return (f"step {r['step']}: reward {r['reward']:.3f} | acc {r['accuracy']:.3f} | entropy {r['entropy']:.3f} | "
            f"len {r['response_len']:.1f} | ds {r['ds_abs']:.4f} | kept {r['kept_frac']:.2f} | rollout "
            f"{r['time_rollout']:.2f}s reward {r['time_reward']:.2f}s train {r['time_train']:.2f}s")


def logp_mismatch(sample_logp, train_logp, mask):
    """|log pi_rollout - log pi_train| over response tokens: (mean, max). The same policy scored twice, by the
    sampler (decode step, KV cache) and by the training forward (whole sequence, autocast): what is left is
    numerics, which on a GPU in bf16 can bias the ratio; in float32 on a CPU: mean < 4e-6, max < 1e-4 (SmolLM2-135M)."""
    gap = (sample_logp - train_logp).abs() * mask  # (B, T)
    return (gap.sum() / mask.sum().clamp(min=1)).item(), gap.max().item()


def step_record(step, rewards, correct, mask, entropy, shaping, weight, truncated, update_out, G, device="cpu",
                sample_logp=None):
    """The step's figures from its batch: rewards, correct (B,); mask, pi_old's entropy, weight (B, T); shaping
    (B, T) what DS-Eq.6 (or DASD's teacher term) added to GRPO's advantage, as applied (0 for the other algos);
    truncated (B,) responses cut at max_new_tokens; update_out what update.update returned; sample_logp (B, T)
    the sampler's log-probs (rollout.Rollout), for the rollout/training mismatch."""
    mismatch = logp_mismatch(sample_logp, update_out["logp"], mask) if sample_logp is not None else (0.0, 0.0)
    shaping = (shaping * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (B,) per response, the mean over its tokens
    tok_c, tok_w = mask * correct[:, None], mask * (1 - correct[:, None])  # tokens of correct / wrong responses
    n_c, n_w = max(correct.sum().item(), 1), max((1 - correct).sum().item(), 1)
    clip_low, clip_high, kl_old = (update_out["ratio_sums"] / (mask.sum() * update_out["passes"]).clamp(min=1)).tolist()
    return {
        "step": step, "loss": update_out["loss"], "reward": rewards.mean().item(), "accuracy": correct.mean().item(),
        "entropy": ((entropy * mask).sum() / mask.sum()).item(),
        "response_len": mask.sum(-1).mean().item(), "truncated": truncated.float().mean().item(),
        "ds_abs": shaping.abs().mean().item(), "ds_correct": (shaping * correct).sum().item() / n_c,
        "ds_incorrect": (shaping * (1 - correct)).sum().item() / n_w,
        "kept_frac": (weight.sum() / mask.sum()).item(),  # response tokens that got gradient
        **group_composition(correct, G),  # all-correct / all-wrong / mixed groups: where GRPO has signal
        "entropy_correct": (entropy * tok_c).sum().item() / max(tok_c.sum().item(), 1),
        "entropy_incorrect": (entropy * tok_w).sum().item() / max(tok_w.sum().item(), 1),
        "clip_low": clip_low, "clip_high": clip_high, "kl_old": kl_old,  # fractions of tokens; mean k3 KL
        "zero_adv_groups": zero_advantage_frac(rewards, G).item(),  # all-equal rewards: GRPO A_i = 0
        "grad_norm": update_out["grad_norm"],
        "logp_mismatch_mean": mismatch[0], "logp_mismatch_max": mismatch[1],  # |log pi_rollout - log pi_train|
        **({"mem_peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30}  # a config's peak memory: the largest
           if device.startswith("cuda") else {}),
    }
