"""
GRPO and Differential-Smoothing GRPO (DS-GRPO), written to be read next to ../shared/PAPERS.md.
Equation names in the comments (DS-Eq.4, DS-Eq.6, GRPO) are the ones used there.

Shapes: B = number of responses in the batch (prompts x G, groups contiguous), T = response length.
  rewards, correct      (B,)    scalar reward r_i, and 1[r_i = 1] as a float
  logp, old_logp        (B, T)  log pi_theta(y_t) (with grad) and log pi_old(y_t) (sampling policy)
  mask                  (B, T)  1 on response tokens (up to and including EOS)
Every function is a few lines; train.py picks the method with `algo`.
"""
import torch


# ----------------------------------------------------------------------------- advantages
def group_advantages(rewards, G, scale_std=True, eps=1e-6):
    """GRPO: A_i = (r_i - mean_j r_j) / (std_j r_j + eps). Dr.GRPO (scale_std=False) drops the std.
    A group whose rewards are all equal gets A_i = 0: it carries no signal.
    std is the unbiased sample std over the G responses (as torch.std, TRL and verl compute it)."""
    r = rewards.view(-1, G)  # (B/G, G) one row per prompt
    adv = r - r.mean(-1, keepdim=True)  # r_i - mean_j r_j
    if scale_std:
        adv = adv / (r.std(-1, keepdim=True) + eps)  # / (std_j r_j + eps)
    return adv.reshape(-1)  # (B,)


def seq_logprob(old_logp, mask):
    """L_i = (1/|y_i|) sum_t l_{i,t}: length-normalised log pi_old(y_i), detached (DS-Eq.6)."""
    return ((old_logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)).detach()  # (B,)


def ds_term(correct, L, alpha, beta):
    """The DS-Eq.6 correction: -gamma_p 1[r_i=1] L_i + gamma_n 1[r_i=0] L_i, with alpha = gamma_p and
    beta = gamma_n. L <= 0, so a correct response gets +alpha|L| (more for *unlikely* correct answers:
    smoothing) and an incorrect one gets -beta|L| (more for *likely* wrong answers: sharpening).
    Works for L of shape (B,) (sequence forms) or (B, T) (per-token form, with correct[:, None])."""
    return -alpha * correct * L + beta * (1 - correct) * L


def advantages(algo, rewards, correct, old_logp, mask, G, alpha=0.0, beta=0.0, ds_form="seq",
               scale_std=True):
    """Per-token advantages (B, T) for `algo`. Methods that only reweight or mask tokens use the
    plain GRPO advantage here.
    ds_form (DS-GRPO only) places the DS-Eq.6 term in one of the three ways the authors' code did:
      'seq'    (default) A_i + ds_term(L_i), L_i length-normalised, the same for every token of y_i;
      'token'  A_{i,t} = A_i + ds_term(l_{i,t}), the per-token log-prob instead of L_i;
      'reward' r_i + ds_term(L_i) before group centring, with no std division (their final code)."""
    if algo == "ds-grpo" and ds_form == "reward":
        r_ds = rewards + ds_term(correct, seq_logprob(old_logp, mask), alpha, beta)  # DS-Eq.4 with pi_old
        adv = group_advantages(r_ds, G, scale_std=False)  # centred within the group, no std
        return adv[:, None] * mask
    adv = group_advantages(rewards, G, scale_std)[:, None] * mask  # (B, T), GRPO
    if algo == "ds-grpo" and ds_form == "seq":
        adv = adv + ds_term(correct, seq_logprob(old_logp, mask), alpha, beta)[:, None] * mask  # DS-Eq.6
    elif algo == "ds-grpo" and ds_form == "token":
        adv = adv + ds_term(correct[:, None], old_logp.detach(), alpha, beta) * mask  # DS-Eq.6 per token
    elif algo == "ds-grpo":
        raise ValueError(f"ds_form must be 'seq', 'token' or 'reward', got {ds_form!r}")
    return adv


# ----------------------------------------------------------------------------- the surrogate
def clipped_surrogate(logp, old_logp, adv, eps_low=0.2, eps_high=0.2):
    """GRPO per-token loss: -min(rho A, clip(rho, 1-eps_low, 1+eps_high) A), rho = pi_theta/pi_old.
    eps_high > eps_low is DAPO's clip-higher. With one gradient step per batch, rho = 1 and this is
    REINFORCE with a group baseline."""
    ratio = torch.exp(logp - old_logp)  # rho_{i,t}
    return -torch.min(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)  # (B, T)


def kl_k3(logp, ref_logp):
    """k3 estimator of KL(pi_theta || pi_ref) per token: exp(q - p) - (q - p) - 1, q = log pi_ref."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1  # (B, T), >= 0


def aggregate(per_token, weight, agg, denom):
    """Sum of per-token losses over a micro-batch divided by the *whole batch's* normaliser `denom`
    (see normaliser), so micro-batches with gradient accumulation give exactly the full-batch loss.
    weight (B, T) is the response mask, or a mask of kept tokens for token-selection methods."""
    if agg == "token-mean":  # (1 / sum_i |y_i|) sum_i sum_t  (GRPO, token-mean)
        return (per_token * weight).sum() / denom
    if agg == "seq-mean":  # (1 / n_seq) sum_i (1/|y_i|) sum_t  (original GRPO paper)
        return ((per_token * weight).sum(-1) / weight.sum(-1).clamp(min=1)).sum() / denom
    raise ValueError(f"agg must be 'token-mean' or 'seq-mean', got {agg!r}")


def normaliser(weight, agg):
    """The batch-level denominator that goes with aggregate(): kept tokens, or sequences."""
    n = weight.sum() if agg == "token-mean" else (weight.sum(-1) > 0).sum()
    return n.clamp(min=1).float()


def policy_loss(logp, old_logp, adv, weight, denom, agg="token-mean", eps_low=0.2, eps_high=0.2,
                ref_logp=None, kl_coef=0.0):
    """The full GRPO / DS-GRPO objective on one micro-batch:
    L = agg(-min(rho A, clip(rho) A)) + kl_coef * agg(k3 KL to the reference)."""
    loss = aggregate(clipped_surrogate(logp, old_logp, adv, eps_low, eps_high), weight, agg, denom)
    if kl_coef > 0:
        loss = loss + kl_coef * aggregate(kl_k3(logp, ref_logp), weight, agg, denom)
    return loss
