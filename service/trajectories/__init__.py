"""Trajectories: checkpoints of one run measured in order, and the optimizer states they need."""
