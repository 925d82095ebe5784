"""
The supervised warm start of the embedded tiny model: a randomly initialised model (model.tiny_model)
learns solver-generated solutions (Countdown) or worked answers (generated math), so that RL starts
from a policy that is sometimes right and, on problems with several solutions, knows several of them.
train.py runs it once per task and caches the result in out/warmstart_<task> (out/warmstart_<task>_hint<frac>
with DASD's hinted examples).
"""
import math
import os
import random
import shutil
import time

import torch
from tqdm import tqdm

import tasks
from model import char_tokenizer, tiny_model


def _hint_for(task, problem, answer):
    """The hint that goes with a warm-start target: the target's own expression for Countdown (so the
    model learns to copy the solution it is shown), the reference answer for math."""
    if task == "countdown":
        return answer.removeprefix("<answer>").removesuffix("</answer>")
    return tasks.hint(task, problem)


def _save(model, tokenizer, out_dir):
    """save_pretrained into a temp dir, then one rename: a killed warm start never leaves a half-written model."""
    tmp = out_dir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)


def warm_start(out_dir, task, problems, steps=2000, batch_size=64, lr=3e-3, seed=0, template="tiny",
               device="cpu", log=print, hint_frac=0.0, n_layer=4, n_embd=128, snapshot_every=0):
    """Supervised warm start of the tiny model, saved with save_pretrained. For Countdown each example
    is one problem with one of its solver solutions drawn uniformly, so a problem with many solutions
    teaches the model many answers: the diversity that RL can later keep or lose. Few enough steps
    that the model is far from solving the task (see README).
    hint_frac: the share of examples whose prompt carries a hint (tasks.hinted_prompt) that is the
    target's own solution (Countdown) or answer (math): DASD's teacher is this model shown a hint, and
    can only teach if it learned to use one. The hints are drawn from a stream of their own, so the
    batches and targets are those of hint_frac = 0, and hint_frac = 0 is the plain warm start exactly.
    snapshot_every > 0: the model is also saved every that many steps to out_dir + '_snapshots/step<k>' (base.py
    evaluates them to show what longer training buys)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    hint_rng = random.Random(seed + 1)
    tokenizer = char_tokenizer()
    model = tiny_model(tokenizer, n_layer=n_layer, n_embd=n_embd).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    eos = tokenizer.eos_token
    t0 = time.time()
    for step in (bar := tqdm(range(steps), desc="warm start", dynamic_ncols=True)):
        batch = rng.sample(problems, batch_size)
        answers = [tasks.sft_completion(task, p, rng) for p in batch]
        hinted = [hint_frac > 0 and hint_rng.random() < hint_frac for _ in batch]
        prompts = [tasks.hinted_prompt(task, p, template, hint_text=_hint_for(task, p, a)) if h
                   else tasks.prompt(task, p, template) for p, a, h in zip(batch, answers, hinted)]
        answers = [a + eos for a in answers]
        enc = tokenizer([p + a for p, a in zip(prompts, answers)], return_tensors="pt",
                        padding=True, padding_side="right").to(device)
        labels = enc.input_ids.clone()
        for i, p in enumerate(prompts):  # loss on the answer only, not on the prompt or padding
            labels[i, :len(p)] = -100
        labels[enc.attention_mask == 0] = -100
        for g in opt.param_groups:  # cosine decay to 10%
            g["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        loss = model(**enc, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if snapshot_every and (step + 1) % snapshot_every == 0 and step + 1 < steps:
            _save(model, tokenizer, os.path.join(out_dir.rstrip("/") + "_snapshots", f"step{step + 1}"))
    _save(model, tokenizer, out_dir)
    log(f"warm start: {steps} steps in {time.time() - t0:.0f}s, final loss {loss.item():.3f} -> {out_dir}")


def cached_warm_start(out_dir, task, hint_frac, problems, steps, template, device, log, master=True, ddp=False):
    """train.py's warm start (init_from='scratch'; 'tiny' for math and DASD): built once per out_dir by rank 0, in
    out_dir/warmstart_<task> (_hint<frac> with hints), then read from there. problems() gives the generated training
    problems it learns, called only when it is built. Returns its directory."""
    path = os.path.join(out_dir, f"warmstart_{task}" + (f"_hint{hint_frac:g}" if hint_frac else ""))
    if master and not os.path.exists(os.path.join(path, "config.json")):
        warm_start(path, task, problems(), steps=steps, template=template, device=device, log=log, hint_frac=hint_frac)
    if ddp:
        torch.distributed.barrier()  # the other ranks wait for rank 0's warm start
    return path
