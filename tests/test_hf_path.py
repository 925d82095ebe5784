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


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    path = str(tmp_path_factory.mktemp("tiny-qwen2"))
    corpus = [p["question"] + " " + math_task.solution_text(p) for p in math_task.generate_math_problems(300)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>")  # no pad token, like many hub tokenizers
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(path)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(path)
    return path


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
    text = tasks.prompt(p, "instruct", tok)
    assert text.startswith("<|im_start|>user\nTom has 3 pens.") and text.endswith("<|im_start|>assistant\n")
    assert math_task.MATH_INSTRUCTION in text
    assert tasks.prompt(p, "instruct", None) == "Tom has 3 pens. How many? " + math_task.MATH_INSTRUCTION


def test_two_train_steps_on_random_qwen2(qwen_dir, tmp_path):
    out = str(tmp_path / "run")
    args = [f"--init_from={qwen_dir}", f"--out_dir={out}", "--task=math", "--template=instruct", "--max_steps=2",
            "--prompts_per_step=2", "--group_size=2", "--max_new_tokens=8", "--n_problems=200",
            "--eval_problems=2", "--eval_n=2", "--final_eval_n=2", "--gradient_checkpointing=True",
            "--kl_coef=0.05", "--micro_batch_size=3"]
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
