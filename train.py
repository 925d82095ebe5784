"""
DS-GRPO, GRPO and the baselines on Countdown (or math), in one readable loop.

  python train.py                                  # tiny default, CPU ok: the shipped base, RL, eval
  python train.py --algo=grpo --max_steps=100      # override any constant below
  python train.py config/countdown_qwen0.5b.py     # a real HF model on a GPU
  torchrun --nproc_per_node=8 train.py config/countdown_qwen0.5b.py   # data-parallel on 8 GPUs

Each step: sample `prompts_per_step` training problems, draw `group_size` responses per prompt
(rollout.py), score them (reward.py), turn rewards into per-token advantages (loss.py; DS-GRPO adds
the DS-Eq.6 term) and per-token weights (the token-selection methods keep only some tokens), then take
`ppo_epochs` optimizer steps on the clipped surrogate (plus -/+ c H for the entropy baselines; update.py), or
with DGG up to `reuse_max`, the passes after the first gated on the LM head's gradient (gate.py).

What is simplified, and why:
- Rollouts are our own short decode loop around the HF forward (rollout.py), not vLLM: fewer moving parts.
  Data parallelism is torchrun + DDP, or FSDP2 for a model whose AdamW states do not fit one GPU (parallel.py);
  each rank owns whole groups, so advantages are exact. 20-Entropy's batch quantile and STAPO's tau_h are
  over each rank's share of the batch (everything else, the loss normaliser included, is global).
- The sampling policy pi_old is the policy at the start of the step (fully on-policy); its log-probs are
  recomputed by a forward pass, not taken from generate's scores, so training and sampling numerics match
  (with one update and a method that needs nothing of pi_old before it, that pass is the training pass).
- Each of the `ppo_epochs` updates uses the whole rollout batch (accumulated over micro-batches),
  rather than shuffled mini-batches: with the default of 1 this is exact on-policy GRPO.
- The embedded default is a 0.9M-parameter character-level model, trained once by supervised learning
  on solver solutions and shipped in assets/base (base.py), so the pipeline runs offline on a laptop CPU
  with no warm start at run time (init_from='scratch' builds one here instead).
"""
import json
import os
import random
import sys
import time
from contextlib import nullcontext

import torch
from tqdm import tqdm

import checkpoint
import checks
import countdown
import dasd
import gate
import loss
import parallel
import tasks
import update
from configurator import configure
from eval import evaluate, format_start_vs_final, format_table, merge_results, reference_run
from model import add_lora, load_policy, response_logprobs, shipped_base
from rollout import dynamic_sample, rollout
from warmstart import warm_start

# ----------------------------------------------------------------------------- config
# I/O
out_dir = "out"
init_from = "tiny"  # 'tiny' (Countdown: the shipped base, assets/base; math and DASD's hinted base: as 'scratch'),
#                     'scratch' (a warm start of the tiny model built here, cached in out/warmstart_<task>),
#                     'resume', or a HF name/path
base_seed = 0  # which shipped base 'tiny' loads: assets/base/seed<base_seed> (0 or 1, trained alike)
warmstart_steps = 1500  # 'scratch': supervised steps of the tiny model's warm start
warmstart_hint_frac = -1.0  # share of warm-start prompts with a hint (DASD's teacher must learn to use one; cached
#                             in out/warmstart_<task>_hint<frac>); -1: 0.5 for algo 'dasd', else 0 (the plain one)
eval_interval = 100  # steps between evaluations (and at the end)
eval_at_start = True  # evaluate the starting policy with final_eval_n too, to print it beside the trained one
eval_problems = 100  # held-out problems used for evaluation
eval_split = "test"  # what evaluations score: 'test' (held out) or 'val' (for choosing hyperparameters)
eval_n = 64  # samples per problem in the periodic evaluations (as final_eval_n: the same n, comparable)
final_eval_n = 64  # samples per problem in the final evaluation
eval_batch_rows = 512  # responses generated at once in evaluation (lower it for long responses)
ckpt_interval = 50  # steps between checkpoints (and at the end)
log_interval = 10  # steps between lines on stdout (every step goes to out/metrics.jsonl)
wandb_log = False  # also send every metrics.jsonl record to Weights & Biases (WANDB_MODE=offline: files only)
wandb_project = "ds-grpo"
wandb_run_name = ""  # '' = wandb picks one
seed = 1337
# data
task = "countdown"  # 'countdown' or 'math'
dataset = "generated"  # 'generated' (offline) or a hub set: 'hf' for Countdown, 'gsm8k'/'math' for math (tasks.load)
n_problems = 8000  # problems generated (or loaded), split 90/10 into train/test
data_seed = 0
val_problems = 200  # training problems set aside (never trained on) as the validation split
# the Countdown regime of the generated problems (countdown.generate_problems; README: why this one)
cd_sizes = "4"  # how many numbers a problem has: "4", or "3,4" for a mix
cd_min_num = 2  # numbers are drawn from cd_min_num..cd_max_num
cd_max_num = 15
cd_max_target = 50  # targets from 1..cd_max_target ...
cd_min_solutions = 5  # ... that have at least this many distinct solutions
cd_target = "uniform"  # 'uniform' over those targets, or 'weighted' by their number of solutions
template = "tiny"  # prompt: 'tiny' (embedded model) or 'instruct' (real models; chat template if any)
# RL
algo = "ds-grpo"  # one of checks.ALGOS: GRPO variants, DS-GRPO, entropy baselines, token selection
alpha = 10.0  # gamma_p in DS-Eq.6: bonus on correct responses; 10 over 1 on the validation split (README)
beta = 0.0  # gamma_n in DS-Eq.6: penalty on incorrect responses; 0 was chosen on the validation split (README)
ds_form = "seq"  # where the DS term goes: 'seq' (default), 'token' or 'reward' (see loss.advantages)
max_steps = 200
prompts_per_step = 16
dynamic_sampling = False  # DAPO: drop groups whose rewards are all equal, draw prompts again to fill the step
dynamic_max_draws = 4  # dynamic_sampling: at most this many draws of prompts_per_step prompts per step
group_size = 16  # G, responses per prompt: 16 so that most groups are mixed at the warm start's accuracy
max_new_tokens = 32
temperature = 1.0  # sampling temperature for training and evaluation
lr = 2e-4
weight_decay = 0.0
grad_clip = 1.0  # 0 = no clipping
ppo_epochs = 1  # optimizer steps per rollout batch; 1 = on-policy, the ratio is 1
micro_batch_size = 128  # responses per forward/backward (gradient accumulation over the batch)
sort_micro_batches = True  # micro-batches of similar-length responses, padding columns cut (update.py)
skip_old_logp = True  # ppo_epochs = 1: pi_old's log-probs are the training pass's own, no extra forward (where exact)
reuse_max = 1  # DGG (gate.py): up to this many optimizer passes per rollout batch, gated; 1 = off
dgg_tau = 0.5  # DGG: a reuse pass whose LM-head gradient z-score exceeds this is dropped, and the batch with it
dgg_window = 20  # DGG: optimizer passes in the running mean / std of the watched signal
dgg_signal = "energy"  # DGG: z-score of g = ||grad LM head||^2 ('energy') or of its change ('delta')
eps_low = 0.2
eps_high = 0.2  # > eps_low is DAPO's clip-higher
agg = "token-mean"  # 'token-mean', 'seq-mean' or 'constant' (/ n_seq * max_new_tokens: Dr.GRPO as published)
scale_std = True  # False = Dr.GRPO (no std division of the advantage)
kl_coef = 0.0  # k3 KL to the initial policy; the reference model is loaded only when > 0
entropy_coef = 0.01  # c of 'entropy-bonus' (loss -= c H) and 'entropy-penalty' (loss += c H), the usual 1e-3..1e-2
top_entropy_frac = 0.2  # rho of '20-entropy': only the top 20% highest-entropy tokens of the batch learn
stapo_q = 0.75  # 'stapo': tau_h = this quantile of low-prob correct tokens' entropies (one source: 0.8)
ict_warmup_steps = 20  # Theta of 'ict': dense GRPO steps before the sparse selection (unknown in the paper)
dasd_beta = 0.1  # beta_d of 'dasd': weight of the teacher term omega_t * dbar_t in the advantage (not in the abstract)
dasd_rho = 0.2  # rho of 'dasd': the top rho of each response's tokens by entropy are pushed from the teacher
dasd_norm = "batch"  # 'dasd': the teacher - student gap is divided by its RMS over the 'batch' or each 'response'
# system
device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = "bfloat16" if torch.cuda.is_available() else "float32"  # autocast dtype; weights stay float32
gradient_checkpointing = False
lora_rank = 0  # > 0: train LoRA adapters of this rank instead of every weight (a 7B model on one GPU)
lora_alpha = 32  # the adapters' output is scaled by lora_alpha / lora_rank
lora_target_modules = "all-linear"  # every linear layer but the LM head, or names: 'q_proj,k_proj,v_proj,o_proj'
compile = False  # torch.compile the rollout's decode step (CUDA graphs on a GPU; one-time cost, see bench.py)
parallelism = "ddp"  # under torchrun: 'ddp' (a full copy per GPU) or 'fsdp' (sharded, parallel.py)
config = configure(globals(), sys.argv[1:])
state = None  # what a resumed run restores: step, optimizer, RNG, its config
if init_from == "resume":  # a resumed run keeps its own settings, except those given again on the command line
    state = checkpoint.load_state(os.path.join(out_dir, "ckpt"))
    globals().update(checkpoint.saved_settings(state, sys.argv[1:]))
    config = {k: globals()[k] for k in config}
# -----------------------------------------------------------------------------
ddp, rank, world, device = parallel.setup(device)  # torchrun: one process per GPU; else (False, 0, 1, device)
master = rank == 0  # only rank 0 logs, evaluates the merged results and checkpoints

checks.check(config)  # every setting in its range, before anything is written (checks.py)
hint_frac = (0.5 if algo == "dasd" else 0.0) if warmstart_hint_frac == -1 else warmstart_hint_frac
if state and max_steps < state["step"]:
    raise SystemExit(f"max_steps={max_steps} is before the checkpoint's step {state['step']}: give a later one")
if dynamic_sampling and ddp:  # each rank would draw again on its own, and the shared prompt sampler would diverge
    raise SystemExit("dynamic_sampling runs in one process: drop it, or run without torchrun")
if prompts_per_step % world:
    raise SystemExit(f"prompts_per_step={prompts_per_step} must be a multiple of the {world} torchrun processes")
ckpt_dir = checkpoint.check_out_dir(out_dir, resuming=init_from == "resume", master=master)
rng = random.Random(seed)  # draws the global batch of training prompts: the same on every rank
ctx = (torch.autocast(device_type=device.split(":")[0], dtype=getattr(torch, dtype))
       if dtype != "float32" else nullcontext())
log = tqdm.write if master else (lambda *a, **k: None)

# ----------------------------------------------------------------------------- data and model
regime = countdown.regime(cd_sizes, cd_min_num, cd_max_num, cd_max_target, cd_min_solutions, cd_target)
train_set, test_set = tasks.load(task, dataset, n_problems, data_seed, regime)
if train_set and val_problems >= len(train_set):
    raise SystemExit(f"val_problems={val_problems} would leave none of the {len(train_set)} training problems to "
                     f"train on: give a smaller val_problems (0: no validation split) or a larger n_problems")
val_set, train_set = train_set[:val_problems], train_set[val_problems:]
if not train_set or not test_set:
    raise SystemExit(f"dataset {dataset!r} has no train or no test problems for task {task!r}")
if eval_split == "val" and not val_set:
    raise SystemExit("eval_split='val' needs a validation split: give val_problems > 0")
if prompts_per_step > len(train_set):
    raise SystemExit(f"prompts_per_step={prompts_per_step} is more than the {len(train_set)} training problems")
eval_set = (test_set if eval_split == "test" else val_set)[:eval_problems]
log(f"{len(train_set)} train, {len(val_set)} validation, {len(test_set)} test problems; evaluating on "
    f"{len(eval_set)} {eval_split} problems" + (f"; {world} data-parallel ranks" if ddp else ""))
if task == "countdown":
    log(countdown.format_regime_stats(countdown.regime_stats(train_set)))

start_step, policy_source, rollouts_done = 0, init_from, 0
if init_from == "tiny" and task == "countdown" and not hint_frac:  # the shipped base: no warm start here
    policy_source = shipped_base(base_seed)
elif init_from in ("tiny", "scratch"):  # math, or DASD's base that learned hints: built here, once per out_dir
    policy_source = os.path.join(out_dir, f"warmstart_{task}" + (f"_hint{hint_frac:g}" if hint_frac else ""))
    if master and not os.path.exists(os.path.join(policy_source, "config.json")):  # learns generated data
        sft_set = (train_set if dataset == "generated"
                   else tasks.load(task, "generated", n_problems, data_seed, regime)[0][val_problems:])
        warm_start(policy_source, task, sft_set, steps=warmstart_steps, template=template, device=device, log=log,
                   hint_frac=hint_frac)
    if ddp:
        torch.distributed.barrier()  # the other ranks wait for rank 0's warm start
elif init_from == "resume":
    policy_source = ckpt_dir
model, tokenizer = load_policy(state["ref_source"] if lora_rank and state else policy_source, device)
if lora_rank:  # a resumed run puts its saved adapter back on the base model
    model = add_lora(model, lora_rank, lora_alpha, lora_target_modules, ckpt_dir if state else None, seed)
if gradient_checkpointing:
    model.gradient_checkpointing_enable()
ref_model = None
if kl_coef > 0:  # the frozen reference is the policy RL started from
    ref_model, _ = load_policy(state["ref_source"] if state else policy_source, device)
    ref_model.requires_grad_(False).eval()
torch.manual_seed(seed + rank)  # after the warm start and loading: samples depend on `seed` alone
fsdp = ddp and parallelism == "fsdp"
trained = parallel.wrap(model, parallelism if ddp else None, device)  # the update's forward: DDP, FSDP or plain
betas = (0.9, 0.99)
optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=betas)
dgg_state = (state or {}).get("dgg") or gate.new_state()  # DGG's window of recent passes, kept in checkpoints
on_policy = skip_old_logp and update.pi_old_is_the_update(algo, ds_form, max(ppo_epochs, reuse_max))
if state:
    parallel.load_optimizer(model, optimizer, state["optimizer"], fsdp)
    for group in optimizer.param_groups:  # the saved hyperparameters would otherwise win over this run's
        group.update(lr=lr, weight_decay=weight_decay, betas=betas)
    start_step = state["step"]
    rollouts_done = state.get("rollouts", start_step * prompts_per_step * group_size)
    checkpoint.restore_rng(state, rng, rank, world, seed, device)  # the prompt sampler and this rank's stream
    log(f"resumed from {ckpt_dir} at step {start_step}")
ref_source = state["ref_source"] if state else policy_source
metrics_path = os.path.join(out_dir, "metrics.jsonl")
if master:  # fresh, or trimmed to the checkpoint's step
    checkpoint.start_log(metrics_path, start_step if state else None)
if wandb_log and master:  # the run's files go to out_dir/wandb
    import wandb
    wandb.init(project=wandb_project, name=wandb_run_name or None, config=config, dir=out_dir)


def log_json(record):
    if master:
        checkpoint.log_record(metrics_path, record, wandb if wandb_log else None)


def run_eval(step, n):
    """Each rank evaluates every world-th problem; the per-problem counts are gathered and merged."""
    t0 = time.time()
    with ctx, parallel.whole(trained):
        res = evaluate(model, tokenizer, task, eval_set[rank::world], n, temperature, max_new_tokens, template,
                       eval_batch_rows, compile=compile, logprob_batch_size=micro_batch_size)
    if ddp:
        res = merge_results(parallel.gather(res, world))
    log(f"eval @ step {step} ({time.time() - t0:.0f}s):\n{format_table(res)}")
    log_json({"eval_step": step, "eval_time": time.time() - t0, **res})
    return res


def draw_prompts():
    """The step's prompts: the global batch from the shared sampler, this rank's share of whole groups."""
    batch = rng.sample(train_set, prompts_per_step)
    return batch[rank * prompts_per_step // world:(rank + 1) * prompts_per_step // world]


def sample_and_score(batch):
    """G responses for each problem of batch (groups are contiguous rows) and their rewards (B,)."""
    prompts = [tasks.prompt(task, p, template, tokenizer) for p in batch]
    with ctx, parallel.whole(trained):  # on_policy: no pi_old pass, ro.old_logp / ro.entropy come from step 4
        ro = rollout(model, tokenizer, prompts, group_size, max_new_tokens, temperature, micro_batch_size, compile,
                     logprobs=not on_policy)
    t = time.time()
    problems = [p for p in batch for _ in range(group_size)]
    rewards = torch.tensor([tasks.reward(task, y, p) for y, p in zip(ro.texts, problems)], device=device)  # (B,)
    time_reward[0] += time.time() - t
    return ro, rewards


time_reward = [0.0]  # the reward's share of a step's sampling time, for the log


# ----------------------------------------------------------------------------- training loop
if start_step == 0 and init_from != "resume" and eval_at_start and max_steps > 0:
    run_eval(0, final_eval_n)  # the starting policy, at the final evaluation's n: printed beside the trained one
model.train()
bar = tqdm(range(start_step, max_steps), initial=start_step, total=max_steps, desc=algo, dynamic_ncols=True,
           disable=not master)
for step in bar:
    # 1-2. rollout and reward: G responses for each of the step's prompts (groups are contiguous rows), and their
    #      rewards r_i in {0, FORMAT_SCORE, 1} (Countdown) or {0, 1} (math); "correct" means r_i = 1
    t0 = time.time()
    time_reward[0], sampling_log = 0.0, {}
    if dynamic_sampling:  # DAPO: only groups whose rewards differ, drawing again up to dynamic_max_draws times
        batch, ro, rewards, sampling_log = dynamic_sample(draw_prompts, sample_and_score, prompts_per_step,
                                                          group_size, dynamic_max_draws, tokenizer.pad_token_id)
    else:
        batch = draw_prompts()
        ro, rewards = sample_and_score(batch)  # (B,)
    correct = (rewards == 1.0).float()  # (B,)
    t1 = time.time()

    # 3. advantages (B, T) (on_policy: DS-Eq.6's term comes in step 4), the tokens that learn (weight: a keep mask
    #    for token selection, from the rollout's pi_old), the batch-level normaliser, the reference log-probs
    mask = ro.response_mask.float()  # (B, T)
    adv = loss.advantages(algo, rewards, correct, ro.old_logp, mask, group_size, alpha, beta, ds_form, scale_std)
    dasd_log = {}
    if algo == "dasd":  # the policy shown a reference solution (the teacher) scores the sampled tokens: dasd.py
        t_teacher = time.time()
        hinted = dasd.teacher_prompts(task, batch, template, tokenizer, random.Random(f"{seed}:{step}"))
        with ctx, parallel.whole(trained):
            teacher_logp = dasd.teacher_logprobs(model, tokenizer, hinted, ro, group_size, temperature,
                                                 micro_batch_size)
        adv, delta_bar, omega = loss.dasd_advantages(adv, teacher_logp, ro.old_logp, ro.entropy, mask, dasd_beta,
                                                     dasd_rho, dasd_norm)
        dasd_log = dasd.metrics(teacher_logp, ro.old_logp, delta_bar, omega, mask, time.time() - t_teacher)
    select = "grpo" if algo == "ict" and step < ict_warmup_steps else algo  # ICT: Theta dense warm-up steps
    u = None  # ICT uniqueness (B, T): needs the full next-token distributions, one more no-grad pass
    if select == "ict":
        with ctx, parallel.whole(trained):
            u = loss.js_uniqueness(model, ro.input_ids, ro.attention_mask, ro.n_prompt, mask, group_size, temperature)
    weight = loss.token_weights(select, mask, ro.entropy, ro.old_logp, adv, correct, u, top_entropy_frac, stapo_q)
    denom = loss.normaliser(weight, agg, ddp, max_new_tokens)  # of the whole global batch (see loss.normaliser)
    ref_logp = torch.zeros_like(mask)
    if ref_model is not None:
        with torch.no_grad(), ctx:
            ref_logp, _ = response_logprobs(ref_model, ro.input_ids, ro.attention_mask, ro.n_prompt, temperature,
                                            micro_batch_size)

    # 4. update (update.py): optimizer passes over the batch in micro-batches, DDP, finite checks, clipping, the
    #    DGG gate. The loss of one micro-batch: rows `rows`, their first T response tokens; logp, entropy (b, T)
    if on_policy:  # pi_old is the training pass itself (one update: the same weights), filled in as it goes
        ro.old_logp, ro.entropy = torch.zeros_like(mask), torch.zeros_like(mask)

    def micro_loss(rows, T, logp, entropy):
        m, w = mask[rows, :T], weight[rows, :T]
        if on_policy:  # log pi_old = this pass's log-probs, detached; DS-Eq.6's term from them, row by row
            ro.old_logp[rows, :T], ro.entropy[rows, :T] = logp.detach() * m, entropy.detach() * m
            adv[rows, :T] += loss.ds_advantage(algo, correct[rows], ro.old_logp[rows, :T], m, alpha, beta, ds_form)
        old, a = ro.old_logp[rows, :T], adv[rows, :T]
        objective = loss.policy_loss(logp, old, a, w, denom, agg, eps_low, eps_high, ref_logp[rows, :T], kl_coef)
        objective = objective + loss.entropy_term(algo, entropy, w, agg, denom, entropy_coef)
        return objective, loss.ratio_stats(logp, old, a, m, eps_low, eps_high)
    try:  # passes: ppo_epochs, or DGG's reuse_max (the two are never both > 1)
        res = update.update(trained, model, optimizer, ro.input_ids, ro.attention_mask, ro.n_prompt, mask, micro_loss,
                            passes=max(ppo_epochs, reuse_max), micro_batch_size=micro_batch_size, ctx=ctx,
                            temperature=temperature, grad_clip=grad_clip, world=world, trim=sort_micro_batches,
                            dgg=(dgg_state, dgg_tau, dgg_window, dgg_signal) if reuse_max > 1 else None)
    except FloatingPointError as e:
        raise SystemExit(f"step {step}: {e}; nothing from this step was saved (last checkpoint: {ckpt_dir}). "
                         f"Try a lower lr or grad_clip.")
    t3 = time.time()

    # 5. metrics. The DS term as it entered the advantage in the configured ds_form (for 'reward': centred in
    #    its group), per response the mean over its tokens; for 'dasd' its teacher term; 0 for the other algos
    ds = adv - loss.advantages(algo, rewards, correct, ro.old_logp, mask, group_size, 0.0, 0.0, ds_form, scale_std)
    ds = (ds * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (B,)
    tok_c, tok_w = mask * correct[:, None], mask * (1 - correct[:, None])  # tokens of correct / wrong responses
    clip_low, clip_high, kl_old = (res["ratio_sums"] / (mask.sum() * res["passes"]).clamp(min=1)).tolist()
    record = {
        "step": step + 1, "loss": res["loss"], "reward": rewards.mean().item(), "accuracy": correct.mean().item(),
        "entropy": ((ro.entropy * mask).sum() / mask.sum()).item(),
        "response_len": mask.sum(-1).mean().item(), "truncated": ro.truncated.float().mean().item(),
        "ds_abs": ds.abs().mean().item(), "ds_correct": (ds * correct).sum().item() / max(correct.sum().item(), 1),
        "ds_incorrect": (ds * (1 - correct)).sum().item() / max((1 - correct).sum().item(), 1),
        "kept_frac": (weight.sum() / mask.sum()).item(),  # response tokens that got gradient
        **loss.group_composition(correct, group_size),  # all-correct / all-wrong / mixed groups: where GRPO has signal
        "entropy_correct": (ro.entropy * tok_c).sum().item() / max(tok_c.sum().item(), 1),
        "entropy_incorrect": (ro.entropy * tok_w).sum().item() / max(tok_w.sum().item(), 1),
        "clip_low": clip_low, "clip_high": clip_high, "kl_old": kl_old,  # fractions of tokens; mean k3 KL
        "zero_adv_groups": loss.zero_advantage_frac(rewards, group_size).item(),  # all-equal rewards: GRPO A_i = 0
        "grad_norm": res["grad_norm"], "time_rollout": t1 - t0 - time_reward[0], "time_reward": time_reward[0],
        "time_train": t3 - t1,
        **dasd_log,  # 'dasd': |dbar|, pulled / pushed shares, teacher - student gap, teacher pass time
        **sampling_log,  # dynamic_sampling: prompts drawn, groups kept, whether the bound was hit
    }
    if ddp:  # the global batch's figures: mean over ranks (equal shares), the loss summed
        record = parallel.mean_record(record, world, device)
    rollouts_done += sampling_log.get("prompts_drawn", prompts_per_step) * group_size  # responses sampled so far
    record.update(passes=res["passes"], rollouts=rollouts_done, **res["dgg"])
    if device.startswith("cuda"):  # the peak memory of a config is the largest of these
        record["mem_peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    log_json(record)
    bar.set_postfix(acc=f"{record['accuracy']:.3f}", ent=f"{record['entropy']:.3f}")
    if (step + 1) % log_interval == 0:
        log(f"step {step + 1}: reward {record['reward']:.3f} | acc {record['accuracy']:.3f} | "
            f"entropy {record['entropy']:.3f} | len {record['response_len']:.1f} | ds {record['ds_abs']:.4f} | "
            f"kept {record['kept_frac']:.2f} | rollout {record['time_rollout']:.2f}s "
            f"reward {record['time_reward']:.2f}s train {t3 - t1:.2f}s")

    last = step + 1 == max_steps
    if (step + 1) % eval_interval == 0 and not last:
        run_eval(step + 1, eval_n)
    if (step + 1) % ckpt_interval == 0 or last:
        rank_rng = checkpoint.rng_states(device, ddp, world)  # a collective: every rank takes part
        weights, optimizer_state = parallel.full_state(model, optimizer, fsdp)  # FSDP: gathered, a collective too
        if master:
            checkpoint.save_checkpoint(ckpt_dir, model, tokenizer, {
                "step": step + 1, "optimizer": optimizer_state, "python_rng": rng.getstate(), "rng": rank_rng,
                "config": config, "ref_source": ref_source, "dgg": dgg_state, "rollouts": rollouts_done}, weights)
bar.close()
final = run_eval(max_steps, final_eval_n)
if ddp:  # DDP: the ranks must hold the same parameters (same start, same summed gradients, same update)
    final.update({} if fsdp else {"ddp_max_param_diff": parallel.max_param_diff(model)})
    parallel.teardown()
if master:
    start = checkpoint.find_eval(metrics_path, 0, final["n"]) if max_steps else None  # also after a resume
    with open(os.path.join(out_dir, "final_eval.json.tmp"), "w") as f:  # renamed when whole: a kill leaves no half
        json.dump({"algo": algo, "config": config, "world_size": world, **final, "start": start}, f, indent=2)
    os.replace(os.path.join(out_dir, "final_eval.json.tmp"), os.path.join(out_dir, "final_eval.json"))
    if start:
        log(format_start_vs_final(start, final, max_steps, algo, reference_run(config)))
if master and wandb_log:
    wandb.finish()
log(f"done: final pass@1 {final['pass@k'][1]:.4f}, checkpoint in {ckpt_dir}")
