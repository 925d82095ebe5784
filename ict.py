"""
ICT's forward pass: the per-token uniqueness that its keep mask (loss.ict_keep_mask) ranks tokens by. It needs
every response's full next-token distribution, which no other step computes, so it is one more no-grad pass
over the batch, here beside the model rather than among the equations of loss.py.
"""
import torch

import loss
import model


@torch.no_grad()
def js_uniqueness(policy, input_ids, attention_mask, n_prompt, response_mask, G, temperature=1.0):
    """ICT's per-token uniqueness u_{i,t} = JS(pi(.|i,t) || P_avg(.|t)) (loss.group_uniqueness), P_avg
    the mean over the group's alive responses at position t. Returns u (B, T), 0 on dead tokens.
    Needs every response's full next-token distribution, so like model.response_logprobs it never holds
    (B, T, V): one group at a time (one forward of G rows), and over chunks of positions so that at
    most MAX_LOGITS_PER_CHUNK float32 logits (G, t_chunk, V) exist at once (plus a few temporaries)."""
    B, T = response_mask.shape
    u = torch.zeros(B, T, device=response_mask.device)
    for g in range(0, B, G):  # rows g..g+G-1: one prompt's group
        hidden, lm_head = model.response_hidden(policy, input_ids[g:g + G], attention_mask[g:g + G], n_prompt)
        t_chunk = max(1, model.MAX_LOGITS_PER_CHUNK // (G * lm_head.weight.shape[0]))
        for t in range(0, T, t_chunk):
            logits = model.scaled_logits(hidden[:, t:t + t_chunk], lm_head, temperature)  # (G, t_chunk, V)
            alive = response_mask[g:g + G, t:t + t_chunk]  # (G, t_chunk)
            u[g:g + G, t:t + t_chunk] = loss.group_uniqueness(logits.softmax(-1), alive)
    return u
