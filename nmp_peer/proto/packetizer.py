"""The sender's half of the wire format: captured blocks in, packets out."""

from __future__ import annotations

import secrets

import numpy as np

from nmp_peer import BLOCK_FRAMES
from nmp_peer.proto.codec import Codec
from nmp_peer.proto.wire import SEQ_MODULUS, Packet


class Packetizer:
    """Turns captured blocks into packets: random stream id, sequence and timestamp origins."""

    def __init__(self, codec: Codec, channels: int, *, first_seq: int | None = None) -> None:
        self.codec = codec
        self.channels = channels
        self.stream_id = secrets.randbits(32)
        self.seq = secrets.randbits(32) if first_seq is None else first_seq % SEQ_MODULUS
        self.timestamp = secrets.randbits(31)
        """Sample clock origin; 31 bits so that float64 arithmetic on it stays exact for years."""

    END_COPIES = 3
    """End-of-stream notices sent; one is enough, the others are for a lossy path."""

    def end_packets(self) -> list[Packet]:
        """The notices that this stream ends here (send them a block apart); a later
        :meth:`packetize` starts a new stream."""
        end = self.seq
        packets = [
            Packet.end_of_stream(self.codec.payload_type, self.channels, self.stream_id, end + k, self.timestamp, end)
            for k in range(self.END_COPIES)
        ]
        self.stream_id = secrets.randbits(32)
        self.seq = (end + self.END_COPIES) % SEQ_MODULUS
        return packets

    def packetize(self, block: np.ndarray) -> Packet:
        if block.shape != (BLOCK_FRAMES, self.channels):
            raise ValueError(f"block shape {block.shape} != {(BLOCK_FRAMES, self.channels)}")
        packet = Packet(
            self.codec.payload_type, self.channels, self.stream_id, self.seq, self.timestamp, self.codec.encode(block)
        )
        self.seq = (self.seq + 1) % SEQ_MODULUS
        self.timestamp += BLOCK_FRAMES
        return packet
