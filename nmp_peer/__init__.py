"""nmp-peer: a peer for networked music performance with causal packet-loss concealment."""

SAMPLE_RATE = 44_100
"""Every stream runs at 44.1 kHz."""

BLOCK_FRAMES = 512
"""Samples per channel in one packet and one playout block (11.6 ms)."""

__version__ = "0.1.0"
