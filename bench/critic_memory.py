"""What each critic option of ``symrl rlhf`` (``policy.value_head``) costs in memory: parameters
held, trainable parameters, and the bytes of their gradients and AdamW state (float32).

GPT-2 124M is measured (a random model from transformers' default ``GPT2Config``, built by symrl's
``build_actor_critic``; one AdamW step creates the gradients and optimizer state); GPT-J-6B is counted
from its modules on the meta device, with the TL;DR preset's LoRA (r 8 on peft's default modules).
The same counting applied to GPT-2 must agree with its measurement.

    OMP_NUM_THREADS=1 .venv/bin/python bench/critic_memory.py    # about a minute, ~4 GB of memory
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import peft  # noqa: E402
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, GPTJConfig  # noqa: E402

from symrl.llm.config import PolicyConfig  # noqa: E402
from symrl.llm.policy import build_actor_critic  # noqa: E402

# (policy.value_head, policy.lora_r): full fine-tuning, then LoRA (the adapter critic needs it)
OPTIONS = [("shared", 0), ("separate", 0), ("shared", 8), ("separate", 8), ("adapter", 8)]
LORA_ALPHA = 64
GRAD_AND_ADAM_BYTES = 4 + 8  # float32 gradient, AdamW's two float32 moments


def measured(folder: Path, value_head: str, lora_r: int) -> dict[str, int]:
    """Build the option with symrl's code and take one AdamW step on a short sequence."""
    torch.manual_seed(0)
    model = build_actor_critic(PolicyConfig(model=str(folder), value_head=value_head, lora_r=lora_r,
                                            lora_alpha=LORA_ALPHA))
    params = list({id(p): p for p in model.parameters()}.values())  # tied embeddings once
    trainable = [p for p in params if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    ids = torch.randint(0, model.lm.config.vocab_size, (1, 16))
    logits, values = model(ids, torch.ones_like(ids), 8)
    (logits.logsumexp(-1).mean() + values.square().mean()).backward()
    optimizer.step()
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    return {"params": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in trainable),
            "weight_bytes": sum(p.numel() * p.element_size() for p in params),
            "grad_adam_bytes": sum(t.numel() * t.element_size() for t in state
                                   + [p.grad for p in trainable if p.grad is not None])}


def sizes(config) -> dict[str, int]:
    """Parameter counts of an LM, its trunk, one LoRA adapter (the preset's) and a value head, from
    modules on the meta device."""
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(config)
        whole, trunk = sum(p.numel() for p in lm.parameters()), sum(p.numel() for p in lm.base_model.parameters())
        lora = peft.get_peft_model(lm, peft.LoraConfig(r=8, lora_alpha=LORA_ALPHA, task_type="CAUSAL_LM"))
        adapter = sum(p.numel() for n, p in lora.named_parameters() if "lora_" in n)
    return {"lm": whole, "trunk": trunk, "adapter": adapter, "head": config.hidden_size + 1}


def counted(size: dict[str, int], value_head: str, lora_r: int) -> dict[str, int]:
    """What ``build_actor_critic`` holds for an option: the LM (frozen under LoRA), a trainable
    critic trunk (separate), one or two LoRA adapters, and the value head."""
    adapters = (2 if value_head == "adapter" else 1) if lora_r else 0
    critic = size["trunk"] if value_head == "separate" else 0
    trainable = (0 if lora_r else size["lm"]) + critic + adapters * size["adapter"] + size["head"]
    return {"params": size["lm"] + critic + adapters * size["adapter"] + size["head"], "trainable": trainable,
            "grad_adam_bytes": GRAD_AND_ADAM_BYTES * trainable}


def main() -> None:
    gpt2, gpt2_sizes, gptj_sizes = GPT2Config(), sizes(GPT2Config()), sizes(GPTJConfig())  # 124M; 6B
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        GPT2LMHeadModel(gpt2).save_pretrained(tmp)
        for value_head, lora_r in OPTIONS:
            row, check = measured(Path(tmp), value_head, lora_r), counted(gpt2_sizes, value_head, lora_r)
            assert all(row[k] == check[k] for k in check), (value_head, lora_r, row, check)
            rows.append({"model": "gpt2-124M (measured)", "value_head": value_head, "lora_r": lora_r, **row})
    rows += [{"model": "gpt-j-6B (counted)", "value_head": value_head, "lora_r": lora_r,
              **counted(gptj_sizes, value_head, lora_r)} for value_head, lora_r in OPTIONS]
    print("| model | value_head | LoRA r | parameters held | trainable | gradients + AdamW state |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['value_head']} | {r['lora_r'] or '-'} | {r['params'] / 1e6:,.2f}M | "
              f"{r['trainable'] / 1e6:,.2f}M | {r['grad_adam_bytes'] / 2**20:,.1f} MiB |")


if __name__ == "__main__":
    main()
