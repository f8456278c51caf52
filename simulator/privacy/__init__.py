"""Differential privacy for federated runs: accounting, calibration and the run's ledger."""
