"""
GRPO, Differential-Smoothing GRPO (DS-GRPO) and the baselines it is compared with, written to be read
next to METHODS.md, which has each method's equation, constants and the readings taken where the papers
are ambiguous. Equation names in the comments (DS-Eq.4, DS-Eq.6) are the ones used there; the uniform
entropy heuristics are its section 4, the token-selection methods (20-Entropy, STAPO/S2T, ICT) section 5.

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
def group_advantages(rewards, G, scale_rewards="group", eps=1e-6):
    """GRPO: A_i = (r_i - mean_j r_j) / (std_j r_j + eps), the std over the group ('group'); 'batch': one std
    over the whole batch's rewards (TRL's scale_rewards='batch'; per rank under torchrun); 'none': no division
    (Dr.GRPO). A group whose rewards are all equal gets A_i = 0: it carries no signal.
    std is the unbiased sample std (as torch.std, TRL and verl compute it)."""
    r = rewards.view(-1, G)  # (B/G, G) one row per prompt
    adv = r - r.mean(-1, keepdim=True)  # r_i - mean_j r_j
    if scale_rewards == "group":
        adv = adv / (r.std(-1, keepdim=True) + eps)  # / (std_j r_j + eps)
    elif scale_rewards == "batch":
        adv = adv / (rewards.std() + eps)  # / (std of all B rewards + eps)
    elif scale_rewards != "none":
        raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none', got {scale_rewards!r}")
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


def advantages(algo, rewards, correct, old_logp, mask, G, alpha=0.0, beta=0.0, ds_form="seq", scale_rewards="group"):
    """Per-token advantages A (B, T) for `algo`, and DS-Eq.6's part of them (B, T), 0 but for DS-GRPO.
    Methods that only reweight or mask tokens use the plain GRPO advantage here; 'dr-grpo' is GRPO without
    the std division (Dr.GRPO). ds_form places the DS-Eq.6 term in one of the three ways the authors' code did:
      'seq'    (default) A_i + ds_term(L_i), L_i length-normalised, the same for every token of y_i;
      'token'  A_{i,t} = A_i + ds_term(l_{i,t}), the per-token log-prob instead of L_i;
      'reward' r_i + ds_term(L_i) before group centring (their final code, with scale_rewards='none'); its part
               is then A(r + ds_term) - A(r).
    Dividing by a std is a separate choice (scale_rewards), so each form can be compared with
    GRPO under the same normalisation. old_logp: pi_old's, the policy that sampled (detached)."""
    scale_rewards = "none" if algo == "dr-grpo" else scale_rewards  # Dr.GRPO: A_i = r_i - mean_j r_j
    grpo = group_advantages(rewards, G, scale_rewards)[:, None] * mask  # (B, T), A_i on every token of y_i
    if algo != "ds-grpo":
        return grpo, torch.zeros_like(mask)
    if ds_form == "seq":
        adv = grpo + ds_term(correct, seq_logprob(old_logp, mask), alpha, beta)[:, None] * mask  # DS-Eq.6
    elif ds_form == "token":
        adv = grpo + ds_term(correct[:, None], old_logp.detach(), alpha, beta) * mask  # DS-Eq.6 per token
    elif ds_form == "reward":
        r_ds = rewards + ds_term(correct, seq_logprob(old_logp, mask), alpha, beta)  # DS-Eq.4 with pi_old
        adv = group_advantages(r_ds, G, scale_rewards)[:, None] * mask  # centred in the group (the authors: no std)
    else:
        raise ValueError(f"ds_form must be 'seq', 'token' or 'reward', got {ds_form!r}")
    return adv, adv - grpo


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


AGGS = ("token-mean", "seq-mean", "constant")


def aggregate(per_token, weight, agg, denom):
    """Sum of per-token losses over a micro-batch divided by the *whole batch's* normaliser `denom`
    (see normaliser), so micro-batches with gradient accumulation give exactly the full-batch loss.
    weight (B, T) is the response mask, or a mask of kept tokens for token-selection methods."""
    if agg in ("token-mean", "constant"):  # (1 / denom) sum_i sum_t; they differ only in denom
        return (per_token * weight).sum() / denom
    if agg == "seq-mean":  # (1 / n_seq) sum_i (1/|y_i|) sum_t  (original GRPO paper)
        return ((per_token * weight).sum(-1) / weight.sum(-1).clamp(min=1)).sum() / denom
    raise ValueError(f"agg must be one of {AGGS}, got {agg!r}")


def normaliser(weight, agg, distributed=False, max_len=None):
    """The batch-level denominator that goes with aggregate():
      'token-mean'  kept tokens, sum_i |y_i|  (GRPO as TRL/verl run it; DAPO)
      'seq-mean'    sequences with a kept token  (the original GRPO paper)
      'constant'    n_seq * max_len, the same whatever the responses' lengths (Dr.GRPO's published
                    form, TRL's loss_type='dr_grpo'): a token's weight no longer depends on how long
                    its response or the batch's responses are. max_len is max_new_tokens.
    distributed: summed over the data-parallel ranks, so the ranks' losses add up to the global batch's."""
    if agg == "token-mean":
        n = weight.sum()
    elif agg == "seq-mean":
        n = (weight.sum(-1) > 0).sum()
    elif agg == "constant":
        n = torch.tensor(weight.shape[0] * max_len, device=weight.device)
    else:
        raise ValueError(f"agg must be one of {AGGS}, got {agg!r}")
    n = n.float()
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
    """The uniform heuristics of METHODS.md section 4, added to the policy loss on ALL tokens:
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


STAPO_TAU_P = 0.002  # tau_p: "low probability" is pi_old(y_t) < 0.002 (q of tau_h is train.py's stapo_q)


def stapo_keep_mask(old_logp, entropy, adv, correct, mask, q, tau_p=STAPO_TAU_P):
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


def ict_keep_mask(u, mask, frac):
    """ICT: keep, in each sequence, the top k_i = ceil(frac * |y_i|) tokens by u (>= 1 token; ties
    with the k_i-th largest kept). u (B, T) from ict.js_uniqueness."""
    alive = mask.bool()
    k = _ceil_frac(frac, alive.sum(-1)).clamp(min=1)  # (B,) k_i
    u_sorted = u.masked_fill(~alive, float("-inf")).sort(-1, descending=True).values  # (B, T)
    u_k = u_sorted.gather(1, (k - 1)[:, None])  # (B, 1) the k_i-th largest u of row i
    return (alive & (u >= u_k)).to(mask.dtype)


def token_weights(algo, mask, entropy=None, old_logp=None, adv=None, correct=None, u=None, *, top_entropy_frac,
                  stapo_q, ict_frac):
    """The (B, T) weight of every token in the policy loss for `algo`: the keep mask for the token-
    selection methods (computed once per batch, before micro-batching), the response mask otherwise.
    entropy / old_logp are the rollout's (pi_old = the current policy at the first update)."""
    if algo == "20-entropy":
        return entropy_keep_mask(entropy, mask, top_entropy_frac)
    if algo == "stapo":
        return stapo_keep_mask(old_logp, entropy, adv, correct, mask, stapo_q)
    if algo == "ict":
        return ict_keep_mask(u, mask, ict_frac)
    return mask


# ----------------------------------------------------------------------------- DASD (self-distillation)
DASD_NORMS = ("batch", "response")


def dasd_advantages(adv, teacher_logp, old_logp, entropy, mask, beta_d=0.1, rho=0.2, norm="batch", eps=1e-6):
    """DASD's per-token advantage (METHODS.md, DASD): A_hat_{i,t} = A_{i,t} + beta_d * omega_{i,t} * dbar_{i,t}.
    The teacher is the policy shown a reference solution, scoring the student's own sampled tokens (dasd.py):
      delta_{i,t} = log pi_teacher(y_t) - log pi_old(y_t)        the teacher - student gap of the sampled token
      dbar = delta / RMS(delta)  over the batch's response tokens (norm='batch') or y_i's (norm='response'):
                                 scaled, not centred, so its sign still says which of the two likes y_t more
      tau_i = the (1 - rho)-quantile of H over y_i's tokens    (torch.quantile's linear interpolation)
      sigma_i = mean_t |H_{i,t} - mean_t H_{i,t}|              (the mean absolute deviation, over y_i's tokens)
      omega = tanh((tau_i - H_t) / sigma_i) * sigmoid(|dbar_t| - 1)
    Below tau_i (all but the top rho of y_i's tokens by entropy) omega > 0 and the term has dbar's sign: raised
    where the teacher likes the token more, lowered where less, i.e. pulled toward the teacher. Above it (the
    high-entropy "forking" tokens) omega < 0: pushed away. The sigmoid gate lets gaps larger than the typical
    one count most. Everything is detached and 0 off the mask; sigma_i = 0 (equal entropies) gives omega = 0.
    Returns A_hat (B, T), dbar (B, T), omega (B, T)."""
    live = mask.bool()
    n = mask.sum(-1, keepdim=True).clamp(min=1)  # (B, 1) |y_i|
    delta = torch.where(live, (teacher_logp - old_logp).detach(), 0.0)  # (B, T) delta
    if norm == "batch":
        rms = (delta.pow(2).sum() / mask.sum().clamp(min=1)).sqrt()  # () over all response tokens
    elif norm == "response":
        rms = (delta.pow(2).sum(-1, keepdim=True) / n).sqrt()  # (B, 1) per response
    else:
        raise ValueError(f"norm must be one of {DASD_NORMS}, got {norm!r}")
    delta_bar = delta / rms.clamp(min=eps)  # dbar; 0 where delta is (an empty hint: the teacher is the student)
    h = torch.where(live, entropy.detach(), 0.0)  # (B, T) H, whatever padding holds
    tau = torch.nanquantile(h.masked_fill(~live, float("nan")), 1 - rho, dim=-1, keepdim=True)  # (B, 1) tau_i
    h_mean = (h * mask).sum(-1, keepdim=True) / n  # (B, 1)
    sigma = ((h - h_mean).abs() * mask).sum(-1, keepdim=True) / n  # (B, 1) sigma_i, the MAD
    omega = torch.tanh((tau - h) / sigma.clamp(min=eps)) * torch.sigmoid(delta_bar.abs() - 1)  # omega
    omega = torch.where(live, omega, 0.0)  # (a row without tokens has tau = nan)
    return adv + beta_d * omega * delta_bar, delta_bar, omega  # A_hat = A + beta_d omega dbar
