"""Evaluation: image metrics, geometry metrics, pose metrics."""
