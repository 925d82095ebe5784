"""
Benchmarks, nanoGPT style: a model of a given shape with random weights (nothing is downloaded), and
in one run
  1. rollout: our decode loop (rollout.generate) against plain HF `generate` (default dynamic cache,
     attention mask, default top-k 50) and HF `generate` with its static cache (which HF compiles on a GPU),
     same prompts: ms per decode step, tokens/s, the ratios;
  2. training: response log-probs + loss + backward over the rollout batch: tokens/s and MFU;
  3. one full GRPO step: rollout + reward + old log-probs + loss + backward + AdamW step, in seconds;
  4. peak GPU memory, and the one-time warm-up / compile cost, reported separately;
  5. (ablate) before / after ratios, in the same run, of the speed-ups of issue 14: the pi_old pass skipped
     (ppo_epochs = 1), micro-batches sorted by response length and cut to their longest response
     (update.py; responses of lengths uniform in 1..new_tokens, as a random model writes no EOS), and
     the decode loop looking for the end every DONE_CHECK_EVERY steps instead of every step;
  6. (trl) TRL's GRPOTrainer at the same shape and batch (its HF generate path, `pip install trl`): seconds
     per optimizer step, after one warm-up step, beside ours.

  python bench.py                                   # tiny shape, CPU ok
  python bench.py --shape=qwen2.5-0.5b              # on a GPU: 32 prompts x G=8, 128 + 256 tokens, bf16
  pip install trl && python bench.py --shape=qwen2.5-0.5b --trl=True   # ... and TRL's step beside ours

Rewards are random (p = 0.3): random weights write no Countdown answers, and scoring costs
milliseconds (train.py logs time_reward). MFU counts model FLOPs, 6N + 12 L d T per trained token
(nanoGPT / PaLM), not the recomputation of activation checkpointing.
"""
import json
import os
import sys
import time

import torch
from transformers import GenerationConfig

import loss
import parallel
import rollout
import update
from configurator import configure
from model import PEAK_BF16_FLOPS, QWEN25_SHAPES, char_tokenizer, load_policy, random_qwen25, response_logprobs, tiny_model
from rollout import generate, response_mask_from

# ----------------------------------------------------------------------------- config
shape = "tiny"  # 'tiny', 'smollm2-135m' (real weights), 'qwen2.5-0.5b', 'qwen2.5-1.5b'
prompts = 32  # B prompts per step ...
group_size = 8  # ... x G responses each
prompt_len = 0  # tokens per prompt; 0 = the shape's default (tiny 24, qwen 128)
new_tokens = 0  # tokens generated per response; 0 = the shape's default (tiny 32, qwen 256)
micro_batch_size = 16  # responses per forward/backward in training
gradient_checkpointing = True  # for the qwen shapes (the tiny model does not need it)
compile = torch.cuda.is_available()  # compiled decode step (CUDA graphs); off on CPU: the compile is slow there
baseline = True  # also time plain HF generate (slow: one call at the qwen shapes is ~20 s on an H100)
iters = 3  # timed repetitions, after one warm-up
trl = False  # also time TRL's GRPOTrainer (not a requirement of this repository: pip install trl)
ablate = True  # also the before / after ratios of the pi_old skip, sorted micro-batches, the decode end check
out = "out/bench.json"
device = "cuda" if torch.cuda.is_available() else "cpu"
configure(globals(), sys.argv[1:])
# -----------------------------------------------------------------------------
SHAPES = QWEN25_SHAPES
PEAK_FLOPS = PEAK_BF16_FLOPS
if shape not in ("tiny", "smollm2-135m") and shape not in SHAPES:
    raise SystemExit(f"shape must be 'tiny', 'smollm2-135m' or one of {list(SHAPES)}, got {shape!r}")
torch.manual_seed(0)
cuda = device.startswith("cuda")
ctx = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
if shape == "tiny":
    model = tiny_model(char_tokenizer())
    prompt_len, new_tokens = prompt_len or 24, new_tokens or 32
elif shape == "smollm2-135m":  # the real pretrained model (fetched once: model.fetch_smollm2), its own weights
    model = load_policy(shape)[0]
    prompt_len, new_tokens = prompt_len or 48, new_tokens or 32
else:
    model = random_qwen25(shape)
    prompt_len, new_tokens = prompt_len or 128, new_tokens or 256
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
model.to(device)  # float32 master weights, bf16 autocast: as train.py
cfg = model.config
V, N = cfg.vocab_size, prompts * group_size
n_params = sum(p.numel() for p in model.parameters())
EOS = [V]  # an id that is never sampled: every response runs to new_tokens, as the figures do
PAD = 0
# left-padded prompts of varied length, as real batches are (the attention mask matters for speed)
lengths = torch.randint(prompt_len // 2, prompt_len + 1, (prompts,))
prompt_ids = torch.randint(1, V, (prompts, prompt_len), device=device)
prompt_mask = (torch.arange(prompt_len) >= prompt_len - lengths[:, None]).long().to(device)
prompt_ids = prompt_ids.masked_fill(prompt_mask == 0, PAD)


def sync():
    if cuda:
        torch.cuda.synchronize()


def timed(fn):
    """(seconds of the first call, mean seconds of `iters` further calls)."""
    sync()
    t0 = time.time()
    fn()
    sync()
    first = time.time() - t0
    t0 = time.time()
    for _ in range(iters):
        fn()
    sync()
    return first, (time.time() - t0) / iters


def ours():
    with ctx:
        return generate(model, prompt_ids, prompt_mask, group_size, new_tokens, 1.0, EOS, PAD, compile)[0]


def hf(cache=None):
    gen = GenerationConfig(do_sample=True, temperature=1.0, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           num_return_sequences=group_size, pad_token_id=PAD, eos_token_id=None,
                           cache_implementation=cache)  # "static": HF compiles the decode step on a GPU
    with ctx:
        return model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=gen)


def grpo_step(optimizer=None):
    """What train.py does each step (rollout, reward, advantages, loss, backward, optimizer) at this shape.
    Without an optimizer: the training part alone (log-probs + loss + backward) on a fixed batch."""
    if optimizer is not None:
        model.eval()
        response = ours()  # (N, T)
    else:
        response = fixed_response
    mask, _ = response_mask_from(response, EOS)
    ids = torch.cat([prompt_ids.repeat_interleave(group_size, 0), response], 1)
    att = torch.cat([prompt_mask.repeat_interleave(group_size, 0), mask], 1)
    with torch.no_grad(), ctx:
        old_logp, _ = response_logprobs(model, ids, att, prompt_len, 1.0, micro_batch_size)
    rewards = (torch.rand(N, device=device) < 0.3).float()  # stand-in for tasks.reward on the texts
    adv = loss.advantages("ds-grpo", rewards, rewards, old_logp, mask.float(), group_size, 1.0, 0.1)[0]
    denom = loss.normaliser(mask.float(), "token-mean")
    model.train()
    for idx in torch.arange(N, device=device).split(micro_batch_size):
        with ctx:
            logp, _ = response_logprobs(model, ids[idx], att[idx], prompt_len, 1.0)
            objective = loss.policy_loss(logp, old_logp[idx], adv[idx], mask[idx].float(), denom)
        objective.backward()
    if optimizer is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.zero_grad(set_to_none=True)


def update_part(old_pass, trim):
    """train.py's step 3-4 on a fixed batch of varied lengths: the pi_old pass (or not: skip_old_logp), then one
    optimizer pass of update.update (trim: sorted, cut micro-batches; else in order, uncut)."""
    with torch.no_grad(), ctx:
        old = response_logprobs(model, v_ids, v_att, prompt_len, 1.0, micro_batch_size)[0] if old_pass else None

    def micro_loss(rows, T, logp, entropy):
        o = logp.detach() if old is None else old[rows, :T]
        return loss.policy_loss(logp, o, v_adv[rows, :T], v_mask[rows, :T], v_denom), torch.zeros(3, device=device)
    update.update(trained, model, sgd, v_ids, v_att, prompt_len, v_mask, micro_loss, micro_batch_size=micro_batch_size,
                  ctx=ctx, trim=trim)


def trl_step_seconds():
    """TRL's GRPOTrainer (HF generate path) at this shape: B prompts x G per optimizer step, in micro-batches of
    micro_batch_size, the same random rewards. Returns (first step's seconds, mean seconds of the next `iters`).
    Its tokenizer is a word per token id, so that prompts of prompt_len words are prompt_len tokens."""
    import random
    import tempfile
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    word = Tokenizer(models.WordLevel({f"t{i}": i for i in range(V)}, unk_token="t1"))
    word.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=word, pad_token=f"t{PAD}", eos_token="t1", padding_side="left")
    texts = [" ".join(f"t{i}" for i in torch.randint(2, V, (prompt_len,)).tolist()) for _ in range(prompts * (iters + 2))]
    stamps = []

    class Clock(TrainerCallback):
        def on_step_end(self, *args, **kwargs):
            sync()
            stamps.append(time.time())
    args = GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=micro_batch_size,
                      gradient_accumulation_steps=N // micro_batch_size, num_generations=group_size,
                      max_completion_length=new_tokens, generation_kwargs={"min_new_tokens": new_tokens},
                      temperature=1.0, learning_rate=1e-6, max_steps=iters + 1, bf16=cuda, use_cpu=not cuda,
                      gradient_checkpointing=gradient_checkpointing and shape != "tiny", logging_steps=1,
                      report_to="none", save_strategy="no", disable_tqdm=True)
    trainer = GRPOTrainer(model=model, args=args, processing_class=tok, train_dataset=Dataset.from_dict({"prompt": texts}),
                          reward_funcs=lambda completions, **kw: [float(random.random() < 0.3) for _ in completions],
                          callbacks=[Clock()])
    sync()
    t0 = time.time()
    trainer.train()
    return stamps[0] - t0, (stamps[-1] - stamps[0]) / iters


def ours_every(n):  # the rollout with the end check every n decode steps
    rollout.DONE_CHECK_EVERY = n
    return ours()


# ----------------------------------------------------------------------------- run
name = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
print(f"{shape}: {n_params / 1e6:.1f}M params on {name}; {prompts} prompts x G={group_size}, "
      f"{prompt_len} prompt + {new_tokens} new tokens")
res = {"shape": shape, "device": name, "params": n_params, "prompts": prompts, "group_size": group_size,
       "prompt_len": prompt_len, "new_tokens": new_tokens, "compile": compile, "torch": torch.__version__}
model.eval()
with torch.no_grad():
    warm, t = timed(ours)
    res.update(ours_warmup_s=warm, ours_s=t, ours_ms_per_step=1e3 * t / new_tokens, ours_tok_s=N * new_tokens / t)
    if baseline:
        warm, t = timed(hf)
        res.update(hf_warmup_s=warm, hf_s=t, hf_ms_per_step=1e3 * t / new_tokens, hf_tok_s=N * new_tokens / t,
                   rollout_speedup=t / res["ours_s"])
        warm, t = timed(lambda: hf("static"))
        res.update(hf_static_warmup_s=warm, hf_static_s=t, hf_static_ms_per_step=1e3 * t / new_tokens,
                   hf_static_tok_s=N * new_tokens / t, rollout_speedup_static=t / res["ours_s"])
    fixed_response = ours()
train_tokens = N * (prompt_len + new_tokens)
_, t = timed(grpo_step)
flops_per_token = 6 * n_params + 12 * cfg.num_hidden_layers * cfg.hidden_size * (prompt_len + new_tokens)
peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
res.update(train_s=t, train_tok_s=train_tokens / t, mfu=flops_per_token * train_tokens / t / peak if peak else None)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
warm, t = timed(lambda: grpo_step(optimizer))
res.update(grpo_step_warmup_s=warm, grpo_step_s=t)
if ablate:
    model.train()
    lengths = torch.randint(1, new_tokens + 1, (N, 1), device=device)
    v_mask = (torch.arange(new_tokens, device=device) < lengths).float()  # (N, T) varied lengths
    v_ids = torch.cat([prompt_ids.repeat_interleave(group_size, 0), fixed_response.masked_fill(v_mask == 0, PAD)], 1)
    v_att = torch.cat([prompt_mask.repeat_interleave(group_size, 0), v_mask.long()], 1)
    v_adv = torch.randn(N, 1, device=device) * v_mask
    v_denom = loss.normaliser(v_mask, "token-mean")
    trained, sgd = parallel.wrap(model, None, device), torch.optim.SGD(model.parameters(), lr=0.0)  # moves nothing
    t = {(old_pass, trim): timed(lambda: update_part(old_pass, trim))[1] for old_pass, trim in
         ((True, False), (False, False), (False, True))}
    res.update(update_before_s=t[True, False], update_after_s=t[False, True],
               skip_old_logp_speedup=t[True, False] / t[False, False],
               sort_trim_speedup=t[False, False] / t[False, True], update_speedup=t[True, False] / t[False, True])
    model.eval()
    with torch.no_grad():
        every = rollout.DONE_CHECK_EVERY
        t1, t8 = timed(lambda: ours_every(1))[1], timed(lambda: ours_every(every))[1]
        rollout.DONE_CHECK_EVERY = every
    res.update(decode_check_every=every, decode_check_speedup=t1 / t8)
if cuda:
    res["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
if trl:  # last: the trainer takes the model over (its own optimizer, train mode, checkpointing)
    warm, t = trl_step_seconds()
    res.update(trl_step_warmup_s=warm, trl_step_s=t, trl_speedup=t / res["grpo_step_s"])

rows = [("rollout, ours: ms / decode step", res["ours_ms_per_step"]), ("rollout, ours: tokens/s", res["ours_tok_s"])]
if baseline:
    rows += [("rollout, HF generate: ms / decode step", res["hf_ms_per_step"]),
             ("rollout, HF generate: tokens/s", res["hf_tok_s"]), ("rollout speed-up (HF time / ours)", res["rollout_speedup"]),
             ("rollout, HF static cache" + (" + compile" if cuda else "") + ": ms / decode step", res["hf_static_ms_per_step"]),
             ("  its one-time warm-up (incl. compile): s", res["hf_static_warmup_s"]),
             ("rollout speed-up (HF static time / ours)", res["rollout_speedup_static"])]
rows += [("train log-probs+loss+backward: tokens/s", res["train_tok_s"]),
         ("train MFU", res["mfu"] if res["mfu"] is not None else "n/a (no GPU peak known)"),
         ("full GRPO step: s", res["grpo_step_s"]), ("one-time warm-up, ours rollout (incl. compile): s", res["ours_warmup_s"]),
         ("one-time warm-up, full step: s", res["grpo_step_warmup_s"])]
if ablate:
    rows += [("update, before (pi_old pass, plain micro-batches): s", res["update_before_s"]),
             ("update, after (no pi_old pass, sorted + cut): s", res["update_after_s"]),
             ("  speed-up, pi_old pass skipped", res["skip_old_logp_speedup"]),
             ("  speed-up, sorted + cut micro-batches", res["sort_trim_speedup"]),
             ("  speed-up, both", res["update_speedup"]),
             (f"rollout speed-up, end check every {res['decode_check_every']} vs 1 step",
              res["decode_check_speedup"])]
if trl:
    rows += [("TRL GRPOTrainer step: s", res["trl_step_s"]), ("  its one-time warm-up (first step): s", res["trl_step_warmup_s"]),
             ("full-step speed-up (TRL time / ours)", res["trl_speedup"])]
if cuda:
    rows.append(("peak GPU memory: GiB (ours, before TRL)", res["peak_memory_gib"]))
for label, v in rows:
    print(f"{label:<52} {v:>12.4g}" if isinstance(v, float) else f"{label:<52} {v:>12}")
os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
with open(out, "w") as f:
    json.dump(res, f, indent=2)
print(f"wrote {out}")
