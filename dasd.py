"""
DASD's teacher (Direction-Adaptive Self-Distillation, arXiv 2605.22263; METHODS.md, DASD): the policy itself,
shown privileged context (the prompt plus a hint: one solver solution for Countdown, the reference answer for
math; tasks.hinted_prompt), scoring the tokens the student sampled without it. One no-grad forward of the
policy over [hinted prompt + the student's response] gives log pi_teacher(y_t) for the same tokens as
ro.old_logp; loss.dasd_advantages turns the gap into the per-token advantage.

Reading: the teacher has the *current* weights (the policy at the start of the step, which sampled the
batch), not a frozen copy: no second model in memory, and the teacher improves with the student, as in
self-distillation. Its cost is one more log-prob pass over the batch, with prompts a hint longer.
"""
import random
import time

import torch

import loss
import tasks
from model import response_logprobs


def teacher_prompts(task, batch, template, tokenizer, rng):
    """One hinted prompt per problem (its G responses share it): a solution drawn by rng (Countdown), so
    that over the run the teacher does not pull every group toward the same one of several answers."""
    return [tasks.hinted_prompt(task, p, template, tokenizer, tasks.hint(task, p, rng)) for p in batch]


@torch.no_grad()
def teacher_logprobs(model, tokenizer, prompts, ro, G, temperature=1.0, batch_size=None):
    """log pi_teacher(y_{i,t}) (B, T), aligned with ro.old_logp: the policy's log-probs of the rollout's
    response tokens after prompts[b] (for rows b*G..b*G+G-1) instead of the prompt they were sampled from;
    0 past each response's end. The hinted prompts are left-padded to their own length P' and the responses
    (ro.input_ids[:, n_prompt:], padded after EOS) follow, so response_logprobs reads them at P'. Tokenised
    as rollout tokenises prompts, so with the same prompts (an empty hint) this is ro.old_logp exactly."""
    device = ro.input_ids.device
    add_special_tokens = not getattr(tokenizer, "chat_template", None)  # as rollout.rollout
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left",
                    add_special_tokens=add_special_tokens).to(device)
    n_hinted = enc.input_ids.shape[1]  # P'
    input_ids = torch.cat([enc.input_ids.repeat_interleave(G, 0), ro.input_ids[:, ro.n_prompt:]], 1)  # (B, P'+T)
    attention_mask = torch.cat([enc.attention_mask.repeat_interleave(G, 0), ro.attention_mask[:, ro.n_prompt:]], 1)
    was_training = model.training
    model.eval()  # as for the rollout's old_logp
    teacher_logp, _ = response_logprobs(model, input_ids, attention_mask, n_hinted, temperature, batch_size)
    model.train(was_training)
    return teacher_logp * ro.response_mask  # (B, T)


def shaped_advantages(model, tokenizer, task, problems, template, sampled, adv, mask, G, temperature, batch_size,
                      beta_d, rho, norm, seed, step):
    """DASD's step 3: the teacher scores the sampled tokens, and loss.dasd_advantages shapes the advantage.
    Returns A_hat (B, T), the teacher term beta_d * omega * dbar (B, T), and the step's figures (metrics)."""
    t0 = time.time()
    hinted = teacher_prompts(task, problems, template, tokenizer, random.Random(f"{seed}:{step}"))
    teacher_logp = teacher_logprobs(model, tokenizer, hinted, sampled, G, temperature, batch_size)
    adv, delta_bar, omega = loss.dasd_advantages(adv, teacher_logp, sampled.old_logp, sampled.entropy, mask, beta_d,
                                                 rho, norm)
    return adv, beta_d * omega * delta_bar, metrics(teacher_logp, sampled.old_logp, delta_bar, omega, mask,
                                                    time.time() - t0)


def metrics(teacher_logp, old_logp, delta_bar, omega, mask, seconds):
    """The step's DASD figures, means over response tokens: |dbar|, the shares pulled toward the teacher
    (omega > 0) and pushed from it (omega < 0), the raw teacher - student log-prob gap, and the teacher
    pass's time (also inside time_train)."""
    n = mask.sum().clamp(min=1)
    return {"dasd_delta_abs": ((delta_bar.abs() * mask).sum() / n).item(),
            "dasd_pulled": (((omega > 0) * mask).sum() / n).item(),
            "dasd_pushed": (((omega < 0) * mask).sum() / n).item(),
            "dasd_gap": (((teacher_logp - old_logp) * mask).sum() / n).item(),
            "time_teacher": seconds}
