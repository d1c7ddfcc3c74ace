"""Hydra plugin of plasticity-runner: the sweeper that lets one failed run not stop a sweep."""
