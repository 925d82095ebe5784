"""
GRPO, Differential-Smoothing GRPO (DS-GRPO) and the baselines it is compared with, written to be read
next to ../shared/PAPERS.md. Equation names in the comments (DS-Eq.4, DS-Eq.6, GRPO) are the ones used
there; the token-selection methods (20-Entropy, STAPO/S2T, ICT) are its section 3.

Shapes: B = number of responses in the batch (prompts x G, groups contiguous), T = response length.
  rewards, correct      (B,)    scalar reward r_i, and 1[r_i = 1] as a float
  logp, old_logp        (B, T)  log pi_theta(y_t) (with grad) and log pi_old(y_t) (sampling policy)
  mask                  (B, T)  1 on response tokens (up to and including EOS)
  entropy               (B, T)  H_{i,t} = -sum_v p_v log p_v, next-token distribution at the temperature
  weight                (B, T)  the tokens that get gradient: the mask, or a keep mask (token_weights)
Every function is a few lines; train.py picks the method with `algo`.
"""
import math

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
    beta = gamma_n. L <= 0, so a correct response gets +alpha|L|: more for *unlikely* correct answers,
    which flattens the mass among correct answers (smoothing). An incorrect one gets -beta|L|: every
    wrong answer is pushed down, the unlikely ones hardest, which concentrates what is left of the
    wrong mass (sharpening: an entropy *penalty* on incorrect responses). Note that a likely wrong
    answer is pushed *less* than an unlikely one by this term (log pi near 0), not more.
    Works for L of shape (B,) (sequence forms) or (B, T) (per-token form, with correct[:, None])."""
    return -alpha * correct * L + beta * (1 - correct) * L


def advantages(algo, rewards, correct, old_logp, mask, G, alpha=0.0, beta=0.0, ds_form="seq",
               scale_std=True):
    """Per-token advantages (B, T) for `algo`. Methods that only reweight or mask tokens use the
    plain GRPO advantage here. 'dr-grpo' is GRPO without the std division (Dr.GRPO).
    ds_form (DS-GRPO only) places the DS-Eq.6 term in one of the three ways the authors' code did:
      'seq'    (default) A_i + ds_term(L_i), L_i length-normalised, the same for every token of y_i;
      'token'  A_{i,t} = A_i + ds_term(l_{i,t}), the per-token log-prob instead of L_i;
      'reward' r_i + ds_term(L_i) before group centring, with no std division (their final code)."""
    scale_std = scale_std and algo != "dr-grpo"  # Dr.GRPO: A_i = r_i - mean_j r_j
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


def kl_k3(logp, ref_logp, weight):
    """k3 estimator of KL(pi_theta || pi_ref) per token: exp(q - p) - (q - p) - 1, q = log pi_ref; 0 where
    weight is 0. Those positions (past EOS, or not kept) hold log-probs of padding that nothing bounds:
    exp could overflow there, and aggregate's inf * 0 would make the whole loss NaN, so q - p is zeroed
    before the exponential."""
    d = (ref_logp - logp).masked_fill(weight == 0, 0.0)
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


def normaliser(weight, agg, distributed=False):
    """The batch-level denominator that goes with aggregate(): kept tokens, or sequences. distributed:
    summed over the data-parallel ranks, so the ranks' losses add up to the global batch's loss."""
    n = (weight.sum() if agg == "token-mean" else (weight.sum(-1) > 0).sum()).float()
    if distributed:
        torch.distributed.all_reduce(n)
    return n.clamp(min=1)


def policy_loss(logp, old_logp, adv, weight, denom, agg="token-mean", eps_low=0.2, eps_high=0.2,
                ref_logp=None, kl_coef=0.0):
    """The full GRPO / DS-GRPO objective on one micro-batch:
    L = agg(-min(rho A, clip(rho) A)) + kl_coef * agg(k3 KL to the reference)."""
    loss = aggregate(clipped_surrogate(logp, old_logp, adv, eps_low, eps_high), weight, agg, denom)
    if kl_coef > 0:
        loss = loss + kl_coef * aggregate(kl_k3(logp, ref_logp, weight), weight, agg, denom)
    return loss


# ----------------------------------------------------------------------------- uniform smoothing baselines
def entropy_term(algo, entropy, weight, agg, denom, coef):
    """The uniform heuristics of PAPERS.md section 2, added to the policy loss on ALL tokens:
      'entropy-bonus'    -coef * H_bar  (raises entropy everywhere: diversity, but mass onto wrong answers)
      'entropy-penalty'  +coef * H_bar  (lowers entropy everywhere: correctness, but less diversity)
    H_bar = aggregate(H_{i,t}) with the policy loss's own normaliser, so micro-batches stay exact.
    entropy must be the CURRENT policy's (with grad); any other algo adds 0."""
    sign = {"entropy-bonus": -1.0, "entropy-penalty": 1.0}.get(algo, 0.0)
    if sign == 0.0:
        return torch.zeros((), device=entropy.device)
    return sign * coef * aggregate(entropy, weight, agg, denom)  # -/+ c * H_bar


# ----------------------------------------------------------------------------- token selection (masks)
# Each returns a keep mask (B, T) in {0, 1}: 1 = the token gets gradient. They multiply the plain GRPO
# advantage; the loss normaliser then counts only kept tokens (normaliser(weight, agg)).
# Ties: a token whose score equals the k-th largest is kept too ("score >= threshold"), so a mask can
# keep slightly more than k tokens, never fewer; the result does not depend on the order of the rows.
def _ceil_frac(frac, n):
    """ceil(frac * n) for int or integer tensor n, robust to float error (0.1 * 30 = 3.0000000000000004)."""
    if isinstance(n, int):
        return math.ceil(frac * n - 1e-6)
    return (frac * n.double() - 1e-6).ceil().long()


def entropy_keep_mask(entropy, mask, frac=0.2):
    """20-Entropy: keep the tokens whose H_t is in the top `frac` of ALL response tokens in the batch:
    k = ceil(frac * n_tokens), keep H_{i,t} >= the k-th largest H (ties kept)."""
    keep = mask.bool()
    n = int(keep.sum())
    if n == 0:
        return mask.clone()
    k = max(1, _ceil_frac(frac, n))  # at least one token
    h_k = entropy[keep].topk(k).values[-1]  # the k-th largest entropy in the batch
    return (keep & (entropy >= h_k)).to(mask.dtype)


STAPO_TAU_P = 0.002  # tau_p: "low probability" is pi_old(y_t) < 0.002
STAPO_Q = 0.75  # q for tau_h; one source says 0.8 (PAPERS.md section 3)


def stapo_keep_mask(old_logp, entropy, adv, correct, mask, tau_p=STAPO_TAU_P, q=STAPO_Q):
    """STAPO / S2T: silence the spurious tokens, those with all three of
      A_i > 0,   pi_old(y_{i,t}) < tau_p,   H_{i,t} < tau_h,
    tau_h = the q-quantile of H over the low-probability tokens of CORRECT responses in the batch,
    torch.quantile with its default linear interpolation: with the n values sorted, position q*(n-1),
    interpolated between its two neighbours. No such tokens -> no tau_h -> nothing is silenced.
    adv (B, T) is the plain GRPO advantage (A_i on response tokens)."""
    low_p = mask.bool() & (old_logp.exp() < tau_p)  # pi_old(y_t) < tau_p
    ref = entropy[low_p & (correct[:, None] == 1)]  # H of low-p tokens in correct responses
    if ref.numel() == 0:
        return mask.clone()
    tau_h = torch.quantile(ref.float(), q)  # tau_h = Q_q(H)
    spurious = low_p & (adv > 0) & (entropy < tau_h)
    return mask * (~spurious).to(mask.dtype)


def js_divergence(p, q):
    """JS(p || q) = 1/2 KL(p || m) + 1/2 KL(q || m), m = (p + q) / 2, natural log: in [0, log 2].
    p, q (..., V) probabilities; 0 log 0 = 0 (xlogy), and m > 0 wherever p or q is."""
    m = 0.5 * (p + q)
    kl_pm = (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(-1)  # KL(p || m)
    kl_qm = (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(-1)  # KL(q || m)
    return 0.5 * kl_pm + 0.5 * kl_qm


def group_uniqueness(probs, alive):
    """ICT uniqueness for one group: u_{i,t} = JS(pi(.|i,t) || P_avg(.|t)).
    probs (G, t, V) next-token distributions, alive (G, t) the response mask. Chosen reading: P_avg
    averages over the responses still ALIVE at position t (dead ones are padding, not rollouts), so
    a position with a single alive response has P_avg = pi and u = 0; dead tokens get u = 0."""
    alive = alive.to(probs.dtype)
    p_avg = (probs * alive[..., None]).sum(0) / alive.sum(0).clamp(min=1)[:, None]  # P_avg (t, V)
    return js_divergence(probs, p_avg.expand_as(probs)) * alive  # (G, t)


ICT_FRAC = 0.1  # keep the top 10% of tokens by u, per sequence


def ict_keep_mask(u, mask, frac=ICT_FRAC):
    """ICT: keep, in each sequence, the top k_i = ceil(frac * |y_i|) tokens by u (>= 1 token; ties
    with the k_i-th largest kept). u (B, T) from model.js_uniqueness."""
    alive = mask.bool()
    k = _ceil_frac(frac, alive.sum(-1)).clamp(min=1)  # (B,) k_i
    u_sorted = u.masked_fill(~alive, float("-inf")).sort(-1, descending=True).values  # (B, T)
    u_k = u_sorted.gather(1, (k - 1)[:, None])  # (B, 1) the k_i-th largest u of row i
    return (alive & (u >= u_k)).to(mask.dtype)


def token_weights(algo, mask, entropy=None, old_logp=None, adv=None, correct=None, u=None,
                  top_entropy_frac=0.2, stapo_q=STAPO_Q):
    """The (B, T) weight of every token in the policy loss for `algo`: the keep mask for the token-
    selection methods (computed once per batch, before micro-batching), the response mask otherwise.
    entropy / old_logp are the rollout's (pi_old = the current policy at the first update)."""
    if algo == "20-entropy":
        return entropy_keep_mask(entropy, mask, top_entropy_frac)
    if algo == "stapo":
        return stapo_keep_mask(old_logp, entropy, adv, correct, mask, q=stapo_q)
    if algo == "ict":
        return ict_keep_mask(u, mask)
    return mask
