"""The policy as the training loop and the evaluation use it: the wrapped actor-critic, its frozen
reference, the reward and the tokenizer on the run's accelerator, and the three things done with
them: sampling completions, scoring tokens, and the reference texts of the auxiliary NLL.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.profiler import record_function

from symrl.llm import generation
from symrl.llm.config import RLHFConfig
from symrl.llm.distributed import make_accelerator, match_reference_precision
from symrl.llm.generation import Batch
from symrl.llm.policy import Reference, build_actor_critic, evaluating, load_tokenizer, token_logprobs
from symrl.llm.rewards import reward_from_config
from symrl.llm.tasks import Example
from symrl.seeding import seeds


class Agent:
    """Models on the accelerator; with ``optimizer`` (training) the AdamW over the trainable
    parameters is prepared with them, without it (``symrl eval``) none is built."""

    def __init__(self, cfg: RLHFConfig, checkpoint: Path | None, optimizer: bool):
        self.cfg = cfg
        self.accelerator = make_accelerator(cfg)
        self.device = self.accelerator.device
        self.tokenizer = load_tokenizer(cfg.policy.tokenizer or cfg.policy.model,
                                        "policy.tokenizer" if cfg.policy.tokenizer else "policy.model")
        torch.manual_seed(seeds(cfg.seed, "init", 0)[0])  # the value head's initialization
        actor = build_actor_critic(cfg.policy, checkpoint)
        self.reference = Reference(cfg.policy, actor, self.device)
        self.reward = reward_from_config(cfg.reward, self.device, lm=actor.lm, tokenizer=self.tokenizer)
        if optimizer:
            adamw = torch.optim.AdamW(decay_groups(actor, cfg.weight_decay), lr=cfg.lr, eps=cfg.adam_eps)
            self.actor, self.optimizer = self.accelerator.prepare(actor, adamw)
        else:
            self.actor, self.optimizer = self.accelerator.prepare(actor), None
        self.reference_precision = match_reference_precision(self.accelerator, self.reference, self.model)

    @property
    def model(self):
        return self.accelerator.unwrap_model(self.actor)

    def references(self, examples: list[Example], batch: Batch) -> Batch | None:
        if self.cfg.target_coef == 0 or any(e.reference is None for e in examples):
            return None
        # IMDB references are whole reviews, longer than small models' positions: only their start is kept
        ids = self.tokenizer([e.reference for e in examples], add_special_tokens=False, verbose=False)["input_ids"]
        cut = [row[:self.cfg.generation.max_new_tokens] for row in ids]  # the start follows the prompt: keep it
        tokens, mask = generation.right_pad(cut, self.tokenizer.pad_token_id, self.device)
        return Batch(batch.query, batch.query_mask, tokens, mask)

    @record_function("symrl.rlhf.score")
    @torch.no_grad()
    def score(self, batch: Batch, reference: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
        """Log-probabilities, values and reference log-probabilities of the continuation tokens,
        in micro-batches (memory); without ``reference`` the reference model is not run (None)."""
        out: list[tuple[Tensor, Tensor, Tensor | None]] = []
        step = self.cfg.minibatch_size // self.cfg.grad_accum
        with evaluating(self.actor):
            for lo in range(0, batch.query.shape[0], step):
                part = batch.rows(torch.arange(lo, min(lo + step, batch.query.shape[0]), device=self.device))
                logits, values = self.actor(part.input_ids, part.attention_mask, part.start)
                ref = None
                if reference:
                    with self.reference_precision():
                        ref = self.reference.logprobs(self.actor, part.input_ids, part.attention_mask, part.start,
                                                      self.cfg.generation.temperature)
                logprobs = token_logprobs(logits.float() / self.cfg.generation.temperature, part.continuation)
                out.append((logprobs, values, ref))
        logprobs, values, refs = zip(*out)
        return torch.cat(logprobs), torch.cat(values), torch.cat(refs) if reference else None

    @record_function("symrl.rlhf.sample")
    def sample(self, examples: list[Example], full_prompts: bool = False,
               greedy: bool = False) -> tuple[Batch, list[str], Tensor, list[str]]:
        """Completions, their rewards and the prompt texts the reward read. The reward reads the
        prompt as the policy saw it (its last ``prompt_tokens`` tokens, decoded), as TRIL's training
        reward does (``agent.py:96-107``); ``full_prompts``: the whole prompt text instead, as TRIL's
        evaluation metric does. ``greedy``: greedy decoding instead of sampling (``generation.eval_greedy``)."""
        prompts = [e.prompt for e in examples]
        with evaluating(self.actor):
            # under FSDP every process runs each decoding step (sharded weights) until all are done;
            # elsewhere transformers decides (None)
            generate = partial(self.actor, mode="generate", synced_gpus=True if self.accelerator.is_fsdp2 else None)
            batch = generation.sample(generate, self.tokenizer, prompts, self.cfg.generation, self.device, greedy)
        completions = generation.decode(self.tokenizer, batch.continuation, batch.continuation_mask)
        read = prompts if full_prompts else generation.decode(self.tokenizer, batch.query, batch.query_mask)
        scores = self.reward(read, completions, [e.reference for e in examples]).to(self.device)
        return batch, completions, scores, read


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: ``weight_decay`` on the trainable weights, none on biases and on the
    weights of normalization layers (LayerNorm, RMSNorm), as TRIL groups them (``agent.py:173-187``).
    Tied parameters (GPT-2's embeddings) are counted once."""
    groups: list[dict[str, Any]] = [{"params": [], "weight_decay": weight_decay}, {"params": [], "weight_decay": 0.0}]
    seen: set[int] = set()
    for module in model.modules():
        norm = "Norm" in type(module).__name__
        for name, param in module.named_parameters(recurse=False):
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                groups[int(norm or name == "bias")]["params"].append(param)
    return [group for group in groups if group["params"]]
