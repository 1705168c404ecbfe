"""What `accelerate launch` set up, fitted to a run: the accelerator and its checks, the reference
model's precision, and the optimizer's whole state whatever holds the weights.

The optimizer state in a checkpoint is whole, so that a run resumes on any number of processes,
sharded or not: under FSDP each process holds only its shard, and torch's distributed state-dict
functions gather it onto the first process (every process calls them) and cut each process's shard
out of it when loading. Names rather than positions as keys: the same file loads into one process,
DDP or FSDP.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import TYPE_CHECKING, Callable, ContextManager

import torch
from torch import nn

from symrl.config import ConfigError
from symrl.device import resolve_device
from symrl.llm.config import RLHFConfig
from symrl.llm.policy import Reference

if TYPE_CHECKING:
    from accelerate import Accelerator


def make_accelerator(cfg: RLHFConfig) -> Accelerator:
    """The run's accelerator (one process, or what `accelerate launch` set up), checked against ``cfg``."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=resolve_device(cfg.device).type == "cpu", gradient_accumulation_steps=cfg.grad_accum,
                              mixed_precision=None if cfg.mixed_precision == "auto" else cfg.mixed_precision)
    check_distributed(accelerator, cfg)
    return accelerator


def check_distributed(accelerator: Accelerator, cfg: RLHFConfig) -> None:
    """What `accelerate launch` set up must fit the run: FSDP version 2 only (the one tested: its
    gathered weights serve ``generate`` inside the root's forward), full-precision weights under
    FSDP, DeepSpeed ZeRO-2 (not 3), which gets its micro-batch size and must accumulate
    ``grad_accum`` micro-batches."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP and not accelerator.is_fsdp2:
        raise ConfigError("accelerate: fsdp_version 1 is not supported by symrl rlhf; allowed: fsdp_version: 2 "
                          "(configs/accelerate/fsdp.yaml), DDP or DeepSpeed ZeRO-2")
    if kind == DistributedType.FSDP and cfg.reward.kind == "adapter":
        raise ConfigError("reward.kind: adapter runs the policy's base outside the FSDP-wrapped forward; allowed "
                          "with FSDP: another kind (or the adapter reward with DDP, DeepSpeed ZeRO-2, one process)")
    if kind == DistributedType.FSDP and cfg.policy.load_in != "full":
        raise ConfigError(f"policy.load_in: {cfg.policy.load_in} weights are not sharded by symrl's FSDP "
                          "path; allowed with FSDP: full (or quantized with DDP / one process)")
    if accelerator.gradient_accumulation_steps != cfg.grad_accum:
        raise ConfigError(f"grad_accum: got {cfg.grad_accum} but the accelerate config accumulates "
                          f"{accelerator.gradient_accumulation_steps}; allowed: the same number in both")
    if kind == DistributedType.DEEPSPEED and accelerator.state.deepspeed_plugin.zero_stage == 3:
        raise ConfigError("accelerate: DeepSpeed ZeRO-3 is not supported by symrl rlhf; allowed: ZeRO-2 "
                          "(configs/accelerate/deepspeed_zero2.yaml), FSDP 2 (configs/accelerate/fsdp.yaml) or DDP")
    if kind == DistributedType.DEEPSPEED:
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = (
            cfg.minibatch_size // cfg.grad_accum)


def match_reference_precision(accelerator: Accelerator, reference: Reference, policy: torch.nn.Module
                              ) -> Callable[[], ContextManager]:
    """The reference copy must compute as the policy does, or the KL is above 0 before any update.
    accelerate autocasts the wrapped policy's forward (one process, DDP): the copy runs under the
    same autocast. FSDP 2 (its mixed-precision policy) and DeepSpeed compute in a parameter dtype
    without autocast: the copy is cast to that dtype. The LoRA reference runs through the wrapped
    forward itself."""
    from accelerate.utils import DistributedType

    if accelerator.is_fsdp2:
        dtype = getattr(accelerator.state.fsdp_plugin.mixed_precision_policy, "param_dtype", None)
    elif accelerator.distributed_type == DistributedType.DEEPSPEED:
        dtype = next(policy.parameters()).dtype
    else:
        return accelerator.autocast
    if dtype is not None and reference.model is not None:
        for param in reference.model.parameters():  # buffers (rotary frequencies) keep their
            param.data = param.data.to(dtype)            # dtype, as the policy's do
    return nullcontext


def optimizer_state(accelerator: Accelerator, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict | None:
    """``None`` under DeepSpeed, whose sharded state is not saved (a resumed run says that Adam
    restarts); the whole state otherwise (gathered under FSDP: every process calls this)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return None
    return whole_optimizer_state(model, optimizer)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict | None) -> None:
    if state is None:
        print("symrl: this checkpoint holds no optimizer state (DeepSpeed run): Adam restarts", file=sys.stderr)
        return
    load_whole_optimizer_state(model, optimizer, state)


def any_process(accelerator: Accelerator, flag: bool) -> bool:
    """Whether ``flag`` holds on any process (a collective: every process calls it)."""
    return accelerator.reduce(torch.tensor(float(flag), device=accelerator.device), "sum").item() > 0


def whole_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_whole_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    from torch.distributed.fsdp import FSDPModule

    # full_state_dict: each FSDP process cuts its shard out of the whole state
    set_optimizer_state_dict(model, optimizer, state,
                             options=StateDictOptions(full_state_dict=isinstance(model, FSDPModule)))
