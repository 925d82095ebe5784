# The tiny model's first regime, kept for its negative result (README "Results on the tiny default": the
# low-accuracy regime). 3 or 4 numbers from 1..10, any reachable target: the warm start is right about 9% of
# the time and most problems have one or two distinct solutions, so most groups of 8 are all wrong (no GRPO
# signal; DS's beta term alone, an entropy penalty) and there is little diversity among correct answers to keep.
#   python train.py config/countdown_tiny_lowacc.py --out_dir=out/lowacc
cd_sizes = "3,4"
cd_min_num = 1
cd_max_num = 10
cd_max_target = 50
cd_min_solutions = 1
val_problems = 0
prompts_per_step = 32
group_size = 8
alpha = 1.0  # the DS coefficients of its published results (train.py's default beta is now 0)
beta = 0.1
