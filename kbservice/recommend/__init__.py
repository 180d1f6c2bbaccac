"""Recommendations: retrieval-augmented differential diagnosis, treatment plans, calibration, replay."""
