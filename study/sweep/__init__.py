"""Sweep layer: spec, plan, Ray Train pretraining, Ray Tune fan-out, resume (imports Ray lazily)."""
