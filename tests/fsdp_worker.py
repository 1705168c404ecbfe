"""One process of tests/test_llm_distributed.py (``torch.distributed.run``, 2 CPU processes, gloo).

Shards an ActorCritic as accelerate's FSDP 2 does (each transformer block its own unit, then the
whole module) and checks it against an unsharded copy: sampling (also with processes that stop at
different steps), scoring, the LoRA reference, one clipped AdamW step, ``ActorCritic.save`` of the
gathered weights, and the whole optimizer state saved from FSDP and loaded into FSDP and into DDP."""

import copy
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard

from symrl.llm.config import PolicyConfig
from symrl.llm.policy import Reference, build_actor_critic
from symrl.run import load_checkpoint, save_checkpoint
from symrl.llm.distributed import load_whole_optimizer_state, whole_optimizer_state


def shard(actor, mesh):
    for module in list(actor.modules()):
        if type(module).__name__ in actor._no_split_modules:
            fully_shard(module, mesh=mesh)
    actor = fully_shard(actor, mesh=mesh)
    assert sum(isinstance(m, FSDPModule) for m in actor.modules()) > 2, "the blocks were not sharded one by one"
    return actor


def adamw(model):
    """eps ≫ |grad|: AdamW's first steps are ±lr for any gradient ≫ eps, so float noise in a gradient
    near zero (reduce-scatter vs. one process) would flip whole updates; a large eps keeps them smooth."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1, eps=1.0)


def step(model, optimizer, ids, mask, start):
    logits, values = model(ids, mask, start)
    loss = torch.log_softmax(logits, -1)[..., 3].mean() + (values ** 2).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 0.05)
    optimizer.step()
    optimizer.zero_grad()


def whole_weights(model) -> dict:
    """Gathered on every process (accelerate's get_state_dict gathers onto the first one only)."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def same(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), (what, sorted(set(a) ^ set(b)))
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), (what, key, (a[key] - b[key]).abs().max())


def check(cfg: PolicyConfig, out: Path, mesh) -> None:
    torch.manual_seed(0)
    whole = build_actor_critic(cfg)
    sharded = shard(copy.deepcopy(whole), mesh)
    # optimizers before any forward pass, as accelerate.prepare builds them: after a forward pass
    # the root unit's parameters stay gathered, and parameters() would name the gathered copies
    opt_sharded, opt_whole = adamw(sharded), adamw(whole)
    ids = torch.randint(1, 60, (4, 10))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # a left-padded prompt
    ids[0, :3] = 0
    with torch.no_grad():
        samples = []
        for model in (sharded, whole):
            torch.manual_seed(1)
            samples.append(model(ids, mask, mode="generate", do_sample=True, top_k=0, max_new_tokens=6,
                                 min_new_tokens=6, pad_token_id=0))
        assert torch.equal(*samples), "sampling through the sharded forward differs"
        # processes whose sampling ends at different steps (as eos does): the one done first keeps
        # joining the others' weight gathers (synced_gpus, as the trainer passes under FSDP)
        length = 3 + 4 * dist.get_rank()
        uneven = []
        for model, synced in ((sharded, True), (whole, None)):
            torch.manual_seed(2)
            uneven.append(model(ids, mask, mode="generate", do_sample=True, top_k=0, max_new_tokens=length,
                                min_new_tokens=length, pad_token_id=0, synced_gpus=synced))
        assert torch.equal(*uneven) and uneven[0].shape[1] == 10 + length
        ids = samples[0]
        mask = torch.cat([mask, torch.ones_like(ids[:, 10:])], dim=1)
        (a_logits, a_values), (b_logits, b_values) = sharded(ids, mask, 10), whole(ids, mask, 10)
        assert torch.allclose(a_logits, b_logits, atol=1e-5) and torch.allclose(a_values, b_values, atol=1e-5)
        if cfg.lora_r:
            reference = Reference(cfg, whole, torch.device("cpu"))
            assert reference.model is None
            assert torch.allclose(reference.logprobs(sharded, ids, mask, 10), reference.logprobs(whole, ids, mask, 10),
                                  atol=1e-5)
    step(sharded, opt_sharded, ids, mask, 10)
    step(whole, opt_whole, ids, mask, 10)
    with torch.no_grad():
        sharded(ids, mask, 10)  # the trainer saves after evaluating: gathered root weights then
    weights = whole_weights(sharded)
    same(weights, whole.state_dict(), "one clipped AdamW step")
    saved = out / f"checkpoint-{cfg.value_head}-{cfg.lora_r}"
    if dist.get_rank() == 0:
        saved.mkdir()
        sharded.save(saved, weights)
    dist.barrier()
    same(build_actor_critic(cfg, saved).state_dict(), whole.state_dict(), "save_pretrained of gathered weights")
    state = whole_optimizer_state(sharded, opt_sharded)  # a collective: every process gathers
    if dist.get_rank() == 0:  # written by the first process, read by all, as the trainer does
        save_checkpoint(saved, {"optimizer": state})
    dist.barrier()
    for resumed in (shard(copy.deepcopy(whole), mesh), torch.nn.parallel.DistributedDataParallel(copy.deepcopy(whole))):
        optimizer = adamw(resumed)  # a fresh load each time: the loaded state's tensors are stepped in place
        load_whole_optimizer_state(resumed, optimizer, load_checkpoint(saved)["optimizer"])
        step(resumed, optimizer, ids, mask, 10)
        twin = copy.deepcopy(whole)
        twin_opt = adamw(twin)
        twin_opt.load_state_dict(opt_whole.state_dict())
        step(twin, twin_opt, ids, mask, 10)
        got = whole_weights(resumed)
        same(got, twin.state_dict(), f"a second step after loading the optimizer into {type(resumed).__name__}")


def main(folder: str, out: str) -> None:
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for extra in ({}, {"lora_r": 4, "lora_alpha": 8, "lora_target_modules": ["c_attn"]}, {"value_head": "separate"}):
        check(PolicyConfig(model=folder, **extra), Path(out), mesh)
    dist.barrier()
    if dist.get_rank() == 0:
        print("fsdp checks passed")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
