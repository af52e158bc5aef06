"""Evaluators: closed loop in the simulator, held-out pairs and top-1 regret, the toy task, report formatting."""
