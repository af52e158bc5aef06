"""Evaluators: closed loop in the simulator, held-out pairs and top-1 regret, report formatting, confidence intervals (stats)."""
