"""nmp-peer: a peer for networked music performance with causal packet-loss concealment."""

SAMPLE_RATE = 44_100
"""Every stream runs at 44.1 kHz."""

BLOCK_FRAMES = 512
"""Samples per channel in one packet and one playout block (11.6 ms)."""

PACKET_S = BLOCK_FRAMES / SAMPLE_RATE
"""One packet's (and one block's) duration in seconds: 11.61 ms."""

PACKET_MS = 1000.0 * PACKET_S

PACKET_RATE = SAMPLE_RATE / BLOCK_FRAMES
"""Packets per second of one stream: 86.1."""

__version__ = "0.1.0"
