"""Payload codecs: audio block (float32, frames × channels) ↔ packet payload bytes.

The sender's side is a :class:`Codec` (a block in, a payload out). The receiver's side is
one stateful :class:`Decoder` per incoming stream and payload type, fed every slot in
order, a missing one too: a codec with its own concealment (Opus) must see every slot to
keep its state, and its output may trail its input (so a received packet's block can
still hold audio the codec synthesized for an earlier loss).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from nmp_peer import BLOCK_FRAMES
from nmp_peer.proto.wire import Packet, PayloadType, WireError

PCM_SCALE = 32768.0


class Codec(Protocol):
    payload_type: PayloadType

    def encode(self, block: np.ndarray) -> bytes: ...

    def decode(self, payload: bytes, channels: int) -> np.ndarray: ...


def float_to_pcm16(x: np.ndarray) -> np.ndarray:
    """Round to 16 bits; ``pcm16_to_float`` undoes it exactly for values that came from PCM16."""
    return np.clip(np.rint(x * PCM_SCALE), -32768, 32767).astype(np.int16)


def pcm16_to_float(x: np.ndarray) -> np.ndarray:
    out = x.astype(np.float32)
    out *= np.float32(1.0 / PCM_SCALE)  # exact: a power of two
    return out


class Pcm16Codec:
    """Uncompressed 16-bit big-endian PCM, channels interleaved."""

    payload_type = PayloadType.PCM16

    def encode(self, block: np.ndarray) -> bytes:
        return float_to_pcm16(block).astype(">i2").tobytes()

    def decode(self, payload: bytes, channels: int) -> np.ndarray:
        if len(payload) % (2 * channels):
            raise WireError(f"PCM16 payload of {len(payload)} bytes is not whole frames")
        samples = np.frombuffer(payload, dtype=">i2")
        return pcm16_to_float(samples).reshape(-1, channels)


class DecoderUnavailable(RuntimeError):
    """This machine cannot decode that payload type (a library is missing)."""


class Decoder(Protocol):
    def accepts(self, packet: Packet) -> bool:
        """A packet this decoder can decode: one block, well formed (else it is counted malformed)."""
        ...

    def decode(self, packet: Packet | None, following: Packet | None = None) -> tuple[np.ndarray | None, bool]:
        """The next slot's block (``packet`` None: its packet is missing) and whether any
        of it was synthesized by the codec; ``None`` when the codec has nothing for a
        missing slot. ``following`` is the next slot's packet if it is already here."""
        ...

    def synthetic_pending(self) -> bool:
        """Whether the next block will hold audio the codec synthesized already."""
        ...


class Pcm16Decoder:
    """PCM16 slots: the packet's samples; nothing of its own for a missing one."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self._codec = Pcm16Codec()

    def accepts(self, packet: Packet) -> bool:
        return len(packet.payload) == 2 * BLOCK_FRAMES * self.channels

    def decode(self, packet: Packet | None, following: Packet | None = None) -> tuple[np.ndarray | None, bool]:
        if packet is None:
            return None, True
        return self._codec.decode(packet.payload, self.channels), False

    def synthetic_pending(self) -> bool:
        return False


def make_decoder(payload_type: PayloadType, channels: int, *, fec: bool = False) -> Decoder:
    """The receiver's decoder of one stream; ``fec``: recover a lost Opus frame from the
    next packet's in-band FEC when that packet is here (else Opus's PLC)."""
    if payload_type is PayloadType.PCM16:
        return Pcm16Decoder(channels)
    if payload_type is PayloadType.OPUS:
        from nmp_peer.proto.opus import OpusDecoder, OpusUnavailable

        try:
            return OpusDecoder(channels, fec=fec)
        except OpusUnavailable as exc:
            raise DecoderUnavailable(str(exc)) from None
    raise WireError(f"no decoder for payload type {payload_type.name}")
