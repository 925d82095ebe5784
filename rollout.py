"""
Sampling G responses per prompt with Hugging Face `generate`, and the bookkeeping around it:
the response mask (tokens up to and including the first EOS), truncation flags, and the
log-probs / entropies of the sampled tokens under the sampling policy.
"""
from dataclasses import dataclass

import torch
from transformers import GenerationConfig

from model import response_logprobs


@dataclass
class Rollout:
    input_ids: torch.Tensor  # (B*G, P+T) left-padded prompt followed by the response
    attention_mask: torch.Tensor  # (B*G, P+T) 1 on real prompt tokens and on response tokens
    response_mask: torch.Tensor  # (B*G, T) 1 on response tokens up to and including EOS
    old_logp: torch.Tensor  # (B*G, T) log pi_old(y_t), at the sampling temperature
    entropy: torch.Tensor  # (B*G, T) entropy of pi_old(. | y_<t), at the sampling temperature
    truncated: torch.Tensor  # (B*G,) bool: no EOS within max_new_tokens
    texts: list  # B*G decoded responses, special tokens removed
    n_prompt: int  # P, the padded prompt length


def response_mask_from(response_ids, eos_token_ids):
    """(N, T) ids -> (mask (N, T), truncated (N,)). Everything after the first EOS is padding,
    whatever the pad id is (it may equal EOS, as for many hub tokenizers). eos_token_ids is one id
    or a list (chat models end a turn with e.g. <|im_end|> as well as <|endoftext|>)."""
    eos = torch.as_tensor(eos_token_ids, device=response_ids.device).reshape(-1)
    is_eos = torch.isin(response_ids, eos)  # (N, T)
    after_eos = (is_eos.cumsum(-1) - is_eos.long()) > 0  # strictly after the first EOS
    return (~after_eos).long(), ~is_eos.any(-1)


def end_of_response_ids(model, tokenizer):
    """The tokenizer's EOS plus the model's generation_config EOS ids: a base model's tokenizer may say
    <|endoftext|> while, under its chat template, it ends a turn with <|im_end|> (Qwen2.5-Math)."""
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    return sorted({i for i in (tokenizer.eos_token_id, *ids) if i is not None})


@torch.no_grad()
def rollout(model, tokenizer, prompts, G, max_new_tokens, temperature=1.0, logprob_batch_size=None):
    """Samples G responses for each of the B prompts; responses of prompt b are rows b*G..b*G+G-1,
    so a group is contiguous. Pure sampling from softmax(logits / temperature): no top-k/top-p or
    repetition penalty (hub generation configs often set them), so old_logp is the true
    probability of what was sampled. logprob_batch_size bounds the rows of the log-prob pass."""
    device = next(model.parameters()).device
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left",
                    add_special_tokens=False).to(device)  # prompts are complete (chat template or plain)
    eos_ids = end_of_response_ids(model, tokenizer)
    gen_cfg = GenerationConfig(do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                               max_new_tokens=max_new_tokens, num_return_sequences=G,
                               eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id)
    was_training, hub_cfg = model.training, model.generation_config
    model.eval()
    # generate fills every field we leave unset from model.generation_config (e.g. Qwen-Instruct's
    # repetition_penalty): swap in a blank one so that nothing but temperature shapes the sampling
    model.generation_config = GenerationConfig(eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id)
    try:
        out = model.generate(**enc, generation_config=gen_cfg)  # (B*G, P+T), groups contiguous
    finally:
        model.generation_config = hub_cfg
    n_prompt = enc.input_ids.shape[1]
    response_ids = out[:, n_prompt:]  # (B*G, T)
    response_mask, truncated = response_mask_from(response_ids, eos_ids)
    response_ids = response_ids.masked_fill(response_mask == 0, tokenizer.pad_token_id)
    input_ids = torch.cat([enc.input_ids.repeat_interleave(G, 0), response_ids], 1)
    attention_mask = torch.cat([enc.attention_mask.repeat_interleave(G, 0), response_mask], 1)
    old_logp, entropy = response_logprobs(model, input_ids, attention_mask, n_prompt, temperature,
                                          logprob_batch_size)
    model.train(was_training)
    texts = tokenizer.batch_decode(response_ids, skip_special_tokens=True)
    return Rollout(input_ids, attention_mask, response_mask, old_logp * response_mask,
                   entropy * response_mask, truncated, texts, n_prompt)
