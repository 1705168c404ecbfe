"""Update rules (a2c.py, ppo.py) and the on-policy loop that drives them (onpolicy.py)."""
