"""Sweep layer: spec, plan, the streaming scheduler of Ray tasks (Ray Train for
pretraining), resume and status (imports Ray lazily)."""
