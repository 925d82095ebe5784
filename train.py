"""
DS-GRPO, GRPO and the baselines on Countdown (or math), in one readable loop.

  python train.py                                  # tiny default, CPU ok: the shipped base, RL, eval
  python train.py --algo=grpo --max_steps=100      # override any constant below
  python train.py config/countdown_qwen0.5b.py     # a real HF model on a GPU
  torchrun --nproc_per_node=8 train.py config/countdown_qwen0.5b.py   # data-parallel on 8 GPUs

Each step: 1-2. draw G responses to each of its prompts (rollout.py) and score them (reward.py); 3. per-token
advantages, with DS-GRPO's DS-Eq.6 term, and the tokens that learn (loss.py); 4. optimizer passes on the clipped
surrogate, -/+ c H for the entropy baselines (update.py, DGG's gate.py); 5. every figure of the step (metrics.py).

What is simplified, and why:
- Rollouts are our own decode loop around the HF forward (rollout.py), not vLLM. torchrun + DDP or FSDP2
  (parallel.py): each rank owns whole groups, so advantages are exact (20-Entropy's, STAPO's quantiles: per rank).
- pi_old, the sampling policy, is the policy at the start of the step (fully on-policy). Its log-probs come from
  a forward pass, not from the sampler's scores, so training and sampling numerics match; where nothing needs
  them before the update (one pass, GRPO or the entropy heuristics), that pass is the training pass itself.
- Each of the `ppo_epochs` updates uses the whole batch (micro-batches with gradient accumulation), not shuffled
  mini-batches: with the default of 1 this is exact on-policy GRPO.
- The default policy is a 0.9M-parameter character-level model, trained once on solver solutions and shipped in
  assets/base (base.py): offline on a laptop CPU, no warm start at run time ('scratch' builds one here).
"""
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
import ict
import loss
import metrics
import parallel
import tasks
import update
from configurator import configure
from eval import evaluate, format_start_vs_final, format_table, merge_results, reference_run
from model import add_lora, load_policy, response_logprobs, shipped_base
from rollout import dynamic_sample, rollout
from warmstart import cached_warm_start

# ----------------------------------------------------------------------------- config
# I/O
out_dir = "out"
init_from = "tiny"  # 'tiny' (Countdown: the shipped base, assets/base; math, DASD: as 'scratch'), 'resume', a HF
#                     name/path, or 'scratch' (a warm start of the tiny model built here, out/warmstart_<task>)
base_seed = 0  # which shipped base 'tiny' loads: assets/base/seed<base_seed> (0 or 1, trained alike)
warmstart_steps = 1500  # 'scratch': supervised steps of the tiny model's warm start
warmstart_hint_frac = -1.0  # share of warm-start prompts with a hint (DASD's teacher uses one); -1: 0.5 for 'dasd'
eval_interval = 60  # steps between evaluations (and at the end)
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
task = "countdown"  # 'countdown', 'math' or 'arithmetic' (one operation, for small real models: tasks.py)
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
max_steps = 120  # the default run fits in 6 minutes on 2 CPU cores (README); the frontier runs 200
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
scale_rewards = "group"  # the advantage's std: 'group' (GRPO), 'batch' (one over the batch), 'none' (Dr.GRPO)
mask_truncated_completions = False  # a response cut at max_new_tokens gets no gradient (its reward still counts)
kl_coef = 0.0  # k3 KL to the initial policy; the reference model is loaded only when > 0
entropy_coef = 0.01  # c of 'entropy-bonus' (loss -= c H) and 'entropy-penalty' (loss += c H), the usual 1e-3..1e-2
top_entropy_frac = 0.2  # rho of '20-entropy': only the top 20% highest-entropy tokens of the batch learn
stapo_q = 0.75  # 'stapo': tau_h = this quantile of low-prob correct tokens' entropies (one source: 0.8)
ict_warmup_steps = 20  # Theta of 'ict': dense GRPO steps before the sparse selection (unknown in the paper)
ict_frac = 0.1  # 'ict': each response's top 10% of tokens by uniqueness learn
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
state = checkpoint.load_state(os.path.join(out_dir, "ckpt")) if init_from == "resume" else None  # step, optimizer, RNG
if state:  # a resumed run keeps its own settings, except those given again on the command line
    globals().update(checkpoint.saved_settings(state, sys.argv[1:]))
    config = {k: globals()[k] for k in config}
# -----------------------------------------------------------------------------
checks.check(config)  # every setting in its range, before anything is loaded or written (checks.py)
ddp, rank, world, device = parallel.setup(device)  # torchrun: one process per GPU; else (False, 0, 1, device)
master = rank == 0  # only rank 0 logs, evaluates the merged results and checkpoints
checks.check_run(config, state, ddp, world)
hint_frac = (0.5 if algo == "dasd" else 0.0) if warmstart_hint_frac == -1 else warmstart_hint_frac
ckpt_dir = checkpoint.check_out_dir(out_dir, resuming=init_from == "resume", master=master)
rng = random.Random(seed)  # draws the global batch of training prompts: the same on every rank
ctx = (torch.autocast(device_type=device.split(":")[0], dtype=getattr(torch, dtype))
       if dtype != "float32" else nullcontext())
log = tqdm.write if master else (lambda *a, **k: None)
time_reward = [0.0]  # the reward's share of a step's sampling time, for the log

# ----------------------------------------------------------------------------- data and model
regime = countdown.regime(cd_sizes, cd_min_num, cd_max_num, cd_max_target, cd_min_solutions, cd_target)
train_set, test_set = tasks.load(task, dataset, n_problems, data_seed, regime)
checks.check_data(config, train_set, test_set)
val_set, train_set = train_set[:val_problems], train_set[val_problems:]
eval_set = (test_set if eval_split == "test" else val_set)[:eval_problems]
log(f"{len(train_set)} train, {len(val_set)} validation, {len(test_set)} test problems; evaluating on "
    f"{len(eval_set)} {eval_split} problems" + (f"; {world} data-parallel ranks" if ddp else ""))
if task == "countdown":
    log(countdown.format_regime_stats(countdown.regime_stats(train_set)))

start_step, policy_source, rollouts_done = 0, init_from, 0
if init_from == "tiny" and task == "countdown" and not hint_frac:  # the shipped base: no warm start here
    policy_source = shipped_base(base_seed)
elif init_from in ("tiny", "scratch"):  # math, or DASD's base that learned hints: built here, once per out_dir
    policy_source = cached_warm_start(out_dir, task, hint_frac, lambda: train_set if dataset == "generated" else
                                      tasks.load(task, "generated", n_problems, data_seed, regime)[0][val_problems:],
                                      warmstart_steps, template, device, log, master, ddp)
elif init_from == "resume":
    policy_source = ckpt_dir
model, tokenizer = load_policy(state["ref_source"] if lora_rank and state else policy_source, device)
if lora_rank:  # a resumed run puts its saved adapter back on the base model
    model = add_lora(model, lora_rank, lora_alpha, lora_target_modules, ckpt_dir if state else None, seed)
if gradient_checkpointing:
    model.gradient_checkpointing_enable()
ref_model = (load_policy(state["ref_source"] if state else policy_source, device)[0].requires_grad_(False).eval()
             if kl_coef > 0 else None)  # the frozen reference of the KL term: the policy RL started from
torch.manual_seed(seed + rank)  # after the warm start and loading: samples depend on `seed` alone
fsdp = ddp and parallelism == "fsdp"
parallel_model = parallel.wrap(model, parallelism if ddp else None, device)  # DDP, FSDP or the model itself
optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.99))
dgg_state = (state or {}).get("dgg") or gate.new_state()  # DGG's window of recent passes, kept in checkpoints
on_policy = skip_old_logp and update.pi_old_is_the_update(algo, max(ppo_epochs, reuse_max))
if state:  # the optimizer's state (with this run's lr), the prompt sampler and the RNG streams
    checkpoint.restore(state, model, optimizer, rng, rank, world, seed, device, fsdp)
    start_step, rollouts_done = state["step"], state.get("rollouts", state["step"] * prompts_per_step * group_size)
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
    with ctx, parallel.whole(parallel_model):
        result = evaluate(model, tokenizer, task, eval_set[rank::world], n, temperature, max_new_tokens, template,
                          eval_batch_rows, compile=compile, logprob_batch_size=micro_batch_size)
    if ddp:
        result = merge_results(parallel.gather(result, world))
    log(f"eval @ step {step} ({time.time() - t0:.0f}s):\n{format_table(result)}")
    log_json({"eval_step": step, "eval_time": time.time() - t0, **result})
    return result


def draw_prompts():
    """The step's problems: the global batch from the shared sampler, this rank's share of whole groups."""
    problems = rng.sample(train_set, prompts_per_step)
    return problems[rank * prompts_per_step // world:(rank + 1) * prompts_per_step // world]


def sample_and_score(problems):
    """G responses for each problem (groups are contiguous rows), with pi_old's log-probs and entropies unless
    on_policy (then the update's own pass gives them), and their rewards (B,)."""
    prompts = [tasks.prompt(task, p, template, tokenizer) for p in problems]
    with ctx, parallel.whole(parallel_model):
        sampled = rollout(model, tokenizer, prompts, group_size, max_new_tokens, temperature, micro_batch_size,
                          compile, logprobs=not on_policy)
    t = time.time()
    row_problems = [p for p in problems for _ in range(group_size)]  # the problem each of the B rows answers
    rewards = torch.tensor([tasks.reward(task, y, p) for y, p in zip(sampled.texts, row_problems)], device=device)
    time_reward[0] += time.time() - t
    return sampled, rewards


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
    time_reward[0], sampling_log, dasd_log = 0.0, {}, {}
    if dynamic_sampling:  # DAPO: only groups whose rewards differ, drawing again up to dynamic_max_draws times
        problems, sampled, rewards, sampling_log = dynamic_sample(draw_prompts, sample_and_score, prompts_per_step,
                                                                  group_size, dynamic_max_draws, tokenizer.pad_token_id)
    else:
        problems = draw_prompts()
        sampled, rewards = sample_and_score(problems)  # (B,)
    correct = (rewards == 1.0).float()  # (B,)
    mask = sampled.response_mask.float()  # (B, T)
    t1 = time.time()

    # 3. advantages A (B, T), with DS-Eq.6's term from pi_old's log-probs (shaping: that term, as applied), the
    #    tokens that learn (weight: a keep mask for token selection) and the batch-level normaliser
    adv, shaping = loss.advantages(algo, rewards, correct, sampled.old_logp, mask, group_size, alpha, beta, ds_form,
                                   scale_rewards)
    if algo == "dasd":  # the policy shown a reference solution (the teacher) scores the sampled tokens: dasd.py
        with ctx, parallel.whole(parallel_model):
            adv, shaping, dasd_log = dasd.shaped_advantages(model, tokenizer, task, problems, template, sampled, adv,
                                                            mask, group_size, temperature, micro_batch_size,
                                                            dasd_beta, dasd_rho, dasd_norm, seed, step)
    select = "grpo" if algo == "ict" and step < ict_warmup_steps else algo  # ICT: Theta dense warm-up steps
    u = None  # ICT uniqueness (B, T): needs the full next-token distributions, one more no-grad pass
    if select == "ict":
        with ctx, parallel.whole(parallel_model):
            u = ict.js_uniqueness(model, sampled.input_ids, sampled.attention_mask, sampled.n_prompt, mask, group_size,
                                  temperature)
    weight = loss.token_weights(select, mask, sampled.entropy, sampled.old_logp, adv, correct, u,
                                top_entropy_frac=top_entropy_frac, stapo_q=stapo_q, ict_frac=ict_frac)
    if mask_truncated_completions:  # no gradient from a response cut short; its reward still counted in A
        weight = weight * ~sampled.truncated[:, None]
    denom = loss.normaliser(weight, agg, ddp, max_new_tokens)  # of the whole global batch (see loss.normaliser)
    ref_logp = torch.zeros_like(mask)
    if ref_model is not None:
        with torch.no_grad(), ctx:
            ref_logp, _ = response_logprobs(ref_model, sampled.input_ids, sampled.attention_mask, sampled.n_prompt,
                                            temperature, micro_batch_size)

    # 4. update (update.py): optimizer passes over the batch in micro-batches, DDP, finite checks, clipping, the
    #    DGG gate. The loss of micro-batch `rows` over its first T response tokens, given logp, entropy (b, T):
    def micro_loss(rows, T, logp, entropy):
        old_logp = logp.detach() if on_policy else sampled.old_logp[rows, :T]  # log pi_old: on_policy, this pass
        a, w = adv[rows, :T], weight[rows, :T]
        objective = loss.policy_loss(logp, old_logp, a, w, denom, agg, eps_low, eps_high, ref_logp[rows, :T], kl_coef)
        objective = objective + loss.entropy_term(algo, entropy, w, agg, denom, entropy_coef)
        return objective, metrics.ratio_stats(logp, old_logp, a, mask[rows, :T], eps_low, eps_high)
    try:  # passes: ppo_epochs, or DGG's reuse_max (the two are never both > 1)
        updated = update.update(parallel_model, model, optimizer, sampled.input_ids, sampled.attention_mask,
                                sampled.n_prompt, mask, micro_loss, passes=max(ppo_epochs, reuse_max),
                                micro_batch_size=micro_batch_size, ctx=ctx, temperature=temperature,
                                grad_clip=grad_clip, world=world, trim=sort_micro_batches,
                                dgg=(dgg_state, dgg_tau, dgg_window, dgg_signal) if reuse_max > 1 else None)
    except FloatingPointError as e:
        raise SystemExit(f"step {step}: {e}; nothing from this step was saved (last checkpoint: {ckpt_dir}). "
                         f"Try a lower lr or grad_clip.")
    t3 = time.time()

    # 5. metrics (metrics.py): every figure of the step, one line of out/metrics.jsonl
    entropy = updated["entropy"] if on_policy else sampled.entropy  # pi_old's, (B, T)
    record = metrics.step_record(step + 1, rewards, correct, mask, entropy, shaping, weight, sampled.truncated,
                                 updated, group_size, device, sampled.sample_logp)
    record.update(time_rollout=t1 - t0 - time_reward[0], time_reward=time_reward[0], time_train=t3 - t1,
                  **dasd_log, **sampling_log)  # DASD's teacher figures; dynamic sampling's draws and kept groups
    if ddp:  # the global batch's figures: mean over ranks (equal shares), the loss summed
        record = parallel.mean_record(record, world, device)
    rollouts_done += sampling_log.get("prompts_drawn", prompts_per_step) * group_size  # responses sampled so far
    record.update(passes=updated["passes"], rollouts=rollouts_done, **updated["dgg"])
    log_json(record)
    bar.set_postfix(acc=f"{record['accuracy']:.3f}", ent=f"{record['entropy']:.3f}")
    if (step + 1) % log_interval == 0:
        log(metrics.format_line(record))

    if (step + 1) % eval_interval == 0 and step + 1 < max_steps:
        run_eval(step + 1, eval_n)
    if (step + 1) % ckpt_interval == 0 or step + 1 == max_steps:  # every rank takes part: the RNG states and FSDP's shards are gathered
        checkpoint.save_run(ckpt_dir, model, tokenizer, optimizer, fsdp, master, device, ddp, world, {
            "step": step + 1, "python_rng": rng.getstate(), "config": config, "ref_source": ref_source,
            "dgg": dgg_state, "rollouts": rollouts_done})
bar.close()
final = run_eval(max_steps, final_eval_n)
if ddp:  # DDP: the ranks must hold the same parameters (same start, same summed gradients, same update)
    final.update({} if fsdp else {"ddp_max_param_diff": parallel.max_param_diff(model)})
    parallel.teardown()
if master:
    start = checkpoint.find_eval(metrics_path, 0, final["n"]) if max_steps else None  # also after a resume
    checkpoint.write_json(os.path.join(out_dir, "final_eval.json"),  # renamed when whole: a kill leaves no half
                          {"algo": algo, "config": config, "world_size": world, **final, "start": start})
    if start:
        log(format_start_vs_final(start, final, max_steps, algo, reference_run(config)))
    if wandb_log:
        wandb.finish()
log(f"done: final pass@1 {final['pass@k'][1]:.4f}, checkpoint in {ckpt_dir}")
if ddp:  # gloo's threads can abort the interpreter's own exit after a finished run (SIGABRT, torchrun fails): skip it
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)
