"""
Data parallelism under torchrun, in the few collectives and wrappers train.py needs. Each rank owns whole
groups of the global batch; its loss is its share of the global-batch loss, so the SUM of the ranks'
gradients is the single-process gradient (tests/test_ddp.py). Two ways to hold the model (`parallelism`):
  'ddp'   every rank a full copy; DistributedDataParallel all-reduces the gradients, overlapped with backward;
  'fsdp'  FSDP2 (torch.distributed.fsdp.fully_shard): parameters, gradients and AdamW states sharded over the
          ranks, each decoder layer gathered only while it computes; for a model that does not fit one GPU
          with AdamW (16 bytes per parameter). Rollouts and evaluations gather every parameter at once
          (`whole`), so the float32 weights alone (4 bytes per parameter) must fit.
Without torchrun nothing here communicates, and `wrap` only puts the log-prob pass behind a module's forward.
"""
import os
from contextlib import contextmanager, nullcontext

import torch
import torch.distributed as dist

from model import response_logprobs


def setup(device):
    """(ddp, rank, world, device): launched by torchrun, one process per GPU (or per CPU process, gloo)."""
    if "RANK" not in os.environ:
        return False, 0, 1, device
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda"):
        device = f"cuda:{os.environ['LOCAL_RANK']}"
        torch.cuda.set_device(device)
    return True, dist.get_rank(), dist.get_world_size(), device


# ----------------------------------------------------------------------------- the trained module
class ResponseLogprobs(torch.nn.Module):
    """model.response_logprobs as a module's forward. DDP and FSDP act through their module's forward (DDP
    readies its gradient hooks there, FSDP gathers the parameters), and our log-prob pass calls the policy's
    base model and LM head directly, never the policy's own forward: so they wrap this, and the rollout and
    evaluation keep using the policy itself (`model` in train.py) without gradients."""
    def __init__(self, policy):
        super().__init__()
        self.policy = policy

    def forward(self, input_ids, attention_mask, n_prompt, temperature):
        logp, entropy = response_logprobs(self.policy, input_ids, attention_mask, n_prompt, temperature)
        return logp.clone(), entropy.clone()  # not views: FSDP warns about views of its outputs (in-place ops)


def wrap(model, parallelism, device):
    """The module the update runs forward/backward through (update.py): the plain policy behind
    ResponseLogprobs (parallelism None), DDP, or FSDP2 with one shard group per decoder layer and one for
    the rest (embeddings, final norm, LM head: tied weights must share a group). Create the optimizer after
    this: FSDP replaces the parameters by their shards."""
    trained = ResponseLogprobs(model)
    if parallelism == "ddp":
        # broadcast_buffers=False: the buffers (rotary frequencies) are the same on every rank already
        return torch.nn.parallel.DistributedDataParallel(
            trained, device_ids=[device] if device.startswith("cuda") else None, broadcast_buffers=False)
    if parallelism == "fsdp":
        from torch.distributed.fsdp import fully_shard
        for layer in [m for m in model.modules() if type(m).__name__ in (model._no_split_modules or ())]:
            fully_shard(layer)  # HF names the decoder layer class in _no_split_modules
        fully_shard(trained)
        with torch.no_grad():  # FSDP takes the first module to run forward as its root: make it this one,
            ids = torch.ones(1, 2, dtype=torch.long, device=device)  # before the rollout calls a layer directly
            trained(ids, ids, 1, 1.0)
        trained.reshard()  # the root keeps its parameters gathered after forward: the optimizer wants the shards
    return trained


def no_sync(trained, skip):
    """DDP: no all-reduce in this micro-batch's backward (the gradients accumulate locally; the last
    micro-batch's backward all-reduces their sum). FSDP reduce-scatters every micro-batch: skipping it would
    keep a full unsharded gradient on every rank, the memory FSDP is there to save."""
    ddp = isinstance(trained, torch.nn.parallel.DistributedDataParallel)
    return trained.no_sync() if skip and ddp else nullcontext()


@contextmanager
def whole(trained):
    """FSDP: every parameter gathered on every rank for a rollout or evaluation (no per-layer all-gather at
    each decode step, and no collective at all inside, so ranks may run different numbers of forwards);
    sharded again after. Nothing to do for DDP or one process."""
    parts = []
    if dist.is_available() and dist.is_initialized():
        from torch.distributed.fsdp import FSDPModule
        parts = [m for m in trained.modules() if isinstance(m, FSDPModule)]
    for m in parts:
        m.unshard()
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for m in parts:
            m.reshard()
            m.set_reshard_after_forward(m is not trained, recurse=False)  # FSDP keeps the root's unsharded


def full_state(model, optimizer, fsdp):
    """(weights, optimizer state) for a checkpoint. FSDP: both gathered whole (a collective: every rank calls
    it; rank 0 gets them, on the CPU), the weights as the state dict save_pretrained writes, the optimizer
    state keyed by parameter name. Otherwise (None: the model's own state dict, optimizer.state_dict())."""
    if not fsdp:
        return None, optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)  # ranks > 0 get empty dicts
    weights, first = get_model_state_dict(model, options=options), {}
    for name, p in model.named_parameters(remove_duplicate=False):  # tied weights (LM head = embedding) were
        if first.setdefault(id(p), name) != name and name in weights:  # gathered twice: one tensor again, so
            weights[name] = weights[first[id(p)]]  # save_pretrained writes it once, as without FSDP
    return weights, get_optimizer_state_dict(model, optimizer, options=options)


def load_optimizer(model, optimizer, saved, fsdp):
    """A checkpoint's optimizer state back into this run's optimizer (FSDP: each rank keeps its shard)."""
    if not fsdp:
        return optimizer.load_state_dict(saved)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    set_optimizer_state_dict(model, optimizer, saved, options=StateDictOptions(full_state_dict=True))


# ----------------------------------------------------------------------------- collectives
def gather(obj, world):
    """Every rank's obj, index = rank (a collective: every rank calls it)."""
    objs = [None] * world
    dist.all_gather_object(objs, obj)
    return objs


def all_true(flag, device):
    """True on every rank if flag is True on every rank: decided together, since a rank that exited
    alone would leave the others waiting in the next all-reduce."""
    t = torch.tensor(float(flag), device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def mean_record(record, world, device):
    """A step's figures for the global batch: the mean over ranks (equal shares), the loss summed."""
    values = torch.tensor(list(record.values()), dtype=torch.float64, device=device)
    dist.all_reduce(values)
    keys = list(record)
    out = {k: v / world for k, v in zip(keys, values.tolist())}
    out.update(step=record["step"], loss=values[keys.index("loss")].item())
    return out


def max_param_diff(model):
    """The largest difference of any parameter from rank 0's: 0 when the ranks stayed in step (same start,
    same summed gradients, same update). DDP only: under FSDP each rank holds a different shard."""
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    rank0 = params.clone()
    dist.broadcast(rank0, 0)
    diff = (params - rank0).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return diff.item()


def teardown():
    dist.barrier()  # together: a rank that exits while the other is still in gloo can abort it
    dist.destroy_process_group()
