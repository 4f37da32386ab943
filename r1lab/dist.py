"""Several processes (torchrun): the process group, collectives on Python values and small tensors, FSDP2
sharding, sharded checkpoint state, and the launcher.

    torchrun --nproc-per-node N -m r1lab run RECIPE --out DIR        or   r1lab run RECIPE --out DIR --nproc N

In one process (no torchrun) there is no process group: every function here returns its input or does
nothing, so one-process results are exactly what they were. With N processes (docs/SCALE.md):
- each rank samples prompts_per_step / N prompts of every step (`share`), a group's G completions on one rank;
- the policy trains as an FSDP2-sharded copy (`training_copy`: `fully_shard` per decoder layer, then the
  whole model); after each step its weights are gathered into the whole model every rank keeps
  (`copy_weights`), which the engine samples from and rank 0 saves;
- each rank's loss is its share of the minibatch's (normalised by counts over all ranks) and gradients are
  summed over ranks, so a step computes the one-process step's gradient.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

_mesh = None


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init() -> None:
    """Joins the process group torchrun's environment describes (gloo on CPU, nccl on CUDA, each rank on
    its LOCAL_RANK's GPU); nothing in one process or when already joined. (Ranks other than 0 print nothing:
    r1lab/progress.py.)"""
    if not launched() or dist.is_initialized():
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    # Long: the other ranks wait while rank 0 alone evaluates models and runs data and SFT stages.
    timeout = datetime.timedelta(seconds=int(os.environ.get("R1LAB_DIST_TIMEOUT", str(4 * 3600))))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)


def close() -> None:
    global _mesh
    if dist.is_initialized():
        dist.destroy_process_group()
    _mesh = None


@contextlib.contextmanager
def process_group():
    """`init()` for the duration of the block (e.g. a `r1lab run`), then leaves the group."""
    init()
    try:
        yield
    finally:
        close()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the process that writes logs, checkpoints' shared files and final models."""
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def _device() -> torch.device:
    """Where collectives' tensors live: the rank's GPU for nccl, the CPU for gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# Collectives; each returns its input unchanged in one process


def all_gather_objects(value) -> list:
    """Every rank's `value` (anything picklable), in rank order; [value] in one process."""
    if world_size() == 1:
        return [value]
    out = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


def from_main(compute):
    """compute() on rank 0 and its result on every rank (one process: compute()), for a decision that
    must be taken once, such as which checkpoint to resume from."""
    if world_size() == 1:
        return compute()
    return all_gather_objects(compute() if is_main() else None)[0]


def cat_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """Every rank's x (n_r, ...) concatenated in rank order (sizes may differ); x in one process."""
    return x if world_size() == 1 else torch.cat([part.to(x.device) for part in all_gather_objects(x)])


def _all_reduce(x, op):
    if world_size() == 1:
        return x
    if isinstance(x, torch.Tensor):
        y = x.detach().to(_device(), copy=True)
        dist.all_reduce(y, op)
        return y.to(x.device)
    y = torch.tensor(x, dtype=torch.float64 if isinstance(x, float) else torch.long, device=_device())
    dist.all_reduce(y, op)
    return type(x)(y.item())


def sum_over_ranks(x):
    """The sum over ranks of a number or tensor (a copy; the input is left as it is); x in one process."""
    return _all_reduce(x, dist.ReduceOp.SUM)


def max_over_ranks(x):
    return _all_reduce(x, dist.ReduceOp.MAX)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """rl.algorithms.masked_mean over every rank's entries (PPO's advantage whitening); the same ops in one process."""
    mask = mask.to(x.dtype)
    return sum_over_ranks((x * mask).sum()) / sum_over_ranks(mask.sum()).clamp(min=1)


def combine_stats(stats: dict, summed: tuple[str, ...] = ()) -> dict:
    """A step's stats over every rank: the keys in `summed` added up (each rank logged its share of a
    total), the others averaged over the ranks that have them. `stats` itself in one process."""
    if world_size() == 1:
        return stats
    every = all_gather_objects(stats)
    out = {}
    for key in dict.fromkeys(k for s in every for k in s):
        values = [s[key] for s in every if s.get(key) is not None]
        out[key] = None if not values else sum(values) if key in summed else sum(values) / len(values)
    return out


def by_rank(value) -> object:
    """For a checkpoint: every rank's `value` (a list by rank) when values differ by rank (random states);
    `value` itself in one process. `this_rank` reads it back."""
    return value if world_size() == 1 else all_gather_objects(value)


def this_rank(saved) -> object:
    return saved if world_size() == 1 else saved[rank()]


def check_world_size(saved: int, where) -> None:
    """A checkpoint resumes with as many processes as wrote it: optimizer shards and random states are per rank."""
    if saved != world_size():
        raise ValueError(f"checkpoint {where} was written by {saved} process(es) and this run has {world_size()}: "
                         f"resume it with the same number (r1lab run ... --nproc {saved}), or start a new --out directory")


# ---------------------------------------------------------------------------------------------
# Data parallel: which prompts and rows are this rank's


def share(n: int) -> slice:
    """This rank's part of n items split evenly in rank order (a step's prompts); slice(0, n) in one process."""
    w = world_size()
    if n % w:
        raise ValueError(f"rl.prompts_per_step={n} does not split evenly over {w} processes: use a multiple of {w}")
    k = n // w
    return slice(rank() * k, (rank() + 1) * k)


class Rows:
    """This rank's rows of a batch that every rank holds a part of, in rank order (rank 0's rows first):
    rows offset .. offset + count - 1 of `total`. In one process, all of them."""

    def __init__(self, count: int):
        counts = all_gather_objects(count)
        self.count, self.total, self.offset = count, sum(counts), sum(counts[: rank()])

    def own(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's part of x (total, ...); x itself in one process."""
        return x if self.count == self.total else x[self.offset : self.offset + self.count]

    def local(self, rows: torch.Tensor) -> torch.Tensor:
        """The rows among `rows` (indices into all ranks' rows) that are this rank's, as indices into its own, in order."""
        if self.count == self.total:
            return rows
        return rows[(rows >= self.offset) & (rows < self.offset + self.count)] - self.offset


# ---------------------------------------------------------------------------------------------
# FSDP2


def _fsdp_mesh():
    global _mesh
    if _mesh is None:
        from torch.distributed.device_mesh import init_device_mesh

        _mesh = init_device_mesh(_device().type, (world_size(),))
    return _mesh


def shard(model: torch.nn.Module) -> torch.nn.Module:
    """Shards `model` in place with FSDP2: `fully_shard` on each decoder layer (the classes its HF
    `_no_split_modules` names), then on the whole model; gradients are summed over ranks, not averaged.
    The model itself in one process.

    In bf16 (models.py: fp32 master weights) each layer's weights are gathered in bf16 and its gradients
    reduced in fp32 (MixedPrecisionPolicy): half the traffic, and the bf16 weights are freed layer by
    layer. Autocast alone would gather fp32 and keep every layer's bf16 cast until the backward, the whole
    model on every rank. The forward passes still run under models.autocast, so softmaxes and log-probs
    stay fp32; norms compute with bf16 weights here, so a sharded bf16 step matches one process's to bf16
    rounding (in fp32 exactly)."""
    if world_size() == 1:
        return model
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    from r1lab.models.device import compute_dtype

    precision = MixedPrecisionPolicy(param_dtype=compute_dtype(model), reduce_dtype=torch.float32)
    layer_classes = {name for m in model.modules() for name in (getattr(m, "_no_split_modules", None) or ())}
    for layer in [m for m in model.modules() if type(m).__name__ in layer_classes]:
        fully_shard(layer, mesh=_fsdp_mesh(), mp_policy=precision)
    fully_shard(model, mesh=_fsdp_mesh(), mp_policy=precision)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            # Each rank's loss is its share of the minibatch's, so the gradient is the sum over ranks (FSDP's
            # default averages). A plain sum: gloo has no pre-multiplied sum.
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)
    return model


def training_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The module an optimizer trains: `model` itself in one process; with several, an FSDP2-sharded
    copy (`shard`), whose weights `copy_weights` brings back into `model` after each step."""
    if world_size() == 1:
        return model
    import copy

    return shard(copy.deepcopy(model))


@torch.no_grad()
def copy_weights(sharded: torch.nn.Module, whole: torch.nn.Module) -> None:
    """Gathers `sharded`'s weights into `whole` on every rank (one all-gather per tensor); nothing when
    they are the same module (one process)."""
    if sharded is whole:
        return
    params = dict(whole.named_parameters())
    for name, p in sharded.named_parameters():
        params[name].copy_(p.full_tensor())


class TrainingState:
    """The optimizer and the modules it trains (the policy and named extras, e.g. PPO's value model), as a
    checkpoint keeps them.

    One process: `save` returns the optimizer's and the extras' state dicts for trainer_state.pt (the
    policy's weights are the checkpoint's model files) and `load` reads them back. Several: every rank
    writes its shards of all of them, the policy's included, into `folder` with torch.distributed.checkpoint
    (a file per rank and an index) and reads its own back, so a sharded run resumes exactly as it was.
    """

    def __init__(self, optimizer, policy: torch.nn.Module, **extras: torch.nn.Module | None):
        self.optimizer, self.policy, self.extras = optimizer, policy, extras

    def save(self, folder: Path) -> dict:
        if world_size() == 1:
            return {"optimizer": self.optimizer.state_dict(),
                    **{name: m.state_dict() if m is not None else None for name, m in self.extras.items()}}
        import torch.distributed.checkpoint as dcp

        dcp.save(self._sharded(), checkpoint_id=str(folder))
        return {}

    def load(self, state: dict, folder: Path) -> None:
        if world_size() == 1:
            for name, m in self.extras.items():
                if m is not None:
                    m.load_state_dict(state[name])
            self.optimizer.load_state_dict(state["optimizer"])
            return
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_state_dict

        sharded = self._sharded()
        dcp.load(sharded, checkpoint_id=str(folder))
        set_state_dict(self._modules(), self.optimizer, model_state_dict=sharded["model"], optim_state_dict=sharded["optimizer"])

    def _modules(self) -> torch.nn.ModuleDict:  # names the optimizer's parameters
        return torch.nn.ModuleDict({"policy": self.policy, **{k: m for k, m in self.extras.items() if m is not None}})

    def _sharded(self) -> dict:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model, optimizer = get_state_dict(self._modules(), self.optimizer)
        return {"model": model, "optimizer": optimizer}


# ---------------------------------------------------------------------------------------------
# Launching


def launch(nproc: int, argv: list[str]) -> int:
    """Runs `python -m r1lab ARGV` as nproc processes on this machine (torch.distributed.run, as torchrun
    --standalone); returns their exit status."""
    if launched():
        raise ValueError("--nproc starts its own processes: under torchrun, leave it out")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "r1lab", *argv]
    return subprocess.call(command)
