# DS-GRPO on Countdown with Qwen2.5-0.5B-Instruct on one GPU (the paper's settings, METHODS.md section 3).
# Memory, by arithmetic (not measured here): 0.5B params in float32 = 2 GB, AdamW states 4 GB,
# grads 2 GB; activations of a micro-batch of 16 x ~1.2k tokens with gradient checkpointing and
# the chunked LM head stay under ~10 GB. A 24 GB GPU should do; 40 GB+ leaves room for generation.
# Needs the network once to download the model (or a local path in init_from).
init_from = "Qwen/Qwen2.5-0.5B-Instruct"
out_dir = "out/countdown_qwen0.5b"
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
micro_batch_size = 16
gradient_checkpointing = True
eval_interval = 50
eval_problems = 200
eval_n = 8
final_eval_n = 64
ckpt_interval = 50
eval_batch_rows = 128  # responses generated at once in evaluation: bounds the KV cache
