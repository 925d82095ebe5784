"""
Dynamic Gradient Gating (DGG, arXiv 2605.19425; METHODS.md section 9), as pure functions on a small state.
Each rollout batch is reused for up to `reuse_max` optimizer passes; after every backward the LM head's raw
gradient is measured, and a pass whose gradient looks abnormal against the recent ones is thrown away
(no optimizer step) and ends the reuse of that batch. update.py calls `decide` once per pass.

  g_t  = ||grad of the LM head weight||^2           the gradient's "energy", before clipping
  s_t  = g_t ('energy')  or  g_t - g_prev ('delta')   the watched signal; g_prev: the last applied pass's g
  z_t  = (s_t - mean(W)) / std(W)                     W: the signals of the last `size` applied passes
  fire = not the batch's first pass, W full, z_t > tau

Readings (the paper was read in its abstract and secondary summaries only):
- before clipping: clipping rescales every gradient to norm <= grad_clip, which flattens exactly the
  spikes the gate is meant to see, and ties the LM head's share to the other parameters' norm;
- tied embeddings (the tiny model, small Qwen2.5): the LM head weight is the input embedding, and its
  gradient holds both uses; we watch that gradient as it is (no hook separates the two);
- a gated gradient never enters the window (an outlier would widen std and dull the gate for the next
  `size` passes); one-sided: only z > tau fires (a sudden rise), a drop never does;
- the window runs across batches: first passes (never gated) enter it too.
"""
import math


def new_state():
    """The gate's memory, saved in checkpoints: the window of recent signals and the last applied g."""
    return {"window": [], "prev": None}


def lm_head_energy(policy):
    """g = squared norm of the LM head weight's gradient (float32 sum of squares; under FSDP the shards'
    partial sums are added up on every rank, a collective). The raw gradient: call it before clipping."""
    g = policy.get_output_embeddings().weight.grad.detach().float().pow(2).sum()
    if hasattr(g, "full_tensor"):  # FSDP: a DTensor holding each rank's partial sum
        g = g.full_tensor()
    return g.item()


def zscore(window, s):
    """(s - mean) / std of the window, std unbiased (as torch.std), floored at 1e-12 (a constant window)."""
    mu = sum(window) / len(window)
    sd = math.sqrt(sum((x - mu) ** 2 for x in window) / (len(window) - 1))
    return (s - mu) / max(sd, 1e-12)


def decide(state, g, first, tau, size, signal="energy"):
    """One pass's verdict: (fire, z). z is None while the window holds fewer than `size` signals (or for the
    'delta' signal of the very first pass, which has no predecessor); then nothing fires. The first pass
    over a batch never fires. A pass that does not fire is applied: its signal enters the window."""
    s = g if signal == "energy" else None if state["prev"] is None else g - state["prev"]
    z = zscore(state["window"], s) if s is not None and len(state["window"]) >= size else None
    fire = not first and z is not None and z > tau
    if not fire:
        if s is not None:
            state["window"] = (state["window"] + [s])[-size:]
        state["prev"] = g
    return fire, z
