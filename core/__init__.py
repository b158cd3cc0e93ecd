"""Shared core of the MAST suite: config, data, checkpoints, records, logging, devices, distributed."""
