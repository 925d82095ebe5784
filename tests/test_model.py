"""The policy plumbing on a tiny random model: the character tokenizer, per-token log-probs and
entropies (chunked, with and without grad, under left padding), the response mask, rollout and
load_policy. Everything here runs in a few seconds on CPU."""
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

import model
import rollout as rollout_mod
from countdown import format_prompt
from model import char_tokenizer, load_policy, response_logprobs, tiny_model
from rollout import response_mask_from

PROMPT = format_prompt([3, 5, 7], 22)  # "Use 3 5 7 to make 22.\n"
ANSWER = "<answer>3*5+7</answer>"


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


@pytest.fixture
def tiny(tok):
    torch.manual_seed(0)
    return tiny_model(tok, n_layer=1, n_embd=32, n_head=2).eval()


def batch(tok, prompts, responses):
    """Left-padded prompts followed by equal-length responses: (input_ids, attention_mask, P)."""
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
    resp = torch.tensor([tok(r).input_ids for r in responses])
    ids = torch.cat([enc.input_ids, resp], 1)
    att = torch.cat([enc.attention_mask, torch.ones_like(resp)], 1)
    return ids, att, enc.input_ids.shape[1]


def direct_logprobs(m, ids, att, P, temperature=1.0):
    """The obvious computation: full logits -> log_softmax(logits / temperature) -> gather."""
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    logits = m(input_ids=ids, attention_mask=att, position_ids=pos).logits[:, P - 1:-1].float()
    logp_all = F.log_softmax(logits / temperature, -1)
    logp = logp_all.gather(-1, ids[:, P:, None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


# ============================================================================= tokenizer
def test_char_tokenizer_round_trip(tok):
    text = PROMPT + ANSWER
    ids = tok(text).input_ids
    assert len(ids) == len(text)  # one token per character, no BOS/EOS added
    assert tok.decode(ids) == text
    ids_eos = tok(text + tok.eos_token).input_ids
    assert ids_eos[-1] == tok.eos_token_id and len(ids_eos) == len(text) + 1
    assert tok.decode(ids_eos, skip_special_tokens=True) == text


def test_char_tokenizer_special_ids(tok):
    assert tok.eos_token_id is not None and tok.pad_token_id is not None
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == "left"
    assert len(tok) == len(model.SPECIAL) + len(model.CHARS)


def test_char_tokenizer_save_and_auto_load(tok, tmp_path):
    from transformers import AutoTokenizer
    tok.save_pretrained(tmp_path)
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    texts = [PROMPT + ANSWER, "(8 - 2) * 4 / 3\n", "~!@#$%^&*()_+{}|:\"<>? `"]
    for text in texts:
        assert tok2(text).input_ids == tok(text).input_ids
        assert tok2.decode(tok2(text).input_ids) == text
    assert (tok2.eos_token_id, tok2.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)
    assert len(tok2) == len(tok)


# ============================================================================= response_logprobs
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunked", [False, True])
def test_response_logprobs_equals_direct_no_grad(tok, tiny, monkeypatch, temperature, chunked):
    if chunked:  # 3 rows of logits per chunk: B*T = 2*8 rows -> 6 chunks, the last one short
        monkeypatch.setattr(model, "MAX_LOGITS_PER_CHUNK", 3 * len(tok))
    calls = []
    chunk_fn = model._chunk_logp_entropy
    monkeypatch.setattr(model, "_chunk_logp_entropy", lambda h, *a: calls.append(len(h)) or chunk_fn(h, *a))
    ids, att, P = batch(tok, [PROMPT, "Use 1 2 to make 3.\n"], ["<answer>", "1+2</ans"])
    with torch.no_grad():
        logp, ent = response_logprobs(tiny, ids, att, P, temperature)
    assert calls == ([3, 3, 3, 3, 3, 1] if chunked else [16])  # it really chunks
    with torch.no_grad():
        ref_logp, ref_ent = direct_logprobs(tiny, ids, att, P, temperature)
    assert logp.shape == ent.shape == (2, 8)
    assert_close(logp, ref_logp, rtol=1e-5, atol=1e-5)
    assert_close(ent, ref_ent, rtol=1e-5, atol=1e-5)
    assert (logp <= 0).all() and (ent >= 0).all()


@pytest.mark.parametrize("chunked", [False, True])
def test_response_logprobs_gradients_equal_direct(tok, tiny, monkeypatch, chunked):
    if chunked:
        monkeypatch.setattr(model, "MAX_LOGITS_PER_CHUNK", 3 * len(tok))
    ids, att, P = batch(tok, [PROMPT, "Use 1 2 to make 3.\n"], ["<answer>", "1+2</ans"])
    w = torch.linspace(-1, 1, 16).view(2, 8)  # arbitrary weights so every position matters

    def grads(fn):
        tiny.zero_grad(set_to_none=True)
        logp, ent = fn(tiny, ids, att, P, 0.7)
        assert logp.requires_grad and ent.requires_grad
        ((logp * w).sum() + 0.3 * (ent * w.flip(0)).sum()).backward()
        return {n: p.grad.clone() for n, p in tiny.named_parameters() if p.grad is not None}

    got, ref = grads(response_logprobs), grads(direct_logprobs)
    assert got.keys() == ref.keys() and len(ref) > 0
    for name in ref:
        assert_close(got[name], ref[name], rtol=1e-4, atol=1e-6, msg=name)


def test_left_padding_does_not_change_logprobs(tok, tiny):
    short, long_ = "Use 1 2 to make 3.\n", PROMPT + "Think first.\n"
    resp_short, resp_long = "<answer>1+2</answer>", "<answer>3*5+7</answe"
    ids, att, P = batch(tok, [short, long_], [resp_short, resp_long])
    assert att[0, 0] == 0  # the short prompt really is left-padded
    with torch.no_grad():
        logp, ent = response_logprobs(tiny, ids, att, P)
        for row, (p, r) in enumerate([(short, resp_short), (long_, resp_long)]):
            ids1, att1, P1 = batch(tok, [p], [r])
            assert att1.all()
            logp1, ent1 = response_logprobs(tiny, ids1, att1, P1)
            assert_close(logp[row], logp1[0], rtol=0, atol=1e-5)
            assert_close(ent[row], ent1[0], rtol=0, atol=1e-5)


# ============================================================================= response mask
def test_response_mask_by_hand():
    eos = 2
    ids = torch.tensor([[5, 6, 2, 7, 8],    # EOS in the middle: mask includes it, not truncated
                        [5, 6, 7, 8, 9],    # no EOS: all ones, truncated
                        [2, 5, 2, 6, 7],    # EOS first: only the EOS counts
                        [5, 6, 7, 8, 2]])   # EOS last
    mask, truncated = response_mask_from(ids, eos)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert truncated.tolist() == [False, True, False, False]


def test_response_mask_pad_equals_eos():
    # many hub tokenizers pad with EOS: everything after the first EOS is still padding
    eos = pad = 2
    ids = torch.tensor([[5, 2, pad, pad], [5, 6, 7, pad], [5, 6, 7, 8]])
    mask, truncated = response_mask_from(ids, eos)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    assert truncated.tolist() == [False, False, True]


def test_response_mask_several_end_ids():
    # a chat model ends its turn with <|im_end|> (7) though its tokenizer's EOS is <|endoftext|> (2)
    ids = torch.tensor([[5, 7, 2, 6], [5, 2, 7, 6], [5, 6, 8, 9]])
    mask, truncated = response_mask_from(ids, [2, 7])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert truncated.tolist() == [False, False, True]


def test_end_of_response_ids_joins_tokenizer_and_generation_config():
    from rollout import end_of_response_ids
    tok = char_tokenizer()
    m = tiny_model(tok, n_layer=1, n_embd=32, n_head=2)
    m.generation_config.eos_token_id = [tok.eos_token_id, 7]
    assert end_of_response_ids(m, tok) == sorted({tok.eos_token_id, 7})
    m.generation_config.eos_token_id = None
    assert end_of_response_ids(m, tok) == [tok.eos_token_id]


# ============================================================================= rollout
def eos_biased(m, tok, bias=2.0, token_id=None):
    """Gives the (tied) LM head a bias toward EOS (or token_id) so a random model ends some responses
    early. generate (via forward) and response_logprobs (via get_output_embeddings) both use it."""
    old = m.get_output_embeddings()
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    head.weight = old.weight
    with torch.no_grad():
        head.bias.zero_()
        head.bias[tok.eos_token_id if token_id is None else token_id] = bias
    m.set_output_embeddings(head)
    return m


def test_rollout_shapes_groups_and_logprobs(tok, tiny):
    m = eos_biased(tiny, tok)
    prompts = [PROMPT, "Use 1 2 to make 3.\n"]  # different lengths
    G, max_new = 3, 6
    torch.manual_seed(0)
    m.train()
    ro = rollout_mod.rollout(m, tok, prompts, G, max_new, temperature=1.0)
    assert m.training  # the train/eval mode is restored
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
    P = enc.input_ids.shape[1]
    assert ro.n_prompt == P
    B, L = ro.input_ids.shape
    T = L - P
    assert B == 2 * G and 1 <= T <= max_new
    for x in (ro.response_mask, ro.old_logp, ro.entropy):
        assert x.shape == (B, T)
    assert ro.truncated.shape == (B,) and len(ro.texts) == B
    # groups are contiguous: rows 0..2 hold prompt 0, rows 3..5 prompt 1
    assert torch.equal(ro.input_ids[:G, :P], enc.input_ids[0].expand(G, P))
    assert torch.equal(ro.input_ids[G:, :P], enc.input_ids[1].expand(G, P))
    assert torch.equal(ro.attention_mask[:, :P], enc.attention_mask.repeat_interleave(G, 0))
    assert torch.equal(ro.attention_mask[:, P:], ro.response_mask)
    # the mask is the one response_mask_from gives, and after EOS there is only padding
    resp = ro.input_ids[:, P:]
    mask, trunc = response_mask_from(resp, tok.eos_token_id)
    assert torch.equal(mask, ro.response_mask) and torch.equal(trunc, ro.truncated)
    assert (resp[ro.response_mask == 0] == tok.pad_token_id).all()
    assert not ro.truncated.all()  # with the EOS bias some responses do end (seeded)
    # old_logp / entropy: zero outside the mask, log-probs <= 0 inside
    off = ro.response_mask == 0
    assert (ro.old_logp[off] == 0).all() and (ro.entropy[off] == 0).all()
    assert (ro.old_logp[~off] <= 0).all() and (ro.old_logp[~off] < 0).any()
    # and they are the log-probs of the returned ids under the sampling policy
    with torch.no_grad():
        lp, en = response_logprobs(m, ro.input_ids, ro.attention_mask, P, 1.0)
    assert_close(ro.old_logp, lp * ro.response_mask, rtol=1e-5, atol=1e-5)
    assert_close(ro.entropy, en * ro.response_mask, rtol=1e-5, atol=1e-5)
    # texts are the decoded responses without special tokens
    assert ro.texts == tok.batch_decode(resp, skip_special_tokens=True)


# ============================================================================= load_policy
def test_load_policy_missing_path_is_one_line_exit():
    with pytest.raises(SystemExit) as e:
        load_policy("./no/such/dir")
    msg = str(e.value)
    assert "./no/such/dir" in msg and "\n" not in msg


def test_load_policy_round_trip(tok, tiny, tmp_path):
    tiny.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    m2, tok2 = load_policy(str(tmp_path))
    m2.eval()
    assert tok2.padding_side == "left" and tok2.pad_token_id == tok.pad_token_id
    assert m2.generation_config.pad_token_id == tok.pad_token_id
    ids, att, P = batch(tok, [PROMPT, "Use 1 2 to make 3.\n"], [ANSWER, ANSWER])
    with torch.no_grad():
        assert_close(m2(input_ids=ids, attention_mask=att).logits,
                     tiny(input_ids=ids, attention_mask=att).logits, rtol=0, atol=1e-6)
