"""RLHF for causal language models with the symmetric loss: ``symrl rlhf`` and ``symrl lm prepare``."""
