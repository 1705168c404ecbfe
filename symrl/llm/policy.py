"""The policy LM with its value function, the frozen reference, and per-token log-probabilities.

Everything loads through ``from_pretrained`` (hub ids and ``symrl lm prepare`` folders alike).
Dropout is switched off for RL: with it on, the old and new log-probabilities of a token differ by
noise, and a prototype's reward collapsed into degenerate text. The one exception is LoRA's own
dropout, which the user sets explicitly (``policy.lora_dropout``, default 0; the paper's TL;DR 0.1).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from symrl.config import ConfigError
from symrl.llm.config import PolicyConfig
from symrl.llm.hub import ensure_pad_token, from_pretrained

VALUE_HEAD_FILE = "value_head.safetensors"


def load_tokenizer(name: str, field: str = "policy.tokenizer"):
    """Left padding (generation continues from the right end) and truncation (a prompt's end is
    what it asks); a missing pad token becomes eos."""
    from transformers import AutoTokenizer

    tokenizer = ensure_pad_token(from_pretrained(AutoTokenizer, name, field=field), name, field)
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    return tokenizer


def disable_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def position_ids(attention_mask: Tensor) -> Tensor:
    """Positions that skip left padding, the same ones ``generate`` uses, so scoring a rollout gives
    the log-probabilities it was sampled with."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """log π(token) for each position, in float32 whatever the model's dtype."""
    logits = logits.float()
    return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def token_entropy(logits: Tensor) -> Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def window_logits(lm: nn.Module, input_ids: Tensor, attention_mask: Tensor, start: int) -> Tensor:
    """Logits at the positions that predict tokens ``start ..``, with the position ids ``generate``
    used (the ``logits_to_keep`` window spares the prompt's vocabulary projections)."""
    return lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
              use_cache=False, logits_to_keep=input_ids.shape[1] - start + 1).logits[:, :-1]


def _quantization(load_in: str) -> dict:
    """from_pretrained arguments for 8-/4-bit loading, or a clear error where it cannot work."""
    if load_in == "full":
        return {}
    if not torch.cuda.is_available():
        raise ConfigError(f"policy.load_in: {load_in} needs a CUDA GPU (bitsandbytes); allowed here: full")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError(f"policy.load_in: {load_in} needs bitsandbytes (pip install 'symrl[quantization]'); "
                          "allowed here: full") from None
    from transformers import BitsAndBytesConfig

    # quantized weights cannot be moved after loading: place them on this process's GPU now
    placement = {"device_map": {"": torch.cuda.current_device()}}
    if load_in == "8bit":
        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True), **placement}
    return {"quantization_config": BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16), **placement}


def load_causal_lm(name: str, field: str, load_in: str = "full"):
    """float32 weights unless quantized: a bf16 checkpoint trained in bf16 would round most AdamW
    updates at lr 5e-6 away (``mixed_precision`` is the way to compute in bf16)."""
    from transformers import AutoModelForCausalLM

    precision = {"dtype": torch.float32} if load_in == "full" else {}
    model = from_pretrained(AutoModelForCausalLM, name, field=field, **precision, **_quantization(load_in))
    disable_dropout(model)
    return model


class ActorCritic(nn.Module):
    """The policy LM and a value head, on the policy's last hidden state (``shared``) or on a
    separate critic trunk (``separate``). One module, so accelerate wraps it once."""

    def __init__(self, lm: nn.Module, critic: nn.Module | None):
        super().__init__()
        self.lm = lm
        self.critic = critic
        hidden = (critic or lm).config.hidden_size
        self.value_head = nn.Linear(hidden, 1)
        nn.init.normal_(self.value_head.weight, std=1.0 / (hidden + 1) ** 0.5)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, start: int = 0, mode: str = "policy",
                **generate_kwargs):
        """Every use of the trainable weights passes through here, so a wrapper that gathers sharded
        weights around ``forward`` (FSDP) holds them whole for sampling and the LoRA reference too.

        ``policy``: logits and values at the positions that predict tokens ``start ..``;
        ``reference``: those logits with the LoRA adapters disabled; ``generate``: ``lm.generate``."""
        if mode == "generate":
            return self.lm.generate(input_ids=input_ids, attention_mask=attention_mask, **generate_kwargs)
        if mode == "reference":
            with self.lm.disable_adapter():
                return window_logits(self.lm, input_ids, attention_mask, start)
        shared = self.critic is None
        positions = position_ids(attention_mask)
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                      output_hidden_states=shared, use_cache=False, logits_to_keep=input_ids.shape[1] - start + 1)
        if shared:
            hidden = out.hidden_states[-1]
        else:
            hidden = self.critic(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                                 use_cache=False).last_hidden_state
        values = self.value_head(hidden[:, start - 1:-1].to(self.value_head.weight.dtype)).squeeze(-1)
        return out.logits[:, :-1], values.float()

    @property
    def _no_split_modules(self) -> list[str]:
        """The transformer block classes, for accelerate's FSDP auto-wrap policy."""
        return sorted({name for model in (self.lm, self.critic) if model is not None
                       for name in getattr(model, "_no_split_modules", None) or []})

    @property
    def uses_lora(self) -> bool:
        return hasattr(self.lm, "disable_adapter")

    def save(self, folder: Path, state: dict[str, Tensor]) -> None:
        """``save_pretrained`` for the LM (adapters only under LoRA) and the critic; the value head
        as safetensors beside them. ``state`` is this module's full state dict (gathered by accelerate
        when the weights are sharded)."""
        from safetensors.torch import save_file

        state = dict(state)
        for alias, name in _aliases(self).items():  # gathered shards share no memory: tie them again,
            if alias in state and name in state:      # so save_pretrained drops the tied copies as usual
                state[alias] = state[name]

        def part(prefix: str) -> dict[str, Tensor]:
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

        self.lm.save_pretrained(folder / "policy", state_dict=part("lm."))
        if self.critic is not None:
            self.critic.save_pretrained(folder / "critic", state_dict=part("critic."))
        save_file({k: v.detach().cpu().contiguous() for k, v in part("value_head.").items()},
                  str(folder / VALUE_HEAD_FILE))


def _aliases(module: nn.Module) -> dict[str, str]:
    """Second names of parameters registered twice (tied embeddings) → their first names."""
    first: dict[int, str] = {}
    aliases = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        if id(param) in first:
            aliases[name] = first[id(param)]
        else:
            first[id(param)] = name
    return aliases


def build_actor_critic(cfg: PolicyConfig, checkpoint: Path | None = None) -> ActorCritic:
    """The policy (from ``cfg.model``, or a checkpoint folder written by ``ActorCritic.save``)."""
    from transformers import AutoModel

    if cfg.lora_r:
        import peft

        base = load_causal_lm(cfg.model, "policy.model", cfg.load_in)
        if cfg.load_in != "full":
            base = peft.prepare_model_for_kbit_training(base)
        if checkpoint is not None:
            lm = peft.PeftModel.from_pretrained(base, str(checkpoint / "policy"), is_trainable=True)
        else:
            try:
                lm = peft.get_peft_model(base, peft.LoraConfig(
                    r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                    target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM"))
            except ValueError as err:
                raise ConfigError(f"policy.lora_target_modules: got {cfg.lora_target_modules}, and peft says: "
                                  f"{str(err).splitlines()[0]}; allowed: module names of {cfg.model}") from None
    else:
        lm = load_causal_lm(str(checkpoint / "policy") if checkpoint else cfg.model, "policy.model", cfg.load_in)
    critic = None
    if cfg.value_head == "separate":
        source = str(checkpoint / "critic") if checkpoint else (cfg.critic_model or cfg.model)
        critic = from_pretrained(AutoModel, source, field="policy.critic_model", dtype=torch.float32)
        disable_dropout(critic)
    model = ActorCritic(lm, critic)
    if checkpoint is not None:
        from safetensors.torch import load_file

        model.value_head.load_state_dict(load_file(str(checkpoint / VALUE_HEAD_FILE)))
    return model


class Reference:
    """The frozen reference of the KL penalty: the LoRA base with adapters disabled (no copy in
    memory), or a separate frozen model (a copy of the initial policy, or ``reference_model``)."""

    def __init__(self, cfg: PolicyConfig, actor: ActorCritic, device: torch.device):
        self.model = None
        if not (actor.uses_lora and cfg.reference_model is None):
            self.model = load_causal_lm(cfg.reference_model or cfg.model, "policy.reference_model")
            self.model.requires_grad_(False).eval().to(device)

    @torch.no_grad()
    def logprobs(self, actor: nn.Module, input_ids: Tensor, attention_mask: Tensor, start: int,
                 temperature: float = 1.0) -> Tensor:
        """``actor`` as the trainer holds it (wrapped by accelerate or not): the LoRA reference runs
        through its ``forward``."""
        if self.model is None:
            logits = actor(input_ids, attention_mask, start, mode="reference")
        else:
            logits = window_logits(self.model, input_ids, attention_mask, start)
        return token_logprobs(logits.float() / temperature, input_ids[:, start:])


@contextmanager
def evaluating(module: nn.Module):
    """Eval mode for generation and scoring; dropout is off anyway, this covers other layers."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)
