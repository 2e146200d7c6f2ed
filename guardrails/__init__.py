"""Guardrails around every prediction: a YAML policy, an ordered pipeline of small
stages (input bounds → temperature → priors → blacklist → output bounds → decision)
with a compact per-row trace, and online prior estimation by EM.

Pure: numpy, pydantic and PyYAML only, so the service, offline evaluation and
regression runs all call the same code. `evaluation`, `bench` and `cli` are the
offline tools and may import the model pack loader.
"""
