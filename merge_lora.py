"""
A LoRA checkpoint of train.py (adapter_config.json + adapter_model.safetensors, trained with
--lora_rank > 0) merged into its base model and written as a plain save_pretrained directory, which
transformers and vLLM load without peft. The base model is the one the adapter config names.

  python merge_lora.py --ckpt=out/ckpt --out=out/merged
"""
import os
import sys

from configurator import configure
from model import load_policy

ckpt = "out/ckpt"  # a LoRA checkpoint directory
out = "out/merged"  # where the merged model and its tokenizer go
configure(globals(), sys.argv[1:])
if not os.path.exists(os.path.join(ckpt, "adapter_config.json")):
    raise SystemExit(f"{ckpt!r} holds no LoRA adapter (adapter_config.json): nothing to merge")
model, tokenizer = load_policy(ckpt)  # the base model with the adapter merged in (model.load_policy)
model.save_pretrained(out)
tokenizer.save_pretrained(out)
print(f"wrote {out}")
