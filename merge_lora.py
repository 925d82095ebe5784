"""
A LoRA checkpoint of train.py (adapter_config.json + adapter_model.safetensors, trained with
--lora_rank > 0) merged into its base model and written as a plain save_pretrained directory, which
transformers and vLLM load without peft. The base model is the one the adapter config names.

  python merge_lora.py --ckpt=out/ckpt --out=out/merged
"""
import os
import shutil
import sys

from configurator import configure
from model import load_policy

ckpt = "out/ckpt"  # a LoRA checkpoint directory
out = "out/merged"  # a new directory for the merged model and its tokenizer (never an existing one)
configure(globals(), sys.argv[1:])
if not os.path.exists(os.path.join(ckpt, "adapter_config.json")):
    raise SystemExit(f"{ckpt!r} holds no LoRA adapter (adapter_config.json): nothing to merge")
if os.path.lexists(out):  # a run's checkpoint, another model, a file: never written over
    raise SystemExit(f"--out={out!r} already exists: give a new directory")
tmp = out.rstrip("/") + ".tmp"
try:
    os.makedirs(tmp, exist_ok=True)
except OSError as e:
    raise SystemExit(f"cannot write to --out={out!r} ({e.strerror}): give a writable path")
model, tokenizer = load_policy(ckpt)  # the base model with the adapter merged in (model.load_policy)
try:
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, out)  # all of it or nothing: a failed write leaves no half model at `out`
except OSError as e:
    shutil.rmtree(tmp, ignore_errors=True)
    raise SystemExit(f"cannot write the merged model to {out!r} ({e.strerror}): nothing was written")
print(f"wrote {out}: {', '.join(sorted(os.listdir(out)))}")
