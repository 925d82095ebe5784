"""LoRA (--lora_rank > 0) end to end on the tiny model and on the random Qwen2 of test_hf_path: only the
adapter trains and is checkpointed, a resumed run continues exactly where it stopped, torchrun ranks stay
identical, and merge_lora.py writes a plain model that transformers loads and that computes what base +
adapter computed."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

from model import load_policy, shipped_base
from test_ddp import torchrun
from test_hf_path import CHAT_TEMPLATE, qwen_dir  # noqa: F401 (a fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--init_from=tiny", "--warmstart_steps=30", "--prompts_per_step=2", "--group_size=3", "--n_problems=300", "--eval_problems=3",
        "--eval_n=2", "--final_eval_n=2", "--max_new_tokens=12", "--eval_interval=100", "--ckpt_interval=1",
        "--lora_rank=4", "--lora_alpha=8", "--lr=1e-2",
        "--beta=0.1"]  # DS's penalty (the default beta is 0): a step moves the weights even when every response is wrong


def run(script, *args, check=True):
    p = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return p


def adapter(ckpt):
    return load_file(os.path.join(ckpt, "adapter_model.safetensors"))


def logits(model, ids):
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def test_lora_tiny_resume_is_exact_and_merge_loads(tmp_path):
    # two runs from the shipped base: a = 2 steps then resumed to 3, b = 3 steps in one go
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    run("train.py", f"--out_dir={a}", "--max_steps=2", *TINY)
    ckpt = os.path.join(a, "ckpt")
    assert sorted(f for f in os.listdir(ckpt) if "safetensors" in f) == ["adapter_model.safetensors"]  # no base copy
    weights = adapter(ckpt)
    assert weights and all(k.startswith("base_model.model.") and ".lora_" in k for k in weights)
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)  # B starts at 0: it trained
    # resumed to step 3 it equals b (evaluations only at 0 and at the end, so the random streams line
    # up): it continued from the saved adapter and optimizer state, not from a fresh adapter
    run("train.py", f"--out_dir={a}", "--init_from=resume", "--max_steps=3")
    run("train.py", f"--out_dir={b}", "--max_steps=3", *TINY)
    resumed, straight = adapter(ckpt), adapter(os.path.join(b, "ckpt"))
    assert resumed.keys() == straight.keys()
    for k in straight:
        assert_close(resumed[k], straight[k], rtol=0, atol=1e-6, msg=k)
    assert any(not torch.equal(resumed[k], weights[k]) for k in weights)  # step 3 changed the adapter

    # merged: a plain save_pretrained model that transformers loads, equal to base + adapter
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    merged_dir = str(tmp_path / "merged")
    run("merge_lora.py", f"--ckpt={ckpt}", f"--out={merged_dir}")
    assert os.path.exists(os.path.join(merged_dir, "model.safetensors"))
    assert not os.path.exists(os.path.join(merged_dir, "adapter_config.json"))
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    base = AutoModelForCausalLM.from_pretrained(shipped_base(0))
    ids = torch.tensor([[5, 60, 70, 80, 90, 17, 23]])
    base_logits = logits(base, ids)
    with_adapter = logits(PeftModel.from_pretrained(base, ckpt), ids)
    assert_close(logits(merged, ids), with_adapter, rtol=1e-5, atol=1e-5)
    assert (with_adapter - base_logits).abs().max() > 1e-3  # the adapter does something
    assert_close(logits(load_policy(ckpt)[0], ids), with_adapter, rtol=1e-5, atol=1e-5)  # what eval.py loads


def test_lora_on_random_qwen2_then_merge(qwen_dir, tmp_path):  # noqa: F811
    out = str(tmp_path / "run")
    run("train.py", f"--init_from={qwen_dir}", f"--out_dir={out}", "--task=math", "--template=instruct",
        "--max_steps=2", "--prompts_per_step=2", "--group_size=2", "--max_new_tokens=8", "--n_problems=200", "--val_problems=0",
        "--eval_problems=2", "--eval_n=2", "--final_eval_n=2", "--gradient_checkpointing=True", "--kl_coef=0.05",
        "--micro_batch_size=3", "--lora_rank=2", "--lora_alpha=4", "--lora_target_modules=q_proj,v_proj",
        "--lr=1e-2", "--beta=0.1")
    ckpt = os.path.join(out, "ckpt")
    weights = adapter(ckpt)
    # only the named modules got adapters: 2 layers x (q_proj, v_proj) x (A, B)
    assert len(weights) == 8 and all(".q_proj." in k or ".v_proj." in k for k in weights)
    merged_dir = str(tmp_path / "merged")
    run("merge_lora.py", f"--ckpt={ckpt}", f"--out={merged_dir}")
    merged, tok = load_policy(merged_dir)
    base, _ = load_policy(qwen_dir)
    assert type(merged).__name__ == "Qwen2ForCausalLM" and tok.chat_template == CHAT_TEMPLATE
    changed = {n for (n, p), q in zip(merged.named_parameters(), base.parameters()) if not torch.equal(p, q)}
    assert changed and all(n.endswith(("q_proj.weight", "v_proj.weight")) for n in changed)


def test_lora_bad_target_module_is_a_one_line_error(qwen_dir, tmp_path):  # noqa: F811
    p = run("train.py", f"--init_from={qwen_dir}", f"--out_dir={tmp_path}", "--task=math", "--lora_rank=2",
            "--lora_target_modules=no_such_proj", "--n_problems=50", "--val_problems=0", check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "lora_target_modules='no_such_proj'" in p.stderr.strip().splitlines()[-1]


def test_lora_under_torchrun_ranks_stay_identical(tmp_path):
    # every rank builds its own adapter: they must start (and so stay) the same, whatever each rank's seed
    out = str(tmp_path / "run")
    torchrun("train.py", f"--out_dir={out}", "--lora_rank=4", "--lora_alpha=8", "--lr=1e-2", "--prompts_per_step=4",
             *[a for a in TINY if not a.startswith(("--prompts_per_step", "--lora", "--lr"))], "--max_steps=2")
    final = json.load(open(os.path.join(out, "final_eval.json")))
    assert final["world_size"] == 2 and final["ddp_max_param_diff"] == 0.0
    assert os.path.exists(os.path.join(out, "ckpt", "adapter_model.safetensors"))
