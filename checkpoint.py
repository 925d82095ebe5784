"""
A run's files in out_dir, kept out of train.py's way: the out_dir checks, the checkpoint (out_dir/ckpt:
save_pretrained + state.pt with the optimizer, every rank's RNG state and the run's config) and its
restore, and the metrics log (out_dir/metrics.jsonl, one JSON record per line).
"""
import json
import os
import shutil
import tempfile

import torch

from model import save_policy


# ----------------------------------------------------------------------------- out_dir
def check_out_dir(out_dir, resuming):
    """Refuses, in one line and before anything is written, an out_dir that cannot be written to, and a
    fresh run in an out_dir that already holds a run (it would overwrite it). Returns the checkpoint dir."""
    try:  # an unwritable or invalid out_dir: one line here rather than a traceback at the first write
        os.makedirs(out_dir, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()
    except (OSError, ValueError) as e:
        raise SystemExit(f"cannot write to out_dir={out_dir!r} ({getattr(e, 'strerror', None) or e}): give another one")
    ckpt_dir = os.path.join(out_dir, "ckpt")
    if not resuming and any(os.path.exists(p) for p in (ckpt_dir, ckpt_dir + ".old",
                                                        os.path.join(out_dir, "final_eval.json"))):
        raise SystemExit(f"{out_dir} already holds a run: continue it with --init_from=resume, or start over "
                         f"in a new --out_dir (or delete {ckpt_dir} and {out_dir}/final_eval.json first)")
    return ckpt_dir


# ----------------------------------------------------------------------------- checkpoint
def load_state(ckpt_dir):
    """The checkpoint's state.pt: step, optimizer, python_rng, rng (per rank), config, ref_source."""
    path = os.path.join(ckpt_dir, "state.pt")
    if not os.path.exists(path) and os.path.exists(ckpt_dir + ".old"):
        os.replace(ckpt_dir + ".old", ckpt_dir)  # killed between the two renames of save_checkpoint
    if not os.path.exists(path):
        raise SystemExit(f"init_from='resume' but there is no checkpoint in {ckpt_dir}")
    return torch.load(path, weights_only=False)


def saved_settings(state, argv):
    """The resumed run's own settings, except those given again on the command line (they win) and the
    device and dtype, which are this machine's."""
    keep = {a[2:].partition("=")[0] for a in argv if a.startswith("--")} | {"init_from", "device", "dtype"}
    return {k: v for k, v in state["config"].items() if k not in keep}


def save_checkpoint(ckpt_dir, model, tokenizer, state, weights=None):
    """save_pretrained (with LoRA, the adapter only) + state.pt, written to a temp dir and swapped in with
    renames, so a run killed at any moment leaves the previous complete checkpoint (or the new one).
    weights: the model's full state dict when the model itself holds only shards (FSDP, parallel.full_state)."""
    tmp, old = ckpt_dir + ".tmp", ckpt_dir + ".old"
    shutil.rmtree(tmp, ignore_errors=True)
    save_policy(model, tokenizer, tmp, weights)
    torch.save(state, os.path.join(tmp, "state.pt"))
    if os.path.exists(ckpt_dir):
        os.replace(ckpt_dir, old)
    os.replace(tmp, ckpt_dir)
    shutil.rmtree(old, ignore_errors=True)


def rng_states(device, ddp, world):
    """Every rank's own torch (and CUDA) generator state, index = rank. Each rank samples its own
    responses, so a resumed run must give each rank its own stream back, not rank 0's to all.
    Under torchrun a collective: every rank calls it."""
    mine = {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if device.startswith("cuda") else None}  # this rank's GPU
    if not ddp:
        return [mine]
    states = [None] * world
    torch.distributed.all_gather_object(states, mine)
    return states


def restore_rng(state, python_rng, rank, world, seed, device):
    """Puts back the prompt sampler's state (the same on every rank) and this rank's own torch/CUDA state."""
    python_rng.setstate(state["python_rng"])
    rank_rng = state.get("rng", [])  # rng_states() of the run that saved it
    if len(rank_rng) == world:
        torch.set_rng_state(rank_rng[rank]["torch"])
        if rank_rng[rank]["cuda"] is not None and device.startswith("cuda"):
            torch.cuda.set_rng_state(rank_rng[rank]["cuda"])
    else:  # saved by another number of ranks: fresh streams, not those of the steps before
        torch.manual_seed(seed + rank + world * state["step"])


# ----------------------------------------------------------------------------- metrics log
def start_log(path, resumed_step=None):
    """A fresh run (resumed_step None) starts a fresh log: a run without a checkpoint left nothing to resume.
    A resumed run drops what the stopped run logged after its last checkpoint, so no step is logged twice."""
    if resumed_step is None:
        open(path, "w").close()
    elif os.path.exists(path):
        with open(path) as f:
            records = [json.loads(line) for line in f]
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records if r.get("step", r.get("eval_step")) <= resumed_step)


def log_record(path, record, wandb=None):
    """Appends one record (a step's metrics, or an evaluation: it has 'eval_step') to the log, and sends its
    scalars to wandb if given: pass@k as pass@<k>, evaluations under eval/ (both kinds have 'accuracy')."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    if wandb is not None:
        pre = "eval/" if "eval_step" in record else ""
        flat = {**record, **{f"pass@{k}": v for k, v in record.get("pass@k", {}).items()}}
        wandb.log({pre + k: v for k, v in flat.items() if type(v) in (int, float)},
                  step=record.get("step", record.get("eval_step")))


def find_eval(path, eval_step, n):
    """The logged evaluation at eval_step with n samples per problem, or None (also for a resumed run)."""
    with open(path) as f:
        return next((r for r in map(json.loads, f) if r.get("eval_step") == eval_step and r["n"] == n), None)
