"""``symrl`` with accelerate in FSDP 2 mode on CPU processes (gloo), for tests only:
``python -m torch.distributed.run --nproc_per_node 2 tests/accelerate_fsdp_on_cpu.py rlhf key=value …``

accelerate turns FSDP on for GPUs only. After an ``Accelerator`` is built, this sets what it would
have set there (the distributed type, in both of its state singletons, and an FSDP 2 plugin with
the run's mixed precision), so the trainer goes through accelerate's real FSDP 2 preparation,
state dicts, clipping and no-sync, and torch's real sharding."""

import sys

from accelerate import Accelerator
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from symrl.cli import main

_build = Accelerator.__init__


def _build_with_fsdp2(self, *args, **kwargs):
    _build(self, *args, **kwargs)
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                                            reshard_after_forward=True, state_dict_type="FULL_STATE_DICT")
    if self.mixed_precision != "no":
        plugin.set_mixed_precision(self.mixed_precision)
    self.state.fsdp_plugin = plugin
    self.state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


if __name__ == "__main__":
    Accelerator.__init__ = _build_with_fsdp2
    sys.exit(main(sys.argv[1:]))
