"""Simulated networks: loss models, impairments, and the impairment relay that applies them to real UDP."""
