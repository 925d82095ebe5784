# DS-GRPO on Countdown with Qwen2.5-3B-Instruct on one GPU (the paper's settings, METHODS.md section 3).
# Memory, by arithmetic (not measured; README, "Memory, by arithmetic"): weights, grads and AdamW
# states 49.4 GB, an 11.2 GB KV cache for the rollout, ~4 GB of update activations: a peak near 54 GB,
# so an 80 GB GPU (H100/A100-80GB). Smaller GPUs need FSDP or an 8-bit optimizer, which this
# repository does not do.
init_from = "Qwen/Qwen2.5-3B-Instruct"
out_dir = "out/countdown_qwen3b"
task = "countdown"
dataset = "hf"  # Countdown-Tasks-3to4
n_problems = 20000
template = "instruct"
algo = "ds-grpo"
alpha = 0.01  # gamma_p
beta = 0.01  # gamma_n
lr = 1e-6
weight_decay = 0.01
group_size = 8
prompts_per_step = 32
max_new_tokens = 1024
temperature = 0.7
eps_low = 0.2
eps_high = 0.25
kl_coef = 0.0
max_steps = 500
micro_batch_size = 8
gradient_checkpointing = True
eval_interval = 50
eval_problems = 200
eval_n = 8
final_eval_n = 64
ckpt_interval = 50
eval_batch_rows = 128  # responses generated at once in evaluation: bounds the KV cache
