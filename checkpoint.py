"""
A run's files in out_dir, kept out of train.py's way: the out_dir checks, the checkpoint (out_dir/ckpt:
save_pretrained + state.pt with the optimizer, every rank's RNG state and the run's config) and its
restore, and the metrics log (out_dir/metrics.jsonl, one JSON record per line).
"""
import json
import os
from ast import literal_eval
import shutil
import tempfile

import torch

import parallel
from configurator import renamed
from model import save_policy


# ----------------------------------------------------------------------------- out_dir
_lock = None  # the open lock file of this process's out_dir: the OS releases it when the process dies


def lock_out_dir(out_dir):
    """One run per out_dir: an exclusive lock on out_dir/.lock, held until this process ends (a crashed or killed
    run holds nothing, so it never blocks its own resume). A second run into the same out_dir is one line."""
    global _lock
    import fcntl
    f = open(os.path.join(out_dir, ".lock"), "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise SystemExit(f"{out_dir} is in use by another train.py (pid {pid}): wait for it to finish, or give "
                         f"another --out_dir")
    f.seek(0), f.truncate(), f.write(str(os.getpid())), f.flush()
    _lock = f


def recover(ckpt_dir):
    """Puts a checkpoint back in order after a kill inside save_checkpoint: the complete checkpoint is ckpt, or
    ckpt.old when the kill came between the two renames; a leftover ckpt.tmp (half written) or ckpt.old (already
    replaced) is removed, so that the next save's renames succeed."""
    tmp, old = ckpt_dir + ".tmp", ckpt_dir + ".old"
    if not os.path.exists(os.path.join(ckpt_dir, "state.pt")) and os.path.exists(os.path.join(old, "state.pt")):
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        os.replace(old, ckpt_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def check_out_dir(out_dir, resuming, master=True):
    """Refuses, in one line and before anything is written, an out_dir that cannot be written to, one that another
    run is using, and a fresh run in an out_dir that already holds a run (it would overwrite it). Takes the
    out_dir's lock and puts a checkpoint killed mid-save back in order. Returns the checkpoint dir."""
    try:  # an unwritable or invalid out_dir: one line here rather than a traceback at the first write
        os.makedirs(out_dir, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()
    except (OSError, ValueError) as e:
        raise SystemExit(f"cannot write to out_dir={out_dir!r} ({getattr(e, 'strerror', None) or e}): give another one")
    if master:  # under torchrun rank 0 holds the lock for all
        lock_out_dir(out_dir)
    ckpt_dir = os.path.join(out_dir, "ckpt")
    if not resuming and any(os.path.exists(p) for p in (ckpt_dir, ckpt_dir + ".old",
                                                        os.path.join(out_dir, "final_eval.json"))):
        raise SystemExit(f"{out_dir} already holds a run: continue it with --init_from=resume, or start over "
                         f"in a new --out_dir (or delete {ckpt_dir} and {out_dir}/final_eval.json first)")
    if master:
        recover(ckpt_dir)
    return ckpt_dir


# ----------------------------------------------------------------------------- checkpoint
def load_state(ckpt_dir):
    """The checkpoint's state.pt: step, optimizer, python_rng, rng (per rank), config, ref_source."""
    path = os.path.join(ckpt_dir, "state.pt")
    if not os.path.exists(path) and os.path.exists(os.path.join(ckpt_dir + ".old", "state.pt")):
        path = os.path.join(ckpt_dir + ".old", "state.pt")  # killed between the two renames: recover() fixes it
    if not os.path.exists(path):
        raise SystemExit(f"init_from='resume' but there is no checkpoint in {ckpt_dir}")
    try:
        return torch.load(path, weights_only=False)
    except Exception as e:  # truncated or not a torch file
        raise SystemExit(f"cannot read {path} ({type(e).__name__}: {str(e).splitlines()[0][:120]}): the checkpoint "
                         f"is damaged; start over in a new --out_dir")


# settings a resumed run cannot change: the data it trains on, the model and its adapter, the problems step 0 was
# evaluated on (a larger final_eval_n is fine: compare.py evaluates finished runs again that way, and the
# start-vs-final table is printed only when the two n agree)
FIXED_AT_RESUME = ("task", "dataset", "n_problems", "data_seed", "val_problems", "cd_sizes", "cd_min_num",
                   "cd_max_num", "cd_max_target", "cd_min_solutions", "cd_target", "template", "base_seed",
                   "warmstart_steps", "warmstart_hint_frac", "lora_rank", "lora_alpha", "lora_target_modules",
                   "eval_split", "eval_problems")


def _same(saved, text):  # a saved setting against its --key=value text
    try:
        return saved == type(saved)(literal_eval(text)) if not isinstance(saved, str) else saved == text
    except (ValueError, SyntaxError, TypeError):
        return False


def run_settings(ckpt_dir):
    """The settings of the train.py run that wrote checkpoint ckpt_dir ({} for anything else: a hub model, the
    shipped base): settings.json, or the config in state.pt of a checkpoint older than that file."""
    if os.path.exists(os.path.join(ckpt_dir, "settings.json")):
        with open(os.path.join(ckpt_dir, "settings.json")) as f:
            return json.load(f)
    return load_state(ckpt_dir)["config"] if os.path.exists(os.path.join(ckpt_dir, "state.pt")) else {}


def saved_settings(state, argv):
    """The resumed run's own settings, except those given again on the command line (they win) and the
    device and dtype, which are this machine's. A change the checkpoint cannot honour (FIXED_AT_RESUME) is
    one line listing every one of them."""
    given = {a[2:].partition("=")[0]: a[2:].partition("=")[2] for a in argv if a.startswith("--")}
    saved = renamed(state["config"])  # a checkpoint from before a key's rename, in today's names
    changed = [f"{k} ({saved[k]!r} -> {given[k]})" for k in FIXED_AT_RESUME
               if k in given and k in saved and not _same(saved[k], given[k])]
    if changed:
        raise SystemExit(f"a resumed run cannot change {', '.join(changed)}: drop them, or start a new --out_dir")
    keep = set(given) | {"init_from", "device", "dtype"}
    return {k: v for k, v in saved.items() if k not in keep}


def save_checkpoint(ckpt_dir, model, tokenizer, state, weights=None):
    """save_pretrained (with LoRA, the adapter only) + state.pt, written to a temp dir and swapped in with
    renames, so a run killed at any moment leaves the previous complete checkpoint (or the new one; recover()
    tidies up). A full disk is one line, and its partial files are removed.
    weights: the model's full state dict when the model itself holds only shards (FSDP, parallel.full_state)."""
    tmp, old = ckpt_dir + ".tmp", ckpt_dir + ".old"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_policy(model, tokenizer, tmp, weights)
        torch.save(state, os.path.join(tmp, "state.pt"))
        if "config" in state:  # the run's settings, readable without torch (eval.py evaluates with them)
            with open(os.path.join(tmp, "settings.json"), "w") as f:
                json.dump(state["config"], f, indent=2)
    except (OSError, RuntimeError) as e:  # ENOSPC comes as OSError, or from torch.save as a RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0][:100]
        raise SystemExit(f"cannot write the checkpoint of step {state['step']} to {tmp} ({reason}; a full disk?): "
                         f"the previous checkpoint in {ckpt_dir} is intact; free space and resume with "
                         f"--init_from=resume")
    shutil.rmtree(old, ignore_errors=True)  # a leftover of a kill after the last save's second rename
    if os.path.exists(ckpt_dir):
        os.replace(ckpt_dir, old)
    os.replace(tmp, ckpt_dir)
    shutil.rmtree(old, ignore_errors=True)


def restore(state, model, optimizer, python_rng, rank, world, seed, device, fsdp):
    """Puts a resumed run's optimizer state and RNG streams back. The optimizer keeps this run's lr, weight decay and
    betas: the saved ones would otherwise win over a resume's --lr."""
    hyper = [{k: group[k] for k in ("lr", "weight_decay", "betas")} for group in optimizer.param_groups]
    parallel.load_optimizer(model, optimizer, state["optimizer"], fsdp)
    for group, h in zip(optimizer.param_groups, hyper):
        group.update(h)
    restore_rng(state, python_rng, rank, world, seed, device)  # the prompt sampler and this rank's stream


def save_run(ckpt_dir, model, tokenizer, optimizer, fsdp, master, device, ddp, world, state):
    """train.py's checkpoint: the weights, the optimizer's state and every rank's RNG streams, with `state` (step,
    config, ...). Every rank calls it: gathering the RNG states and FSDP's shards are collectives; rank 0 writes."""
    rank_rng = rng_states(device, ddp, world)
    weights, optimizer_state = parallel.full_state(model, optimizer, fsdp)
    if master:
        save_checkpoint(ckpt_dir, model, tokenizer, {**state, "optimizer": optimizer_state, "rng": rank_rng}, weights)


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
        records = read_log(path, note=print)
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records if r.get("step", r.get("eval_step")) <= resumed_step)


def read_log(path, note=None):
    """The records of a metrics log. A last line cut short (a kill or a full disk while it was written) is
    dropped, with a note; a damaged line before it is one line naming it."""
    with open(path) as f:
        *whole, last = f.read().split("\n")  # last: '' when the file ends with a complete line
    records = []
    for i, line in enumerate(whole):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise SystemExit(f"{path} line {i + 1} is not a JSON record: fix or delete that line")
    try:
        if last.strip():
            records.append(json.loads(last))
    except json.JSONDecodeError:
        (note or print)(f"{path}: its last line was cut short ({len(last)} characters) and is left out")
    return records


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


def write_json(path, obj):
    """obj as JSON in path, whole or not at all: written to path.tmp, then renamed (a kill leaves no half file)."""
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


def find_eval(path, eval_step, n):
    """The logged evaluation at eval_step with n samples per problem, or None (also for a resumed run)."""
    return next((r for r in read_log(path) if r.get("eval_step") == eval_step and r["n"] == n), None)
