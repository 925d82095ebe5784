# DS-GRPO on MATH with Qwen2.5-Math-1.5B on one GPU (the paper's math setting, METHODS.md section 3): train on
# the MATH train split, evaluate on its test split (for MATH-500, AIME24, AMC23 use eval.py, e.g.
#   python eval.py --task=math --dataset=math500 --eval_problems=500 --n=16 --template=instruct \
#       --temperature=0.7 --max_new_tokens=2048 --ckpt=out/math_qwen1.5b/ckpt
# Memory, by arithmetic (not measured; README, "Memory, by arithmetic"): weights, grads and AdamW states
# 24.7 GB; the rollout's bf16 KV cache for 256 x ~2.3k tokens is 17.2 GB (28 KiB a token), freed before
# the update, whose activations (micro-batches of 8, gradient checkpointing) add ~5 GB: a peak near
# 36 GB (during the rollout). A 48 GB or 80 GB GPU does; on 40 GB halve prompts_per_step.
init_from = "Qwen/Qwen2.5-Math-1.5B"
out_dir = "out/math_qwen1.5b"
task = "math"
dataset = "math"  # DigitalLearningGmbH/MATH-lighteval train / test
n_problems = 7500
template = "instruct"  # the paper's "...think step by step ... within \boxed{}", in the chat template
algo = "ds-grpo"
alpha = 0.01  # gamma_p
beta = 0.01  # gamma_n
lr = 1e-6
weight_decay = 0.01
group_size = 8
prompts_per_step = 32
max_new_tokens = 2048  # max response 2048 tokens (METHODS.md section 3)
temperature = 0.7
eps_low = 0.2
eps_high = 0.25
kl_coef = 0.0
max_steps = 500
micro_batch_size = 8
gradient_checkpointing = True
eval_interval = 50
eval_problems = 500
eval_n = 4
final_eval_n = 16
ckpt_interval = 50
eval_batch_rows = 64  # responses generated at once in evaluation: bounds the KV cache (2k-token responses)
