"""
Sampling G responses per prompt, and the bookkeeping around it: the response mask (tokens up to
and including the first EOS), truncation flags, and the log-probs / entropies of the sampled tokens
under the sampling policy.

Sampling is a short decode loop of our own around the HF model's forward (`generate` below), not
HF `generate`: each prompt is encoded once and its KV cache copied G times (generate's
num_return_sequences re-encodes the prompt G times), the cache is a fixed-size StaticCache, and with
compile=True the one-token decode step is compiled (CUDA graphs on a GPU), which removes most of the
per-step launch overhead that dominates HF generate for small models. Same distribution as HF
generate (with the same seed, the same tokens): softmax(logits / T), no top-k / top-p / repetition
penalty.
"""
import functools
from dataclasses import dataclass

import torch
from transformers import DynamicCache, StaticCache

from model import scaled_logits, response_logprobs


@dataclass
class Rollout:
    input_ids: torch.Tensor  # (B*G, P+T) left-padded prompt followed by the response
    attention_mask: torch.Tensor  # (B*G, P+T) 1 on real prompt tokens and on response tokens
    response_mask: torch.Tensor  # (B*G, T) 1 on response tokens up to and including EOS
    old_logp: torch.Tensor  # (B*G, T) log pi_old(y_t), at the sampling temperature (None: logprobs=False)
    entropy: torch.Tensor  # (B*G, T) entropy of pi_old(. | y_<t), at the sampling temperature (idem)
    truncated: torch.Tensor  # (B*G,) bool: no EOS within max_new_tokens
    texts: list  # B*G decoded responses, special tokens removed
    n_prompt: int  # P, the padded prompt length
    sample_logp: torch.Tensor = None  # (B*G, T) log-probs the sampler drew each token with (decode-time numerics)


def response_mask_from(response_ids, eos_token_ids):
    """(N, T) ids -> (mask (N, T), truncated (N,)). Everything after the first EOS is padding,
    whatever the pad id is (it may equal EOS, as for many hub tokenizers). eos_token_ids is one id
    or a list (chat models end a turn with e.g. <|im_end|> as well as <|endoftext|>)."""
    eos = torch.as_tensor(eos_token_ids, device=response_ids.device).reshape(-1)
    is_eos = torch.isin(response_ids, eos)  # (N, T)
    after_eos = (is_eos.cumsum(-1) - is_eos.long()) > 0  # strictly after the first EOS
    return (~after_eos).long(), ~is_eos.any(-1)


def end_of_turn_id(tokenizer):
    """The special token a chat template closes an assistant turn with (<|im_end|>, <|eot_id|>,
    <end_of_turn>, ...), read off the template itself: render a turn whose content is a marker and
    take the token right after it. None without a template, or when what follows is not a special
    token (a template that ends turns with plain text, or refuses an assistant message)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    marker = "MARKER7319"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "1"},
                                              {"role": "assistant", "content": marker}], tokenize=False)
    except Exception:  # jinja raises whatever the template's author chose
        return None
    if marker not in text:
        return None
    after = tokenizer(text[text.rindex(marker) + len(marker):], add_special_tokens=False).input_ids
    token = tokenizer.added_tokens_decoder.get(after[0]) if after else None
    return after[0] if token is not None and token.special else None


def end_of_response_ids(model, tokenizer):
    """The ids that end a response: the tokenizer's EOS, the model's generation_config EOS ids, and the
    chat template's end-of-turn token. tasks.prompt opens an assistant turn whenever the tokenizer has
    a template, and a base checkpoint may declare only <|endoftext|> as EOS while its template ends a
    turn with <|im_end|> (Qwen2.5-Math): without it the model writes past its turn, invented turns
    get gradient and the reward may read an answer from one."""
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    return sorted({i for i in (tokenizer.eos_token_id, *ids, end_of_turn_id(tokenizer)) if i is not None})


def _decode_step(base, tok, mask, pos, cache):  # one new token per row -> last hidden (N, D)
    return base(input_ids=tok, attention_mask=mask, position_ids=pos, past_key_values=cache,
                use_cache=True).last_hidden_state[:, -1]


@functools.cache
def _compiled_decode_step():  # compiled once per process; dynamo recompiles per new shape by itself
    return torch.compile(_decode_step, mode="reduce-overhead", dynamic=False)


class _StaticCache(StaticCache):
    """A StaticCache whose key and value buffers have one given dtype. Under autocast with float32
    weights an HF model hands its cache float32 keys (the rotary embedding multiplies by float32
    cos/sin) but bfloat16 values, and StaticCache, which sizes both buffers by the keys, would refuse
    the values. Attention casts both to the autocast dtype anyway, so storing them in it loses nothing."""
    def __init__(self, kv_dtype, **kwargs):
        super().__init__(**kwargs)
        self.kv_dtype = kv_dtype

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        return super().update(key_states.to(self.kv_dtype), value_states.to(self.kv_dtype), layer_idx,
                              *args, **kwargs)


def _static_cache(model, N, length, kv_dtype, keep):
    """A StaticCache for N rows of `length` positions. keep=True (the compiled step) keeps one per model,
    reused while (rows, length, dtype) stay the same: the compiled step and its CUDA graphs are tied to
    the cache buffers' addresses, and a new cache each call would re-record them every rollout. Uncompiled,
    reuse buys nothing and a kept cache would hold its memory through training (about 17 GB on the math
    config), so the cache lives for one call."""
    if not keep:
        model.__dict__.pop("_rollout_cache", None)  # one a compiled rollout left behind
        return _StaticCache(kv_dtype, config=model.config, max_cache_len=length)
    key = (N, length, kv_dtype, model.device)
    cache = getattr(model, "_rollout_cache", None)
    if cache is None or cache[0] != key:
        model.__dict__.pop("_rollout_cache", None)  # free the old buffers before allocating new ones
        cache = (key, _StaticCache(kv_dtype, config=model.config, max_cache_len=length))
        model._rollout_cache = cache
    cache[1].reset()  # zero keys/values and the write position; the buffers keep their addresses
    return cache[1]


DONE_CHECK_EVERY = 8  # decode steps between two looks (host syncs) at whether every row has ended


def _rng_state(device):  # the generator multinomial draws from on this device (host-side on a GPU: no sync)
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(device, state):
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


@torch.no_grad()
def generate(model, input_ids, attention_mask, G, max_new_tokens, temperature, eos_ids, pad_id, compile=False):
    """input_ids, attention_mask (B, P): left-padded prompts. Returns (B*G, T) sampled ids, T <=
    max_new_tokens, rows b*G..b*G+G-1 from prompt b; after a row's EOS come pad ids; and (B*G, T) the
    log-prob each id was drawn with (what the sampler saw: log softmax(logits / T), 0 after EOS). temperature=0
    is greedy decoding. The KV cache is a fixed-size StaticCache (fixed shapes, so compile=True can
    torch.compile the decode step, 'reduce-overhead' = CUDA graphs on a GPU; also faster uncompiled
    on a CPU than a growing cache)."""
    B, P = input_ids.shape
    N, device = B * G, input_ids.device
    base, lm_head = getattr(model, model.base_model_prefix), model.get_output_embeddings()
    eos = torch.as_tensor(eos_ids, device=device).reshape(-1)

    def next_token(last_hidden):  # (N, D) -> (N,) sampled ids and the log-probs they were drawn with
        logits = scaled_logits(last_hidden, lm_head, 1.0)  # (N, V) float32, as in training
        probs = torch.softmax(logits / (temperature or 1.0), -1)
        tok = logits.argmax(-1) if temperature == 0 else torch.multinomial(probs, 1).squeeze(-1)
        return tok, probs.gather(-1, tok[:, None]).squeeze(-1).log()

    # prefill: each prompt once, then its keys/values copied to its G rows
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, P), as HF does for left padding
    prefill = DynamicCache(config=model.config)
    hidden = base(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                  past_key_values=prefill, use_cache=True).last_hidden_state[:, -1]  # (B, D)
    hidden = hidden.repeat_interleave(G, 0)  # (N, D)
    autocast = torch.is_autocast_enabled(device.type)  # the dtype attention computes in: the cache's
    kv_dtype = torch.get_autocast_dtype(device.type) if autocast else prefill.layers[0].keys.dtype
    cache = _static_cache(model, N, P + max_new_tokens, kv_dtype, keep=compile)
    for i, layer in enumerate(prefill.layers):  # the same keys/values in fixed (N, heads, P + T, d) buffers
        cache.update(layer.keys.repeat_interleave(G, 0), layer.values.repeat_interleave(G, 0), i)
    # the full-length mask exists from the start (fixed shapes for compile): prompt, then 0 until written
    mask = torch.cat([attention_mask.repeat_interleave(G, 0),
                      attention_mask.new_zeros(N, max_new_tokens)], 1)  # (N, P + max_new_tokens)
    pos = position_ids[:, -1:].repeat_interleave(G, 0)  # (N, 1) position of the last token
    step_fn = _compiled_decode_step() if compile else _decode_step

    out = torch.full((N, max_new_tokens), pad_id, dtype=torch.long, device=device)
    out_logp = torch.zeros(N, max_new_tokens, device=device)  # 0 after a row's EOS
    done = torch.zeros(N, dtype=torch.bool, device=device)
    ended = torch.full((), max_new_tokens - 1, device=device)  # the step at which every row had ended
    rng = []  # the generator's state before each step since the last check
    for t in range(max_new_tokens):
        rng.append(_rng_state(device))
        tok, tok_logp = next_token(hidden)  # (N,), (N,)
        tok = tok.masked_fill(done, pad_id)
        out[:, t], out_logp[:, t] = tok, tok_logp.masked_fill(done, 0.0)
        done |= torch.isin(tok, eos)
        ended = torch.where(done.all() & (ended > t), t, ended)  # on the device: no host sync
        # Reading `ended` waits for the device, so only every DONE_CHECK_EVERY steps: up to that many - 1
        # steps may run after the last row ended, drawing only pads; the generator is then put back to
        # where it stood after the last step needed, so what is drawn next is what it always was.
        if t + 1 == max_new_tokens or (t + 1) % DONE_CHECK_EVERY == 0:
            e = int(ended)  # <= t: every row has ended (always so at the last step)
            if e < t:
                _set_rng_state(device, rng[e + 1 - (t + 1 - len(rng))])  # the state before step e + 1
            if e <= t:
                return out[:, :e + 1], out_logp[:, :e + 1]
            rng.clear()
        mask[:, P + t] = 1
        pos = pos + 1
        if compile:  # the previous step's output (CUDA graph memory) is dead: it was used by next_token
            torch.compiler.cudagraph_mark_step_begin()
        hidden = step_fn(base, tok[:, None], mask, pos, cache)  # the mask covers the whole static cache
    return out, out_logp


@torch.no_grad()
def rollout(model, tokenizer, prompts, G, max_new_tokens, temperature=1.0, logprob_batch_size=None,
            compile=False, logprobs=True):
    """Samples G responses for each of the B prompts; responses of prompt b are rows b*G..b*G+G-1,
    so a group is contiguous. Pure sampling from softmax(logits / temperature), so old_logp is the
    true probability of what was sampled; temperature=0 is greedy decoding, whose old_logp and entropy
    are those of softmax(logits) (T = 1: the greedy point mass would give log-prob 0 and entropy 0,
    which say nothing). logprob_batch_size bounds the rows of the log-prob pass; compile: see generate.
    logprobs=False skips that pass (old_logp and entropy None): train.py's on-policy update takes pi_old's
    log-probs from its own training pass instead (train.py, skip_old_logp)."""
    device = next(model.parameters()).device
    # A chat-templated prompt (tasks.prompt) holds its special tokens already; plain text gets those the
    # tokenizer adds itself: the BOS that Llama, Mistral and Gemma base checkpoints expect (none for
    # Qwen or the tiny character tokenizer).
    add_special_tokens = not getattr(tokenizer, "chat_template", None)
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left",
                    add_special_tokens=add_special_tokens,
                    pad_to_multiple_of=32 if compile else None).to(device)  # few shapes -> few recompiles
    eos_ids = end_of_response_ids(model, tokenizer)
    was_training = model.training
    model.eval()
    response_ids, sample_logp = generate(model, enc.input_ids, enc.attention_mask, G, max_new_tokens, temperature,
                                         eos_ids, tokenizer.pad_token_id, compile)  # (B*G, T), (B*G, T)
    n_prompt = enc.input_ids.shape[1]
    response_mask, truncated = response_mask_from(response_ids, eos_ids)
    response_ids = response_ids.masked_fill(response_mask == 0, tokenizer.pad_token_id)
    input_ids = torch.cat([enc.input_ids.repeat_interleave(G, 0), response_ids], 1)
    attention_mask = torch.cat([enc.attention_mask.repeat_interleave(G, 0), response_mask], 1)
    old_logp = entropy = None
    if logprobs:
        old_logp, entropy = response_logprobs(model, input_ids, attention_mask, n_prompt, temperature or 1.0,
                                              logprob_batch_size)
        old_logp, entropy = old_logp * response_mask, entropy * response_mask
    model.train(was_training)
    texts = tokenizer.batch_decode(response_ids, skip_special_tokens=True)
    return Rollout(input_ids, attention_mask, response_mask, old_logp, entropy, truncated, texts, n_prompt,
                   sample_logp * response_mask)


def join_groups(rollouts, keep, G, pad_id):
    """One Rollout of the kept groups of several (dynamic sampling draws prompts again until enough groups are
    informative). keep[j]: the group indices kept of rollouts[j]. Prompts are left-padded and responses
    right-padded to the longest of them, so positions (from the attention mask) and log-probs are unchanged."""
    P = max(ro.n_prompt for ro in rollouts)
    T = max(ro.response_mask.shape[1] for ro in rollouts)
    parts = {k: [] for k in ("input_ids", "attention_mask", "response_mask", "old_logp", "entropy", "sample_logp",
                             "truncated")}
    texts = []
    for ro, groups in zip(rollouts, keep):
        rows = torch.tensor([g * G + i for g in groups for i in range(G)], dtype=torch.long,
                            device=ro.input_ids.device)
        left, right = P - ro.n_prompt, T - ro.response_mask.shape[1]
        pad = torch.nn.functional.pad
        parts["input_ids"].append(pad(ro.input_ids[rows], (left, right), value=pad_id))
        parts["attention_mask"].append(pad(ro.attention_mask[rows], (left, right)))
        parts["response_mask"].append(pad(ro.response_mask[rows], (0, right)))
        for k in ("old_logp", "entropy", "sample_logp"):  # None when the rollout skipped its log-prob pass
            parts[k].append(None if getattr(ro, k) is None else pad(getattr(ro, k)[rows], (0, right)))
        parts["truncated"].append(ro.truncated[rows])
        texts += [ro.texts[r] for r in rows.tolist()]
    joined = {k: None if any(v is None for v in vs) else torch.cat(vs) for k, vs in parts.items()}
    return Rollout(**joined, texts=texts, n_prompt=P)


def dynamic_sample(draw, sample, n_groups, G, max_draws, pad_id):
    """DAPO's dynamic sampling: a group whose rewards are all equal has zero advantage, so no GRPO signal. It is
    dropped, and draw() gives more problems, sample(problems) -> (Rollout, rewards (len * G,)) their groups, until
    n_groups groups are informative or max_draws draws are spent; at the bound the step goes on with what it has
    (all of the last draw if nothing was informative). Returns (problems, Rollout, rewards, log): the kept groups
    in the order drawn, and the prompts drawn, the groups kept and whether the bound was hit, for the step's log."""
    rollouts, keep, kept, kept_rewards, drawn = [], [], [], [], 0
    for _ in range(max_draws):
        problems = draw()
        ro, rewards = sample(problems)
        drawn += len(problems)
        by_group = rewards.view(-1, G)  # (len(problems), G)
        informative = [g for g in range(len(problems)) if by_group[g].min() < by_group[g].max()]
        informative = informative[:n_groups - len(kept)]
        rollouts.append(ro), keep.append(informative), kept_rewards.append(by_group[informative].reshape(-1))
        kept += [problems[g] for g in informative]
        if len(kept) == n_groups:
            break
    log = {"prompts_drawn": drawn, "groups_kept": len(kept), "draw_bound_hit": float(len(kept) < n_groups)}
    if not kept:
        return problems, ro, rewards, log
    return kept, join_groups(rollouts, keep, G, pad_id), torch.cat(kept_rewards), log
