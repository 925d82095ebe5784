"""
Step 4 of train.py, the update: optimizer passes over one rollout batch, each over the whole batch in
micro-batches with gradient accumulation, then clipping and one AdamW step. train.py gives the loss of a
micro-batch (`micro_loss`); this file does the mechanics around it:
- micro-batches of rows of similar length (sorted by response length), each cut to its own longest
  response and shortest left padding: the columns cut are padding in every row of the micro-batch, which
  the loss never sees (tests/test_update.py: same loss and gradient), so short responses stop paying for
  long ones;
- data parallelism (parallel.py): DDP all-reduces in the last micro-batch's backward only (no_sync before);
- a loss or gradient norm that is not finite stops the update, decided together on every rank;
- DGG (gate.py): passes after the first over a batch are gated on the LM head's raw gradient.
"""
from contextlib import nullcontext

import torch

import gate
import parallel


def pi_old_is_the_update(algo, passes):
    """Whether pi_old's log-probs can be this update's own (detached), with no forward pass of their own: one
    pass (the weights that sampled are the weights trained), and nothing of pi_old needed before it. Not for
    DS-GRPO (DS-Eq.6's term is part of the advantage, computed from pi_old's log-probs before the update),
    20-Entropy and STAPO (their keep masks use pi_old's entropies and probabilities) nor DASD (its shaped
    advantage needs pi_old's log-probs and entropies); ICT's uniqueness has a pass of its own anyway. (The
    rollout's pass runs in eval mode, the training pass in train mode: the same numbers for models without
    dropout, as every model here; with dropout on, pi_old's separate pass would not match the training pass.)"""
    return passes == 1 and algo not in ("ds-grpo", "20-entropy", "stapo", "dasd")


def micro_batches(mask, attention_mask, n_prompt, size, trim=True):
    """[(rows, first, T)]: the rows of each micro-batch, the first prompt column any of them uses and the
    response length kept. trim: rows by decreasing response length (the longest, most memory-hungry
    micro-batch comes first), columns outside [first, n_prompt + T) cut; else rows in order, nothing cut."""
    B, T_all = mask.shape
    if not trim:
        return [(rows, 0, T_all) for rows in torch.arange(B, device=mask.device).split(size)]
    lengths = mask.sum(-1).long()  # (B,) response tokens, EOS included
    starts = attention_mask[:, :n_prompt].long().argmax(-1)  # (B,) each prompt's first column (left padding)
    order = lengths.argsort(descending=True, stable=True)
    rows_of, length, start = order.tolist(), lengths.tolist(), starts.tolist()  # one wait for the device
    return [(order[i:i + size], min(start[r] for r in rows_of[i:i + size]),
             max(1, max(length[r] for r in rows_of[i:i + size]))) for i in range(0, B, size)]


def update(trained, policy, optimizer, input_ids, attention_mask, n_prompt, mask, micro_loss, *, passes=1,
           micro_batch_size=128, temperature=1.0, grad_clip=1.0, ctx=nullcontext(), world=1, trim=True, dgg=None):
    """`passes` optimizer steps over the batch (ppo_epochs, or DGG's reuse_max), through `trained`
    (parallel.wrap); policy is the model itself (its LM head is what DGG watches).
      input_ids, attention_mask  (B, P+T)  left-padded prompts, then responses;  mask (B, T) response tokens
      micro_loss(rows, T, logp, entropy) -> (loss, ratio_stats): the loss of micro-batch `rows` over its
          first T response tokens, given the current policy's logp, entropy (b, T) with grad
      dgg: None, or (state, tau, window, signal) of gate.decide: then passes after the first are gated.
    Returns {loss, grad_norm, ratio_sums} of the applied passes (loss and grad norm of the last one), passes
    (applied), entropy and logp (B, T): the first pass's, detached (pi_old's: that pass is before any step), and dgg: with DGG, the record's dgg_fired, and dgg_g, dgg_z of the last pass measured (z None
    before the window filled); else empty. Raises FloatingPointError when something is not finite."""
    batches = micro_batches(mask, attention_mask, n_prompt, micro_batch_size, trim)
    out = {"loss": 0.0, "grad_norm": 0.0, "ratio_sums": torch.zeros(3, device=mask.device), "passes": 0, "dgg": {},
           "entropy": torch.zeros_like(mask), "logp": torch.zeros_like(mask)}
    for k in range(passes):
        loss_sum, ratio_sums = 0.0, torch.zeros(3, device=mask.device)
        for i, (rows, first, T) in enumerate(batches):
            cols = slice(first, n_prompt + T)
            with parallel.no_sync(trained, i + 1 < len(batches)):
                with ctx:
                    logp, entropy = trained(input_ids[rows, cols], attention_mask[rows, cols], n_prompt - first,
                                            temperature)  # current policy, with grad: (b, T)
                    objective, stats = micro_loss(rows, T, logp, entropy)
                if k == 0:
                    out["entropy"][rows, :T] = entropy.detach() * mask[rows, :T]
                    out["logp"][rows, :T] = logp.detach() * mask[rows, :T]
                finite = bool(torch.isfinite(objective))
                if world > 1:  # decided together: a rank that left alone would leave the others waiting
                    finite = parallel.all_true(finite, mask.device)
                if not finite:
                    raise FloatingPointError("the loss is not finite" + (" on some rank" if world > 1 else ""))
                # Each rank's loss is its share of the global-batch loss (the normaliser counts the whole
                # global batch), so the global gradient is the SUM of the ranks' gradients; DDP and FSDP
                # average them (divide by world): scaling the loss by world makes their average our sum.
                (objective * world).backward()
            loss_sum += objective.item()
            ratio_sums += stats
        g = gate.lm_head_energy(policy) if dgg else None  # the raw gradient: before clipping (gate.py)
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip if grad_clip > 0 else float("inf"))
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor, the same on every rank
            grad_norm = grad_norm.full_tensor()
        if not torch.isfinite(grad_norm):
            raise FloatingPointError(f"the gradient norm is {grad_norm.item()}")
        fire, z = gate.decide(dgg[0], g, k == 0, *dgg[1:]) if dgg else (False, None)
        if dgg:
            out["dgg"] = {"dgg_fired": fire, "dgg_g": g, "dgg_z": z}
        if fire:  # thrown away, not stepped: a zero gradient would still move AdamW's moments
            optimizer.zero_grad(set_to_none=True)
            break
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        out.update(loss=loss_sum, grad_norm=grad_norm.item(), passes=k + 1)
        out["ratio_sums"] += ratio_sums
    return out
