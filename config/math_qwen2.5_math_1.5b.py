# DS-GRPO on MATH with Qwen2.5-Math-1.5B on one GPU (the paper's math setting, METHODS.md section 3): train on
# the MATH train split, evaluate on its test split (for MATH-500, AIME24, AMC23 use eval.py, e.g.
#   python eval.py --task=math --dataset=math500 --num_problems=500 --n=16 --template=instruct \
#       --temperature=0.7 --max_new_tokens=2048 --ckpt=out/math_qwen1.5b/ckpt
# Memory, by arithmetic (not measured): 1.5B params in float32 = 6.2 GB, AdamW states 12.4 GB, grads
# 6.2 GB -> ~25 GB; activations of micro-batches of 8 x ~2.3k tokens with gradient checkpointing and
# the chunked LM head add ~5-10 GB, and generating 256 x 2048 tokens needs a KV cache of ~15 GB in
# bf16 (28 layers x 2 x 256 kv-dim x 2 bytes x 524k tokens; more if autocast keeps parts of it in
# float32). Plan on an 80 GB GPU (or halve prompts_per_step on 40 GB).
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
