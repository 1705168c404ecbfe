"""symrl: robust policy-gradient RL with the symmetric RL loss (SA2C, SPPO) and honest controls."""

__version__ = "0.1.0"
