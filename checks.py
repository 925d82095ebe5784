"""
train.py's config checks: every setting against its range, before anything is written, so that a typo or a
bad value costs one readable line and no half-made run directory.
"""
import os
from types import SimpleNamespace

import torch

import loss
from model import SHIPPED_BASE

BASES = os.path.dirname(SHIPPED_BASE)

ALGOS = ("grpo", "dr-grpo", "ds-grpo", "entropy-bonus", "entropy-penalty", "20-entropy", "stapo", "ict", "dasd")
INF = float("inf")  # `0 < x < INF` also refuses nan and inf


def check(cfg):
    """Raises SystemExit naming the first setting out of its range. cfg: train.py's config, {key: value}."""
    c = SimpleNamespace(**cfg)
    ranges = [  # (key, in range, the range)
        ("algo", c.algo in ALGOS, f"one of {ALGOS}"),
        ("dtype", c.dtype in ("float32", "bfloat16"), "float32 or bfloat16"),  # float16 would need a GradScaler
        ("task", c.task in ("countdown", "math", "arithmetic"), "'countdown', 'math' or 'arithmetic'"),
        ("template", c.template in ("tiny", "instruct"), "'tiny' or 'instruct'"),
        ("ds_form", c.ds_form in ("seq", "token", "reward"), "'seq', 'token' or 'reward'"),
        ("scale_rewards", c.scale_rewards in ("group", "batch", "none"), "'group', 'batch' or 'none'"),
        ("agg", c.agg in loss.AGGS, f"one of {loss.AGGS}"),
        ("eval_split", c.eval_split in ("test", "val"), "'test' or 'val'"),
        ("parallelism", c.parallelism in ("ddp", "fsdp"), "'ddp' or 'fsdp'"),
        ("dgg_signal", c.dgg_signal in ("energy", "delta"), "'energy' or 'delta'"),
        ("dgg_window", c.dgg_window >= 2, ">= 2 (a standard deviation)"),
        ("reuse_max", c.reuse_max == 1 or (c.ppo_epochs == 1 and not c.lora_rank), "1 when ppo_epochs > 1 (both set "
         "the passes per batch) or with LoRA (DGG watches the LM head's gradient, and LoRA freezes it)"),
        ("cd_target", c.cd_target in ("uniform", "weighted"), "'uniform' or 'weighted'"),
        ("temperature", 0 < c.temperature < INF, "> 0 (eval.py takes 0 for greedy decoding)"),
        ("lr", 0 < c.lr < INF, "> 0"),
        ("max_steps", c.max_steps >= 0, ">= 0 (0: evaluate only)"),
        ("warmstart_steps", c.warmstart_steps >= 1, ">= 1"),
        ("base_seed", c.init_from != "tiny" or os.path.isdir(SHIPPED_BASE.format(c.base_seed)),
         f"one of the shipped bases {sorted(int(d[4:]) for d in os.listdir(BASES) if d[4:].isdigit())} (assets/base)"),
        ("dynamic_max_draws", c.dynamic_max_draws >= 1, ">= 1"),
        ("group_size", c.group_size >= 2, ">= 2 (group-relative advantages)"),
        *((k, getattr(c, k) >= 1, ">= 1") for k in ("prompts_per_step", "micro_batch_size", "max_new_tokens", "eval_n",
                                                  "final_eval_n", "eval_batch_rows", "eval_problems", "n_problems",
                                                  "ppo_epochs", "reuse_max")),
        *((k, c.max_steps == 0 or getattr(c, k) >= 1, ">= 1")
          for k in ("eval_interval", "ckpt_interval", "log_interval")),
        *((k, 0 <= getattr(c, k) < INF, ">= 0") for k in ("alpha", "beta", "kl_coef", "entropy_coef", "weight_decay",
                                                        "grad_clip", "eps_high")),
        ("eps_low", 0 <= c.eps_low < 1, "in [0, 1): the ratio is clipped below at 1 - eps_low"),
        ("top_entropy_frac", 0 < c.top_entropy_frac <= 1, "in (0, 1]"),
        ("stapo_q", 0 <= c.stapo_q <= 1, "in [0, 1]"),
        ("ict_warmup_steps", c.ict_warmup_steps >= 0, ">= 0"),
        ("dasd_beta", 0 <= c.dasd_beta < INF, ">= 0"),
        ("dasd_rho", 0 <= c.dasd_rho <= 1, "in [0, 1]"),
        ("dasd_norm", c.dasd_norm in loss.DASD_NORMS, f"one of {loss.DASD_NORMS}"),
        ("warmstart_hint_frac", c.warmstart_hint_frac == -1 or 0 <= c.warmstart_hint_frac <= 1,
         "in [0, 1], or -1 (auto)"),
        ("val_problems", c.val_problems >= 0, ">= 0"),
        ("cd_min_num", 1 <= c.cd_min_num <= c.cd_max_num, f"in 1..cd_max_num={c.cd_max_num}"),
        ("cd_sizes", all(k.strip() in ("2", "3", "4") for k in c.cd_sizes.split(",")), "sizes from 2 to 4 like '4' or "
         "'3,4': the solver takes about 1 s for one 5-number problem and 13 s for a 6-number one, hours for a data set"),
        ("device", c.device.split(":")[0] in ("cpu", "cuda", "mps"), "'cpu', 'cuda' or 'mps'"),
        ("device", not c.device.startswith("cuda") or torch.cuda.is_available(), "'cpu' on this machine: torch sees "
         "no CUDA GPU"),
        *((k, getattr(c, k) >= 1, ">= 1") for k in ("cd_max_target", "cd_min_solutions")),
        ("val_problems", c.val_problems < c.n_problems, f"< n_problems={c.n_problems}, to leave problems to train on"),
        ("ict_frac", 0 < c.ict_frac <= 1, "in (0, 1]"),
        ("init_from", c.init_from in ("tiny", "scratch", "resume", "smollm2-135m")
         or os.path.exists(os.path.expanduser(c.init_from)) or not c.init_from.startswith((".", "/", "~"))
         and not c.init_from.endswith(".gguf"), "'tiny', 'scratch', 'resume', 'smollm2-135m' (fetched once), a hub "
         "name, or an existing directory or .gguf file"),  # a hub name is checked when it loads: offline, if cached
    ]
    for key, ok, need in ranges:
        if not ok:
            raise SystemExit(f"{key} must be {need}, got {cfg[key]!r}")


def check_run(cfg, state, ddp, world):
    """What depends on how the run is launched: a resumed checkpoint's step, torchrun's processes."""
    if state and cfg["max_steps"] < state["step"]:
        raise SystemExit(f"max_steps={cfg['max_steps']} is before the checkpoint's step {state['step']}: give a later one")
    if cfg["dynamic_sampling"] and ddp:  # each rank would draw again on its own: the shared prompt sampler diverges
        raise SystemExit("dynamic_sampling runs in one process: drop it, or run without torchrun")
    if cfg["prompts_per_step"] % world:
        raise SystemExit(f"prompts_per_step={cfg['prompts_per_step']} must be a multiple of the {world} torchrun "
                         f"processes")


def check_data(cfg, train_set, test_set):
    """What depends on the problems loaded (a hub set's size is known only then); train_set before the validation
    split is taken from it."""
    if train_set and cfg["val_problems"] >= len(train_set):
        raise SystemExit(f"val_problems={cfg['val_problems']} would leave none of the {len(train_set)} training "
                         f"problems to train on: give a smaller val_problems (0: no validation split) or a larger "
                         f"n_problems")
    if len(train_set) <= cfg["val_problems"] or not test_set:
        raise SystemExit(f"dataset {cfg['dataset']!r} has no train or no test problems for task {cfg['task']!r}")
    if cfg["eval_split"] == "val" and not cfg["val_problems"]:
        raise SystemExit("eval_split='val' needs a validation split: give val_problems > 0")
    if cfg["prompts_per_step"] > len(train_set) - cfg["val_problems"]:
        raise SystemExit(f"prompts_per_step={cfg['prompts_per_step']} is more than the "
                         f"{len(train_set) - cfg['val_problems']} training problems")
