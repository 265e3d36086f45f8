"""Payload codecs: audio block (float32, frames × channels) ↔ packet payload bytes."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from nmp_peer.wire import PayloadType, WireError

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


def make_codec(payload_type: PayloadType) -> Codec:
    if payload_type is PayloadType.PCM16:
        return Pcm16Codec()
    raise WireError(f"no decoder for payload type {payload_type.name}")
