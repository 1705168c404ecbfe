"""The policy LM with its value function, the frozen reference, and per-token log-probabilities.

Everything loads through ``from_pretrained`` (hub ids and ``symrl lm prepare`` folders alike).
Dropout is switched off for RL: with it on, the old and new log-probabilities of a token differ by
noise, and a prototype's reward collapsed into degenerate text. LoRA's own dropout
(``policy.lora_dropout``; the paper's TL;DR 0.1) is written into the adapter's config but acts only
with ``policy.lora_dropout_in_updates``: TRIL puts the model in eval mode before every forward, so
its 0.1 never acts (``actor.py:168``, ``critic.py:121``).

Under LoRA the model can hold several adapters on one frozen base: the policy's (peft's
``default``), the critic's (``policy.value_head=adapter``, TRIL's ``value_adapter``) and a reward
model's (``reward.kind=adapter``). Each forward runs with one of them (:func:`adapter_scope`).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import Tensor, nn

from symrl.config import ConfigError
from symrl.llm.config import PolicyConfig
from symrl.llm.hub import ensure_pad_token, from_pretrained

VALUE_HEAD_FILE = "value_head.safetensors"
# Adapter names. The policy keeps peft's default name, so LoRA checkpoints load as before; the other
# two are TRIL's (critic.py:37, model_rewards.py:146). peft saves a non-default adapter in a
# subfolder of that name.
POLICY_ADAPTER = "default"
VALUE_ADAPTER = "value_adapter"
REWARD_ADAPTER = "reward_adapter"


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


def lm_trunk(lm: nn.Module) -> nn.Module:
    """The transformer under a causal LM's head (its LoRA layers included): hidden states without
    the vocabulary projection, for the value adapter and the reward adapter."""
    model = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return model.base_model


@contextmanager
def keeping_trainable(module: nn.Module):
    """peft switches ``requires_grad`` of every adapter when one is added, loaded, activated or
    disabled (the active one on, the others off); this puts back the flags of every parameter that
    existed before, so the optimizer's (and DDP's) parameters stay trainable whatever ran last."""
    flags = [(param, param.requires_grad) for param in module.parameters()]
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


@contextmanager
def adapter_scope(lm: nn.Module, name: str | None):
    """Run ``lm`` with the LoRA adapter ``name`` alone (``None``: none of them, the frozen base),
    then make the adapter that was active before active again. A model without LoRA, or one whose
    active adapter is already ``name``, is left as it is."""
    if not hasattr(lm, "peft_config") or (name is not None and lm.active_adapter == name):
        yield
        return
    previous = lm.active_adapter
    with keeping_trainable(lm):
        if name is None:
            with lm.disable_adapter():
                yield
            return
        lm.set_adapter(name)
        try:
            yield
        finally:
            lm.set_adapter(previous)


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
    # double quantization (the blocks' scales quantized too) as TRIL loads GPT-J (actor.py:52-58):
    # about 0.37 bit less per weight, the same outputs up to the scales' rounding
    return {"quantization_config": BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16), **placement}


def load_causal_lm(name: str, field: str, load_in: str = "full"):
    """float32 weights unless quantized: a bf16 checkpoint trained in bf16 would round most AdamW
    updates at lr 5e-6 away (``mixed_precision`` is the way to compute in bf16)."""
    from transformers import AutoModelForCausalLM

    precision = {"dtype": torch.float32} if load_in == "full" else {}
    model = from_pretrained(AutoModelForCausalLM, name, field=field, **precision, **_quantization(load_in))
    disable_dropout(model)
    return model


class ActorCritic(nn.Module):
    """The policy LM and a value head, on the policy's last hidden state (``shared``), on a separate
    critic trunk (``separate``), or on the policy's frozen base run with a second LoRA adapter
    (``adapter``: TRIL's TL;DR critic, ``actor_critic.py:65-79``, ``critic.py:63-74``; value
    gradients never reach the policy's adapter, and no second copy of the base is held). One
    module, so accelerate wraps it once."""

    def __init__(self, lm: nn.Module, critic: nn.Module | None, value_adapter: bool = False, value_head: bool = True):
        """``value_head=False`` (``policy.value_head=none``, critic-free advantages): no value
        function at all; the values returned are zeros."""
        super().__init__()
        self.lm = lm
        self.critic = critic
        self.value_adapter = value_adapter
        self.value_head = None
        if value_head:
            hidden = (critic or lm).config.hidden_size
            self.value_head = nn.Linear(hidden, 1)
            nn.init.normal_(self.value_head.weight, std=1.0 / (hidden + 1) ** 0.5)
            nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, start: int = 0, mode: str = "policy",
                **generate_kwargs):
        """Every use of the trainable weights passes through here, so a wrapper that gathers sharded
        weights around ``forward`` (FSDP) holds them whole for sampling and the LoRA reference too.

        ``policy``: logits (policy adapter) and values at the positions that predict tokens
        ``start ..``; ``logits``: those logits alone (no value pass); ``reference``: those logits with
        every LoRA adapter disabled; ``generate``: ``lm.generate`` with the policy adapter."""
        if mode == "generate":
            with adapter_scope(self.lm, POLICY_ADAPTER):
                return self.lm.generate(input_ids=input_ids, attention_mask=attention_mask, **generate_kwargs)
        if mode in ("reference", "logits") or self.value_head is None:
            with adapter_scope(self.lm, None if mode == "reference" else POLICY_ADAPTER):
                logits = window_logits(self.lm, input_ids, attention_mask, start)
            return logits if mode != "policy" else (logits, logits.new_zeros(logits.shape[:2], dtype=torch.float32))
        shared = self.critic is None and not self.value_adapter
        positions = position_ids(attention_mask)
        with adapter_scope(self.lm, POLICY_ADAPTER):
            out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                          output_hidden_states=shared, use_cache=False,
                          logits_to_keep=input_ids.shape[1] - start + 1)
        if shared:
            hidden = out.hidden_states[-1]
        else:
            trunk, scope = (lm_trunk(self.lm), adapter_scope(self.lm, VALUE_ADAPTER)) if self.value_adapter \
                else (self.critic, nullcontext())
            with scope:
                hidden = trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
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

    @property
    def trained_adapters(self) -> list[str]:
        """The LoRA adapters this module trains and saves (not a reward adapter loaded beside them)."""
        return [POLICY_ADAPTER, VALUE_ADAPTER] if self.value_adapter else [POLICY_ADAPTER]

    def save(self, folder: Path, state: dict[str, Tensor]) -> None:
        """``save_pretrained`` for the LM (under LoRA its trained adapters only: the value adapter in
        ``policy/value_adapter/``) and the critic; the value head as safetensors beside them.
        ``state`` is this module's full state dict (gathered by accelerate when the weights are
        sharded)."""
        from safetensors.torch import save_file

        state = dict(state)
        for alias, name in _aliases(self).items():  # gathered shards share no memory: tie them again,
            if alias in state and name in state:      # so save_pretrained drops the tied copies as usual
                state[alias] = state[name]

        def part(prefix: str) -> dict[str, Tensor]:
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

        adapters = {"selected_adapters": self.trained_adapters} if self.uses_lora else {}
        self.lm.save_pretrained(folder / "policy", state_dict=part("lm."), **adapters)
        if self.critic is not None:
            self.critic.save_pretrained(folder / "critic", state_dict=part("critic."))
        if self.value_head is not None:
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


def _lora_config(cfg: PolicyConfig):
    import peft

    return peft.LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                           target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM")


def _lora_lm(cfg: PolicyConfig, checkpoint: Path | None):
    """The base with the policy's LoRA adapter, and the critic's beside it (``value_head=adapter``,
    the same LoRA settings, as TRIL's ``critic.py:64``), new or from a checkpoint; both trainable."""
    import peft

    base = load_causal_lm(cfg.model, "policy.model", cfg.load_in)
    if cfg.load_in != "full":
        # no gradient checkpointing, as TRIL (actor.py:70-72): a checkpointed block is recomputed in
        # the backward pass with whichever adapter is active by then
        base = peft.prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    extra = [VALUE_ADAPTER] if cfg.value_head == "adapter" else []
    if checkpoint is not None:
        lm = peft.PeftModel.from_pretrained(base, str(checkpoint / "policy"), is_trainable=True)
        for name in extra:
            lm.load_adapter(str(checkpoint / "policy" / name), adapter_name=name, is_trainable=True)
    else:
        try:
            lm = peft.get_peft_model(base, _lora_config(cfg))
        except ValueError as err:
            raise ConfigError(f"policy.lora_target_modules: got {cfg.lora_target_modules}, and peft says: "
                              f"{str(err).splitlines()[0]}; allowed: module names of {cfg.model}") from None
        for name in extra:
            lm.add_adapter(name, _lora_config(cfg))
    trained = [f".{name}." for name in [POLICY_ADAPTER, *extra]]
    for name, param in lm.named_parameters():  # peft leaves an adapter added beside the active one frozen
        if "lora_" in name and any(part in name for part in trained):
            param.requires_grad_(True)
    if not cfg.lora_dropout_in_updates:
        disable_dropout(lm)  # the adapters' dropout layers: configured, never acting (TRIL's eval mode)
    return lm


def build_actor_critic(cfg: PolicyConfig, checkpoint: Path | None = None) -> ActorCritic:
    """The policy (from ``cfg.model``, or a checkpoint folder written by ``ActorCritic.save``)."""
    from transformers import AutoModel

    if cfg.lora_r:
        lm = _lora_lm(cfg, checkpoint)
    else:
        lm = load_causal_lm(str(checkpoint / "policy") if checkpoint else cfg.model, "policy.model", cfg.load_in)
    critic = None
    if cfg.value_head == "separate":
        source = str(checkpoint / "critic") if checkpoint else (cfg.critic_model or cfg.model)
        critic = from_pretrained(AutoModel, source, field="policy.critic_model", dtype=torch.float32)
        disable_dropout(critic)
    model = ActorCritic(lm, critic, value_adapter=cfg.value_head == "adapter", value_head=cfg.value_head != "none")
    if checkpoint is not None and model.value_head is not None:
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
