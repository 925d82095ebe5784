"""The decode loop of rollout.generate against HF generate: same tokens with sampling off, and with
sampling on the same tokens for the same seed (so the same distribution); each prompt encoded once."""
import pytest
import torch
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

import rollout as rollout_mod
from countdown import format_prompt
from model import char_tokenizer, tiny_model
from rollout import end_of_response_ids, generate
from test_model import eos_biased

PROMPTS = [format_prompt([3, 5, 7], 22), format_prompt([10, 2], 5), format_prompt([1, 2, 3, 4], 24)]


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def models(tok, bias=3.0):
    torch.manual_seed(0)
    llama = tiny_model(tok, n_layer=2, n_embd=32, n_head=2)
    qwen = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
    # EOS-biased heads: rows finish at different steps, which is where a decode loop can go wrong
    return {"llama": eos_biased(llama, tok, bias).eval(), "qwen2-gqa": eos_biased(qwen, tok, bias).eval()}


def hf_generate(m, tok, enc, G, max_new, do_sample):
    eos = end_of_response_ids(m, tok)
    if do_sample:
        cfg = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new,
                               num_return_sequences=G, eos_token_id=eos, pad_token_id=tok.pad_token_id)
        out = m.generate(**enc, generation_config=cfg)
    else:  # greedy generate refuses num_return_sequences > 1: give it the G copies
        cfg = GenerationConfig(do_sample=False, max_new_tokens=max_new, eos_token_id=eos,
                               pad_token_id=tok.pad_token_id)
        out = m.generate(input_ids=enc.input_ids.repeat_interleave(G, 0),
                         attention_mask=enc.attention_mask.repeat_interleave(G, 0), generation_config=cfg)
    return out[:, enc.input_ids.shape[1]:]


def same_tokens(ours, ref, pad_id):
    """Ours stops at the step where every row has ended; HF may run further, padding only."""
    T = ours.shape[1]
    return torch.equal(ours, ref[:, :T]) and bool((ref[:, T:] == pad_id).all())


@pytest.mark.parametrize("name", ["llama", "qwen2-gqa"])
@pytest.mark.parametrize("do_sample", [False, True])
def test_generate_matches_hf_generate(tok, name, do_sample):
    m = models(tok, 3.0 if do_sample else 0.1)[name]  # greedy, weak bias: rows run to max_new
    enc = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    G, max_new = 4, 12
    torch.manual_seed(123)
    ref = hf_generate(m, tok, enc, G, max_new, do_sample)
    torch.manual_seed(123)  # same seed: multinomial draws the same uniforms, so the same tokens
    ours = generate(m, enc.input_ids, enc.attention_mask, G, max_new, 1.0 if do_sample else 0,
                    end_of_response_ids(m, tok), tok.pad_token_id)[0]
    assert same_tokens(ours, ref, tok.pad_token_id)
    ended = (ours == tok.eos_token_id).any(-1)
    if do_sample:  # some rows end early, some run to max_new: both paths of the loop are exercised
        assert ended.any() and not ended.all()
    else:
        assert ours.shape[1] == max_new


def test_rollout_takes_only_the_eos_ids_of_the_models_generation_config(tok):
    # a hub generation_config sets top_k, top_p, a repetition penalty, its own temperature, ...: the rollout
    # samples from softmax(logits / T) alone, or old_logp would not be the probability of what was sampled,
    # and it takes only the config's EOS ids. The reference: HF generate with all of those settings neutral.
    torch.manual_seed(0)
    stop = tok.convert_tokens_to_ids(">")  # an end-of-response id that only the generation config names
    m = eos_biased(tiny_model(tok, n_layer=2, n_embd=32, n_head=2), tok, 1.5, token_id=stop).eval()
    eos = [tok.eos_token_id, stop]
    m.generation_config.update(do_sample=True, top_k=2, top_p=0.5, repetition_penalty=50.0, temperature=0.1,
                               eos_token_id=eos)
    G, max_new, T = 4, 12, 0.7
    torch.manual_seed(5)
    ro = rollout_mod.rollout(m, tok, PROMPTS, G, max_new, temperature=T)
    ours = ro.input_ids[:, ro.n_prompt:]
    assert (ours == stop).any(-1).any() and not (ours == stop).any(-1).all()  # '>' ended some responses
    m.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=tok.pad_token_id)  # all neutral
    enc = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    cfg = GenerationConfig(do_sample=True, temperature=T, top_k=0, top_p=1.0, repetition_penalty=1.0,
                           max_new_tokens=max_new, num_return_sequences=G, eos_token_id=eos,
                           pad_token_id=tok.pad_token_id)
    torch.manual_seed(5)
    ref = m.generate(**enc, generation_config=cfg)[:, enc.input_ids.shape[1]:]
    assert same_tokens(ours, ref, tok.pad_token_id)


def test_generate_changes_with_the_seed(tok):
    # the check above could pass trivially if sampling were deterministic
    m = models(tok)["llama"]
    enc = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    draws = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        draws.append(generate(m, enc.input_ids, enc.attention_mask, 4, 12, 1.0, [tok.eos_token_id], tok.pad_token_id)[0])
    assert draws[0].shape != draws[1].shape or not torch.equal(*draws)


def test_prompt_encoded_once_per_group(tok):
    # num_return_sequences would run the prefill on B*G rows; we run it on the B prompts once
    m = models(tok)["llama"]
    enc = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    seen = []  # (rows, positions) of every forward of the base model
    hook = m.model.register_forward_hook(lambda mod, args, kwargs, out: seen.append(tuple(kwargs["input_ids"].shape)),
                                         with_kwargs=True)
    generate(m, enc.input_ids, enc.attention_mask, 5, 8, 1.0, [tok.eos_token_id], tok.pad_token_id)
    hook.remove()
    B, P = enc.input_ids.shape
    assert seen[0] == (B, P)  # the prefill: each prompt once
    assert all(shape == (B * 5, 1) for shape in seen[1:])  # then one token per response per step


def test_compiled_decode_step_gives_the_same_tokens_and_keeps_its_cache(tok):
    # compile=True (torch.compile of the decode step; CUDA graphs on a GPU) must not change the result.
    # Its cache's buffers keep their addresses across rollouts (CUDA graphs replay instead of
    # re-recording), and what a previous call wrote must not leak into the next one.
    m = models(tok)["llama"]
    other = tok(PROMPTS[::-1], return_tensors="pt", padding=True, padding_side="left")
    enc = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    assert other.input_ids.shape == enc.input_ids.shape  # same shapes: the same cache is reused
    args = (3, 10, 0, [tok.eos_token_id], tok.pad_token_id)
    plain = generate(m, enc.input_ids, enc.attention_mask, *args)[0]
    generate(m, other.input_ids, other.attention_mask, *args, compile=True)
    cache = m._rollout_cache[1]
    assert torch.equal(generate(m, enc.input_ids, enc.attention_mask, *args, compile=True)[0], plain)
    assert m._rollout_cache[1] is cache


def test_the_uncompiled_rollout_frees_its_cache(tok, monkeypatch):
    # uncompiled, a kept cache buys nothing and would hold (rows x (prompt + max_new_tokens)) keys and
    # values through training (about 17 GB on the math config): it must be gone when generate returns
    import gc
    import weakref
    m = models(tok, 0.1)["qwen2-gqa"]
    enc = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    made = []
    real = rollout_mod._static_cache
    monkeypatch.setattr(rollout_mod, "_static_cache", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    generate(m, enc.input_ids, enc.attention_mask, 3, 10, 0, [tok.eos_token_id], tok.pad_token_id)
    cache = weakref.ref(made.pop())
    gc.collect()
    assert cache() is None and not hasattr(m, "_rollout_cache")


@pytest.mark.parametrize("name", ["llama", "qwen2-gqa"])
@pytest.mark.parametrize("do_sample", [False, True])
def test_generate_under_autocast_matches_hf_generate(tok, name, do_sample, monkeypatch):
    # train.py rolls out under bf16 autocast on a GPU (float32 weights): keys come out float32 and
    # values bfloat16, which a plain StaticCache refuses; the same tokens as HF generate under autocast
    m = models(tok, 3.0 if do_sample else 0.1)[name]
    enc = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    made = []
    real = rollout_mod._static_cache
    monkeypatch.setattr(rollout_mod, "_static_cache", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(7)
        ref = hf_generate(m, tok, enc, 4, 12, do_sample)
        torch.manual_seed(7)
        ours = generate(m, enc.input_ids, enc.attention_mask, 4, 12, 1.0 if do_sample else 0,
                        end_of_response_ids(m, tok), tok.pad_token_id)[0]
    assert made[0].layers[0].keys.dtype == torch.bfloat16
    assert same_tokens(ours, ref, tok.pad_token_id)


def test_a_new_kept_cache_when_the_autocast_dtype_changes(tok):
    # the compiled path's kept cache is keyed by its dtype: a bfloat16 cache from an autocast rollout is
    # not reused (index_copy_ would refuse float32 states) by a float32 one, and vice versa
    m = models(tok, 0.1)["llama"]
    bf16 = rollout_mod._static_cache(m, 6, 40, torch.bfloat16, keep=True)
    assert rollout_mod._static_cache(m, 6, 40, torch.bfloat16, keep=True) is bf16
    f32 = rollout_mod._static_cache(m, 6, 40, torch.float32, keep=True)
    assert f32 is not bf16 and m._rollout_cache[1] is f32 and f32.kv_dtype == torch.float32


@pytest.mark.parametrize("do_sample", [False, True])
def test_looking_for_the_end_every_few_steps_changes_nothing(tok, monkeypatch, do_sample):
    # generate reads whether every row has ended only every DONE_CHECK_EVERY decode steps (each look waits
    # for the GPU); the steps run past the end draw only pads, and the generator is put back. Against a look
    # at every step: the same tokens, the same length, and the generator left where it was (what is drawn
    # next, e.g. the next rollout, is the same). The EOS bias ends every row early, between two looks.
    m = models(tok, 4.0)["llama"]
    enc = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    runs = []
    for every in (1, 3, rollout_mod.DONE_CHECK_EVERY):
        monkeypatch.setattr(rollout_mod, "DONE_CHECK_EVERY", every)
        torch.manual_seed(12)
        out = generate(m, enc.input_ids, enc.attention_mask, 4, 40, 1.0 if do_sample else 0, [tok.eos_token_id],
                       tok.pad_token_id)[0]
        runs.append((out, torch.rand(8)))  # torch.rand: the next draws of the generator
    (ref, ref_next), *others = runs
    assert ref.shape[1] < 40 and ref.shape[1] % rollout_mod.DONE_CHECK_EVERY  # ended between two looks
    for out, after in others:
        assert torch.equal(out, ref) and torch.equal(after, ref_next)
