"""The real-model path, offline: a tiny *random* Qwen2-architecture model and a real byte-level BPE
tokenizer (trained here with `tokenizers`, with a chat template and no pad token), saved to a temp
dir and loaded through the same from_pretrained code a user hits with a hub name."""
import json
import os
import subprocess
import sys

import pytest
import torch

import math_task
import tasks
from model import load_policy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHAT_TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def bpe_tokenizer(eos_token, chat_template=CHAT_TEMPLATE, bos_token=None):
    """A byte-level BPE tokenizer trained on generated math text, with Qwen's special tokens (and <s>,
    </s>), no pad token like many hub tokenizers; with bos_token it puts that token before any text,
    as Llama, Mistral and Gemma tokenizers do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    corpus = [p["question"] + " " + math_task.solution_text(p) for p in math_task.generate_math_problems(300)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bos_token:
        bpe.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A", special_tokens=[(bos_token, bpe.token_to_id(bos_token))])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=eos_token, bos_token=bos_token)
    tok.chat_template = chat_template
    return tok


def save_qwen2(path, tok):
    """A tiny random Qwen2 whose config and generation config declare the tokenizer's EOS."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    tok.save_pretrained(path)
    Qwen2ForCausalLM(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return save_qwen2(str(tmp_path_factory.mktemp("tiny-qwen2")), bpe_tokenizer("<|im_end|>"))


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """Like Qwen2.5-Math-1.5B: <|endoftext|> is the EOS of the tokenizer, the config and the generation
    config, while the chat template (which tasks.prompt applies) ends a turn with <|im_end|>."""
    return save_qwen2(str(tmp_path_factory.mktemp("tiny-qwen2-base")), bpe_tokenizer("<|endoftext|>"))


def test_load_policy_gives_a_pad_token_and_left_padding(qwen_dir):
    model, tok = load_policy(qwen_dir)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert tok.pad_token is not None and tok.padding_side == "left"


def test_a_tokenizer_without_pad_token_gets_eos(tmp_path):
    from model import char_tokenizer, tiny_model
    tok = char_tokenizer()
    model = tiny_model(tok, n_layer=1, n_embd=32, n_head=2)
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    _, loaded = load_policy(str(tmp_path))
    assert loaded.pad_token == loaded.eos_token == "<eos>"


def test_prompt_uses_the_chat_template_when_there_is_one(qwen_dir):
    _, tok = load_policy(qwen_dir)
    p = {"question": "Tom has 3 pens. How many?", "answer": "3"}
    text = tasks.prompt("math", p, "instruct", tok)
    assert text.startswith("<|im_start|>user\nTom has 3 pens.") and text.endswith("<|im_start|>assistant\n")
    assert math_task.MATH_INSTRUCTION in text
    assert tasks.prompt("math", p, "instruct", None) == "Tom has 3 pens. How many? " + math_task.MATH_INSTRUCTION


def test_two_train_steps_on_random_qwen2(qwen_dir, tmp_path):
    out = str(tmp_path / "run")
    args = [f"--init_from={qwen_dir}", f"--out_dir={out}", "--task=math", "--template=instruct", "--max_steps=2",
            "--prompts_per_step=2", "--group_size=2", "--max_new_tokens=8", "--n_problems=200", "--val_problems=0",
            "--eval_problems=2", "--eval_n=2", "--final_eval_n=2", "--gradient_checkpointing=True",
            "--kl_coef=0.05", "--micro_batch_size=3", "--beta=0.1"]  # DS's penalty (the default beta is 0): a step moves the weights even when every response is wrong
    p = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    steps = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl")) if '"step"' in line]
    assert [r["step"] for r in steps] == [1, 2] and all(r["response_len"] > 0 for r in steps)
    ckpt = os.path.join(out, "ckpt")
    assert os.path.exists(os.path.join(ckpt, "model.safetensors"))  # loadable by vLLM / transformers
    model, tok = load_policy(ckpt)
    before, _ = load_policy(qwen_dir)
    assert type(model).__name__ == "Qwen2ForCausalLM" and tok.chat_template == CHAT_TEMPLATE
    changed = any(not torch.equal(a, b) for a, b in zip(model.parameters(), before.parameters()))
    assert changed, "two RL steps left every parameter unchanged"


def test_a_base_checkpoint_stops_at_the_end_of_its_turn(base_dir):
    # the model favours <|im_end|>, which its EOS is not: each response is over at its first <|im_end|>,
    # and what a base model writes after it (invented turns) never reaches the mask or the reward
    from rollout import end_of_response_ids, rollout
    from test_model import eos_biased
    model, tok = load_policy(base_dir)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token == "<|endoftext|>" and model.generation_config.eos_token_id == tok.eos_token_id != im_end
    assert end_of_response_ids(model, tok) == sorted([tok.eos_token_id, im_end])
    eos_biased(model, tok, 3.0, token_id=im_end)
    prompts = [tasks.prompt("math", p, "instruct", tok) for p in math_task.generate_math_problems(2)]
    torch.manual_seed(0)
    ro = rollout(model, tok, prompts, 4, 16)
    response = ro.input_ids[:, ro.n_prompt:]  # (8, T)
    ended = (response == im_end).any(-1)
    assert ended.any() and not ended.all()  # some rows end early, some run to the limit
    assert torch.equal(ro.truncated, ~ended)  # a row that wrote <|im_end|> is finished, not truncated
    first = torch.where(ended, (response == im_end).long().argmax(-1), response.shape[1] - 1)
    assert torch.equal(ro.response_mask.sum(-1), first + 1)  # the mask ends at the first <|im_end|>


def test_plain_prompts_get_the_bos_their_tokenizer_adds(tmp_path):
    # a Llama/Mistral/Gemma-style base checkpoint without a chat template: its tokenizer puts <s> before
    # text, and the model was trained to see it; the plain-text prompt must start with it, once
    from transformers import LlamaConfig, LlamaForCausalLM
    from rollout import rollout
    tok = bpe_tokenizer("</s>", chat_template=None, bos_token="<s>")
    tok.save_pretrained(tmp_path)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, bos_token_id=tok.bos_token_id,
                                 eos_token_id=tok.eos_token_id)).save_pretrained(tmp_path)
    model, tok = load_policy(str(tmp_path))
    problems = math_task.generate_math_problems(3)
    prompts = [tasks.prompt("math", p, "instruct", tok) for p in problems]
    assert not prompts[0].startswith("<s>")  # plain text, as a base model reads it
    ro = rollout(model, tok, prompts, 2, 4)
    prompt_ids = ro.input_ids[:, :ro.n_prompt]
    first_real = ro.attention_mask[:, :ro.n_prompt].argmax(-1)  # (6,) left padding comes first
    assert (prompt_ids.gather(1, first_real[:, None]) == tok.bos_token_id).all()
    assert ((prompt_ids == tok.bos_token_id).sum(-1) == 1).all()  # one BOS, not two
    # a chat-templated prompt carries its own special tokens: nothing is added to it
    qwen_tok = bpe_tokenizer("<|im_end|>", bos_token="<s>")  # the same vocabulary, with a template
    qwen_tok.pad_token = qwen_tok.eos_token
    text = tasks.prompt("math", problems[0], "instruct", qwen_tok)
    ro = rollout(model, qwen_tok, [text], 2, 4)
    assert tok.bos_token_id not in ro.input_ids[0, :ro.n_prompt].tolist()


ARCHS = {  # name: (model class, config class, the setting that changes the log-probs, the neutral one)
    "gemma2": ("Gemma2ForCausalLM", "Gemma2Config", {"final_logit_softcapping": 5.0}, {"final_logit_softcapping": None}),
    "cohere": ("CohereForCausalLM", "CohereConfig", {"logit_scale": 0.0625}, {"logit_scale": 1.0}),
    "granite": ("GraniteForCausalLM", "GraniteConfig", {"logits_scaling": 8.0}, {"logits_scaling": 1.0}),
}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_a_model_with_other_log_probs_is_refused_at_load_time(tmp_path, arch):
    # Gemma-2 soft-caps its final logits, Cohere and Granite scale them: their log-probs are not
    # log_softmax(lm_head(last hidden state)), which the rollout and training compute, so every log-prob
    # would be silently wrong. load_policy compares with the model's own forward and refuses.
    import transformers
    from model import char_tokenizer
    tok = char_tokenizer()
    model_cls, config_cls, scaled, neutral = ARCHS[arch]
    shape = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                 num_attention_heads=2, num_key_value_heads=2, head_dim=16,
                 initializer_range=0.5,  # logits of a few units, as a trained model's: the cap bites
                 pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    for setting, refused in ((scaled, True), (neutral, False)):
        torch.manual_seed(0)
        getattr(transformers, model_cls)(getattr(transformers, config_cls)(**shape, **setting)).save_pretrained(tmp_path)
        tok.save_pretrained(tmp_path)
        if not refused:  # the same architecture with the scale off loads: the check compares, not by name
            load_policy(str(tmp_path))
            continue
        with pytest.raises(SystemExit) as e:
            load_policy(str(tmp_path))
        assert "differs from the model's own log-probs" in str(e.value) and "\n" not in str(e.value)
