"""
The policy: loading any Hugging Face causal LM and its tokenizer, the embedded tiny default
(a Llama-shaped model trained from scratch with a character-level tokenizer), its warm start by
supervised training on solver-generated Countdown solutions, per-token log-probs / entropies, and
ICT's per-token JS uniqueness.
"""
import math
import os
import random
import shutil
import time

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from loss import group_uniqueness

# ----------------------------------------------------------------------------- tokenizer
SPECIAL = ["<pad>", "<bos>", "<eos>", "<unk>"]
CHARS = [chr(i) for i in range(32, 127)] + ["\n"]  # printable ASCII and newline


def char_tokenizer():
    """A character-level tokenizer that is a real PreTrainedTokenizerFast, so save_pretrained /
    AutoTokenizer.from_pretrained work on it exactly as on a hub tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {tok: i for i, tok in enumerate(SPECIAL + CHARS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(".|\n"), behavior="isolated")  # one token per char
    tk.decoder = decoders.Fuse()  # join characters back without spaces
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>", padding_side="left")


def tiny_model(tokenizer, n_layer=4, n_embd=128, n_head=4, block_size=128):
    """Randomly initialised Llama-shaped model (about 0.8M parameters at the defaults)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=n_embd, intermediate_size=3 * n_embd,
                      num_hidden_layers=n_layer, num_attention_heads=n_head, num_key_value_heads=n_head,
                      max_position_embeddings=block_size, tie_word_embeddings=True,
                      pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(cfg)


# ----------------------------------------------------------------------------- loading
def load_policy(name_or_path, device="cpu", dtype=torch.float32):
    """Any AutoModelForCausalLM and its tokenizer, by hub name or local path. Tokenizers without a
    pad token get EOS as pad; padding is on the left, which batched generation needs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    name_or_path = os.path.expanduser(name_or_path)
    if name_or_path.startswith((".", "/")) and not os.path.isdir(name_or_path):
        raise SystemExit(f"model path {name_or_path!r} does not exist: give a local directory "
                         f"with config.json or a hub name like 'Qwen/Qwen2.5-0.5B-Instruct'")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype).to(device)
    except OSError as e:  # not found locally and no network: keep HF's reason, drop the traceback
        raise SystemExit(f"could not load {name_or_path!r}: {str(e).splitlines()[0]}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    check_logprobs(model, name_or_path)
    return model, tokenizer


LOGPROB_TOL = 1e-3  # float32 on one input: the two paths agree to ~1e-6 where they compute the same thing


@torch.no_grad()
def check_logprobs(model, name="the model"):
    """Refuses a model whose log-probs are not log_softmax(lm_head(last hidden state)), the assumption of
    _response_hidden (and so of the rollout and training): final-logit soft-capping (Gemma-2) or a logit
    scale (Cohere, Granite) would silently change every log-prob. Compares with the model's own forward
    on a short input, so no list of architectures goes stale."""
    ids = (torch.arange(1, 9, device=model.device) % model.config.vocab_size)[None]  # (1, 8) any tokens
    ones = torch.ones_like(ids)
    hidden, lm_head = _response_hidden(model, ids, ones, 1)  # (1, 7, D): the rows predicting tokens 1..7
    ours = F.log_softmax(_logits(hidden, lm_head, 1.0), -1)  # (1, 7, V)
    own = F.log_softmax(model(input_ids=ids, attention_mask=ones).logits[:, :-1].float(), -1)  # (1, 7, V)
    diff = (ours - own).abs().max().item()
    if not diff <= LOGPROB_TOL:
        raise SystemExit(f"{name}: log_softmax(lm_head(last hidden state)) differs from the model's own "
                         f"log-probs by {diff:.3g} (final-logit soft-capping or a logit scale?); model.py "
                         f"computes log-probs that way, so this architecture is not supported")


# ----------------------------------------------------------------------------- log-probs
MAX_LOGITS_PER_CHUNK = 2 ** 25  # float32 logits held at once: 128 MiB, whatever the vocab size


def _logits(hidden, lm_head, temperature):
    """float32 logits / temperature with autocast off: a bf16 LM head would round logits of ~20-30 by
    ~0.1, and differently in the rollout and the training pass (different batch shapes)."""
    with torch.autocast(hidden.device.type, enabled=False):
        return F.linear(hidden.float(), lm_head.weight.float(),
                        None if lm_head.bias is None else lm_head.bias.float()) / temperature


def _chunk_logp_entropy(hidden, targets, lm_head, temperature):
    logits = _logits(hidden, lm_head, temperature)  # (N, V), one chunk only
    logp_all = F.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, targets[:, None]).squeeze(-1)  # (N,)
    entropy = -(logp_all.exp() * logp_all).sum(-1)  # (N,) full-distribution entropy
    return logp, entropy


def _response_hidden(model, input_ids, attention_mask, n_prompt):
    """Last hidden states (B, T, D) of the rows that predict the T response tokens (row t predicts
    token t), and the LM head. Assumes logits = lm_head(last hidden state), which load_policy checks."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # as HF generate does for left padding
    base = getattr(model, model.base_model_prefix)
    hidden = base(input_ids=input_ids, attention_mask=attention_mask,
                  position_ids=position_ids, use_cache=False).last_hidden_state  # (B, P+T, D)
    return hidden[:, n_prompt - 1:-1], model.get_output_embeddings()


def response_logprobs(model, input_ids, attention_mask, n_prompt, temperature=1.0, batch_size=None):
    """Log-prob of each response token and the entropy of the distribution it was drawn from,
    both at the sampling temperature. input_ids (B, P+T) holds left-padded prompts of length P
    followed by responses of length T. Returns logp (B, T), entropy (B, T).
    The (B, T, V) logits are never materialised: the LM head runs over chunks of rows, and when
    gradients are on each chunk is recomputed in backward (activation checkpointing) instead of
    being stored. Without gradients, `batch_size` rows at a time bound the activation memory
    (with gradients, train.py micro-batches itself)."""
    if batch_size and not torch.is_grad_enabled() and input_ids.shape[0] > batch_size:
        parts = [response_logprobs(model, input_ids[i:i + batch_size], attention_mask[i:i + batch_size],
                                   n_prompt, temperature) for i in range(0, input_ids.shape[0], batch_size)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    hidden, lm_head = _response_hidden(model, input_ids, attention_mask, n_prompt)
    B, T = hidden.shape[:2]
    hidden = hidden.reshape(B * T, -1)  # (B*T, D)
    targets = input_ids[:, n_prompt:].reshape(B * T)  # (B*T,)
    rows = max(1, MAX_LOGITS_PER_CHUNK // lm_head.weight.shape[0])
    logps, ents = [], []
    for i in range(0, B * T, rows):
        args = (hidden[i:i + rows], targets[i:i + rows], lm_head, temperature)
        if torch.is_grad_enabled():
            lp, en = checkpoint(_chunk_logp_entropy, *args, use_reentrant=False)
        else:
            lp, en = _chunk_logp_entropy(*args)
        logps.append(lp)
        ents.append(en)
    return torch.cat(logps).view(B, T), torch.cat(ents).view(B, T)


@torch.no_grad()
def js_uniqueness(model, input_ids, attention_mask, n_prompt, response_mask, G, temperature=1.0):
    """ICT's per-token uniqueness u_{i,t} = JS(pi(.|i,t) || P_avg(.|t)) (loss.group_uniqueness), P_avg
    the mean over the group's alive responses at position t. Returns u (B, T), 0 on dead tokens.
    Needs every response's full next-token distribution, so like response_logprobs it never holds
    (B, T, V): one group at a time (one forward of G rows), and over chunks of positions so that at
    most MAX_LOGITS_PER_CHUNK float32 logits (G, t_chunk, V) exist at once (plus a few temporaries)."""
    B, T = response_mask.shape
    u = torch.zeros(B, T, device=response_mask.device)
    for g in range(0, B, G):  # rows g..g+G-1: one prompt's group
        hidden, lm_head = _response_hidden(model, input_ids[g:g + G], attention_mask[g:g + G], n_prompt)
        t_chunk = max(1, MAX_LOGITS_PER_CHUNK // (G * lm_head.weight.shape[0]))
        for t in range(0, T, t_chunk):
            logits = _logits(hidden[:, t:t + t_chunk], lm_head, temperature)  # (G, t_chunk, V)
            alive = response_mask[g:g + G, t:t + t_chunk]  # (G, t_chunk)
            u[g:g + G, t:t + t_chunk] = group_uniqueness(logits.softmax(-1), alive)
    return u


# ----------------------------------------------------------------------------- warm start
def warm_start(out_dir, problems, steps=2000, batch_size=64, lr=3e-3, seed=0, template="tiny",
               device="cpu", log=print):
    """Supervised warm start of the tiny model, saved with save_pretrained. For Countdown each example
    is one problem with one of its solver solutions drawn uniformly, so a problem with many solutions
    teaches the model many answers: the diversity that RL can later keep or lose. Few enough steps
    that the model is far from solving the task (see README)."""
    import tasks
    from tqdm import tqdm
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = char_tokenizer()
    model = tiny_model(tokenizer).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    eos = tokenizer.eos_token
    t0 = time.time()
    for step in (bar := tqdm(range(steps), desc="warm start", dynamic_ncols=True)):
        batch = rng.sample(problems, batch_size)
        prompts = [tasks.prompt(p, template) for p in batch]
        answers = [tasks.sft_completion(p, rng) + eos for p in batch]
        enc = tokenizer([p + a for p, a in zip(prompts, answers)], return_tensors="pt",
                        padding=True, padding_side="right").to(device)
        labels = enc.input_ids.clone()
        for i, p in enumerate(prompts):  # loss on the answer only, not on the prompt or padding
            labels[i, :len(p)] = -100
        labels[enc.attention_mask == 0] = -100
        for g in opt.param_groups:  # cosine decay to 10%
            g["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        loss = model(**enc, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    tmp = out_dir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)  # a killed warm start never leaves a half-written model behind
    log(f"warm start: {steps} steps in {time.time() - t0:.0f}s, final loss {loss.item():.3f} -> {out_dir}")
