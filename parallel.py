"""
Data parallelism under torchrun, in the few collectives train.py needs. Each rank owns whole groups of
the global batch; its loss is its share of the global-batch loss, so summing the ranks' gradients gives
the single-process gradient (tests/test_ddp.py). Without torchrun nothing here is called.
"""
import os

import torch
import torch.distributed as dist


def setup(device):
    """(ddp, rank, world, device): launched by torchrun, one process per GPU (or per CPU process, gloo)."""
    if "RANK" not in os.environ:
        return False, 0, 1, device
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda"):
        device = f"cuda:{os.environ['LOCAL_RANK']}"
        torch.cuda.set_device(device)
    return True, dist.get_rank(), dist.get_world_size(), device


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


def sum_gradients(model):
    for p in model.parameters():  # NCCL queues these on the GPU stream without blocking the CPU
        if p.grad is not None:
            dist.all_reduce(p.grad)


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
    same summed gradients, same update)."""
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    rank0 = params.clone()
    dist.broadcast(rank0, 0)
    diff = (params - rank0).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return diff.item()


def teardown():
    dist.barrier()  # together: a rank that exits while the other is still in gloo can abort it
    dist.destroy_process_group()
