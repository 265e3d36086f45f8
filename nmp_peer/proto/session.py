"""Sessions under a pre-shared key: a handshake, one key per session and direction, AEAD on every packet.

Each stream opens its own session: the peer that sends it is the *initiator*.

```
  sender S (initiator)                          receiver R (responder)
  HELLO(stream id, nonce_S, X25519 public)  ─►  answers; keeps the session *pending*
                                            ◄─  WELCOME(stream id, nonce_S, nonce_R, X25519 public)
  derives the key, seals its audio          ─►  the first packet that opens under a pending
                                                session makes it the current one
```

* **Keys** (as Noise and WireGuard mix a PSK into a Diffie-Hellman handshake): HKDF-SHA256
  over ``X25519(S, R) || PSK``, salted with both nonces, the stream id and the direction
  (``sender to receiver``) in its info. Every session of every restart has fresh nonces
  and ephemeral keys, so no packet of an old session or of the other direction (a
  reflection) opens under the current key; the ephemeral X25519 keys also keep recorded
  sessions private if the PSK leaks later.
* **Audio**: ChaCha20-Poly1305 (the ``cryptography`` package) with the packet header as
  associated data and the sequence number as nonce; the payload is encrypted unless the
  sender chose otherwise (``FLAG_ENC``). A key seals fewer than 2**32 packets: the sender
  rekeys long before its sequence number could come back to one it sealed.
* **The handshake messages** carry an HMAC-SHA256 tag (16 bytes) under a key derived from
  the PSK, so only a PSK holder gets an answer; an answer never goes anywhere but the
  configured peer and is no larger than the question. A replayed HELLO makes at most a
  pending session nobody can use; a replayed WELCOME names a nonce the sender no longer waits for.
* **Restart only through the handshake**: the stream a receiver follows changes when a
  packet opens under a *new* session, never on packets alone; each session keeps its own
  replay window for as long as it is current.

Sans-IO and clock-free: time comes in as seconds, datagrams go out as return values.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nmp_peer.proto.security import ReplayWindow
from nmp_peer.proto.wire import (
    FLAG_TAG,
    HEADER,
    HEADER_BYTES,
    MAGIC,
    SEQ_MODULUS,
    TAG_BYTES,
    VERSION,
    ControlType,
    Packet,
    PayloadType,
    WireError,
    make_packet,
)

NONCE_BYTES = 16
PUBLIC_BYTES = 32
HELLO_BYTES = HEADER_BYTES + NONCE_BYTES + PUBLIC_BYTES + TAG_BYTES
WELCOME_BYTES = HEADER_BYTES + 2 * NONCE_BYTES + PUBLIC_BYTES + TAG_BYTES
REKEY_AFTER_PACKETS = 1 << 30
"""A new handshake after this many packets under one key (about 144 days of packets)."""
MAX_PER_KEY = SEQ_MODULUS - (1 << 16)
"""A key never seals more: its nonces (the sequence numbers) would come round again."""
RETRY_S = 0.25
"""A HELLO not answered within this is sent again (the same one, so any answer fits)."""
_AEAD_NONCE = struct.Struct(">8xI")
_PLACEHOLDER = b"\0" * TAG_BYTES


class HandshakeError(ValueError):
    """A handshake message whose tag does not verify under the pre-shared key."""


@dataclass(frozen=True, slots=True)
class Hello:
    stream_id: int
    instance: int
    """The sender's peer instance (random per run; the header's sequence field)."""
    nonce: bytes
    public: bytes


@dataclass(frozen=True, slots=True)
class Welcome:
    stream_id: int
    """The initiator's stream, as its HELLO named it."""
    instance: int
    """The answering peer's instance: a HELLO from another one means the peer restarted."""
    initiator_nonce: bytes
    nonce: bytes
    public: bytes


def _hkdf(secret: bytes, length: int, salt: bytes | None, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


def handshake_mac_key(psk: bytes) -> bytes:
    return _hkdf(psk, 32, None, b"nmp-peer v2 handshake")


def probe_mac_key(psk: bytes) -> bytes:
    """The key of the round-trip probes' tags (``wire.Probe``): not the handshake's, not any stream's."""
    return _hkdf(psk, 32, None, b"nmp-peer v2 round-trip probe")


def stream_key(psk: bytes, shared: bytes, stream_id: int, initiator_nonce: bytes, responder_nonce: bytes) -> bytes:
    """The key of one session's sender-to-receiver direction."""
    info = b"nmp-peer v2 audio, sender to receiver, stream " + stream_id.to_bytes(4, "big")
    return _hkdf(shared + psk, 32, initiator_nonce + responder_nonce, info)


def encode_control(message: Hello | Welcome, mac_key: bytes) -> bytes:
    if isinstance(message, Hello):
        kind, body = ControlType.HELLO, message.nonce + message.public
    else:
        kind, body = ControlType.WELCOME, message.initiator_nonce + message.nonce + message.public
    header = HEADER.pack(MAGIC, VERSION, int(kind), 1, FLAG_TAG, message.stream_id, message.instance, 0, len(body))
    return header + body + hmac.digest(mac_key, header + body, hashlib.sha256)[:TAG_BYTES]


def decode_control(data: bytes, mac_key: bytes) -> Hello | Welcome:
    """Raises :class:`WireError` for a malformed message, :class:`HandshakeError` for a bad tag."""
    if len(data) < HEADER_BYTES:
        raise WireError("handshake message shorter than the header")
    magic, version, kind, _channels, flags, stream_id, instance, _ts, length = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise WireError("not a handshake message of this version")
    expected = {int(ControlType.HELLO): HELLO_BYTES, int(ControlType.WELCOME): WELCOME_BYTES}.get(kind)
    if expected is None or flags != FLAG_TAG or len(data) != expected or length != len(data) - HEADER_BYTES - TAG_BYTES:
        raise WireError(f"handshake message of {len(data)} bytes is malformed")
    stop = len(data) - TAG_BYTES
    if not hmac.compare_digest(data[stop:], hmac.digest(mac_key, data[:stop], hashlib.sha256)[:TAG_BYTES]):
        raise HandshakeError("handshake tag does not verify")
    body = data[HEADER_BYTES:stop]
    if kind == ControlType.HELLO:
        return Hello(stream_id, instance, body[:NONCE_BYTES], body[NONCE_BYTES:])
    n = NONCE_BYTES
    return Welcome(stream_id, instance, body[:n], body[n : 2 * n], body[2 * n :])


def _public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class StreamCipher:
    """One direction of one session: seals (sender) or opens (receiver) its packets."""

    def __init__(self, key: bytes, stream_id: int, encrypt: bool = True) -> None:
        self._aead = ChaCha20Poly1305(key)
        self.stream_id = stream_id
        self.encrypt = encrypt
        self.sealed = 0

    def seal(self, packet: Packet) -> Packet:
        p = replace(packet, tag=_PLACEHOLDER, encrypted=self.encrypt)
        header = p.header_bytes()
        nonce = _AEAD_NONCE.pack(packet.seq % SEQ_MODULUS)
        self.sealed += 1
        if self.encrypt:
            out = self._aead.encrypt(nonce, packet.payload, header)
            return replace(p, payload=out[:-TAG_BYTES], tag=out[-TAG_BYTES:])
        return replace(p, tag=self._aead.encrypt(nonce, b"", header + packet.payload))

    def open(self, packet: Packet, data: bytes | None = None) -> Packet | None:
        """The packet with its plain payload, or None if it was not sealed under this key as it is.

        ``data``: the datagram ``packet`` was parsed from, if at hand (saves rebuilding it)."""
        if len(packet.tag) != TAG_BYTES or packet.stream_id != self.stream_id:
            return None
        if data is None:
            data = packet.serialize()
        nonce = _AEAD_NONCE.pack(packet.seq)
        try:
            if packet.encrypted:  # ciphertext and tag lie side by side after the header
                payload = self._aead.decrypt(nonce, data[HEADER_BYTES:], data[:HEADER_BYTES])
            else:
                self._aead.decrypt(nonce, packet.tag, data[:-TAG_BYTES])
                payload = packet.payload
        except InvalidTag:
            return None
        if not packet.end and packet.payload_type is PayloadType.PCM16 and len(payload) % (2 * packet.channels):
            return None  # sealed by a broken sender: not whole frames
        p = packet
        return make_packet(p.payload_type, p.channels, p.stream_id, p.seq, p.timestamp, payload, b"", p.end, False)


class Outbound:
    """The sending half: opens the session for this peer's stream, renews it, seals packets."""

    def __init__(
        self,
        psk: bytes,
        mac_key: bytes,
        instance: int,
        *,
        encrypt: bool = True,
        rekey_after: int = REKEY_AFTER_PACKETS,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._psk, self._mac_key, self.instance = psk, mac_key, instance
        self.encrypt = encrypt
        self.rekey_after = min(rekey_after, MAX_PER_KEY)
        self._random = random
        self.cipher: StreamCipher | None = None
        self._hello: Hello | None = None
        self._private: X25519PrivateKey | None = None
        self._hello_bytes = b""
        self._sent_at: float | None = None
        self._restart = False
        self.peer_instance: int | None = None
        """The instance that answered our last completed handshake."""
        self.handshakes = 0
        """Handshakes completed (the first, rekeys and those after the peer restarted)."""
        self.last_handshake_s: float | None = None
        """Seconds from the last HELLO sent to the WELCOME that completed the last handshake (a round trip)."""

    @property
    def established(self) -> bool:
        return self.cipher is not None

    def restart(self) -> None:
        """The peer restarted (it has no session with us): open a new one at the next poll."""
        self._restart = True

    def poll(self, now: float, stream_id: int) -> list[bytes]:
        """HELLOs due now: the first, a retry, a rekey, or after the peer or our stream changed."""
        c = self.cipher
        due_new = self._hello is None and (
            c is None or self._restart or c.stream_id != stream_id or c.sealed >= self.rekey_after
        )
        if due_new or (self._hello is not None and self._hello.stream_id != stream_id):
            self._restart = False
            self._private = X25519PrivateKey.generate()
            self._hello = Hello(stream_id, self.instance, self._random(NONCE_BYTES), _public_bytes(self._private))
            self._hello_bytes = encode_control(self._hello, self._mac_key)
            self._sent_at = None
        if self._hello is None or (self._sent_at is not None and now - self._sent_at < RETRY_S):
            return []
        self._sent_at = now
        return [self._hello_bytes]

    def on_welcome(self, welcome: Welcome, now: float) -> bool:
        """Install the new key if this answers the HELLO we wait for."""
        hello, private = self._hello, self._private
        if hello is None or private is None or welcome.initiator_nonce != hello.nonce:
            return False
        if welcome.stream_id != hello.stream_id:
            return False
        try:
            shared = private.exchange(X25519PublicKey.from_public_bytes(welcome.public))
        except ValueError:  # a low-order point: no shared secret
            return False
        key = stream_key(self._psk, shared, hello.stream_id, hello.nonce, welcome.nonce)
        self.cipher = StreamCipher(key, hello.stream_id, self.encrypt)
        self._hello = self._private = None
        self.peer_instance = welcome.instance
        self.handshakes += 1
        self.last_handshake_s = now - (self._sent_at if self._sent_at is not None else now)
        return True

    def seal(self, packet: Packet) -> Packet | None:
        """The packet sealed under the current key; None while there is none for its stream."""
        c = self.cipher
        if c is None or c.stream_id != packet.stream_id or c.sealed >= MAX_PER_KEY:
            return None
        return c.seal(packet)


@dataclass(slots=True)
class _Inbound:
    cipher: StreamCipher
    initiator_nonce: bytes
    replay: ReplayWindow


class Inbound:
    """The receiving half: answers HELLOs, opens packets, follows the stream of the newest session."""

    PENDING = 4
    """Sessions answered but not yet used; a fifth evicts the oldest."""

    def __init__(
        self, psk: bytes, mac_key: bytes, instance: int, *, random: Callable[[int], bytes] = os.urandom
    ) -> None:
        self._psk, self._mac_key, self.instance = psk, mac_key, instance
        self._random = random
        self.current: _Inbound | None = None
        self._previous: _Inbound | None = None
        """The session before a rekey of the same stream: its stragglers still open."""
        self._pending: OrderedDict[bytes, tuple[_Inbound, bytes]] = OrderedDict()
        self._answered: OrderedDict[bytes, None] = OrderedDict()
        """Nonces of HELLOs answered: a replay of an old one is not answered again."""

    def on_hello(self, hello: Hello) -> bytes | None:
        """The WELCOME to send, if any."""
        pending = self._pending.get(hello.nonce)
        if pending is not None:
            return pending[1]  # our WELCOME was lost: the same again
        if hello.nonce in self._answered:
            return None
        private = X25519PrivateKey.generate()
        try:
            shared = private.exchange(X25519PublicKey.from_public_bytes(hello.public))
        except ValueError:
            return None
        nonce = self._random(NONCE_BYTES)
        key = stream_key(self._psk, shared, hello.stream_id, hello.nonce, nonce)
        answer = Welcome(hello.stream_id, self.instance, hello.nonce, nonce, _public_bytes(private))
        welcome = encode_control(answer, self._mac_key)
        session = _Inbound(StreamCipher(key, hello.stream_id), hello.nonce, ReplayWindow(streams=1))
        self._pending[hello.nonce] = (session, welcome)
        if len(self._pending) > self.PENDING:
            self._pending.popitem(last=False)
        self._answered[hello.nonce] = None
        if len(self._answered) > 256:
            self._answered.popitem(last=False)
        return welcome

    def open(self, packet: Packet, data: bytes | None = None) -> tuple[Packet | None, str]:
        """(the opened packet or None, what it was: ``ok``, ``new session``, ``replayed`` or ``unauthenticated``).

        ``data``: the datagram ``packet`` was parsed from, if at hand."""
        for session in (self.current, self._previous):
            if session is not None and session.cipher.stream_id == packet.stream_id:
                opened = session.cipher.open(packet, data)
                if opened is not None:
                    if not session.replay.check(opened.stream_id, opened.seq):
                        return None, "replayed"
                    return opened, "ok"
        for session, _ in reversed(list(self._pending.values())):
            if session.cipher.stream_id != packet.stream_id:
                continue
            opened = session.cipher.open(packet, data)
            if opened is None:
                continue
            old = self.current
            self._previous = old if old is not None and old.cipher.stream_id == packet.stream_id else None
            self.current = session
            self._pending.clear()
            session.replay.check(opened.stream_id, opened.seq)
            return opened, "new session"
        return None, "unauthenticated"


class Session:
    """Both halves of one peer's keyed session with its partner."""

    def __init__(self, psk: bytes, *, encrypt: bool = True, rekey_after: int = REKEY_AFTER_PACKETS) -> None:
        self.mac_key = handshake_mac_key(psk)
        self.probe_key = probe_mac_key(psk)
        self.instance = int.from_bytes(os.urandom(4), "big")
        self.outbound = Outbound(psk, self.mac_key, self.instance, encrypt=encrypt, rekey_after=rekey_after)
        self.inbound = Inbound(psk, self.mac_key, self.instance)

    def decode(self, data: bytes) -> Hello | Welcome:
        return decode_control(data, self.mac_key)

    def on_control(self, message: Hello | Welcome, now: float) -> bytes | None:
        """Handle an authenticated handshake message; return the answer to send, if any."""
        if isinstance(message, Welcome):
            self.outbound.on_welcome(message, now)
            return None
        reply = self.inbound.on_hello(message)
        out = self.outbound
        if reply is not None and out.established and out.peer_instance != message.instance:
            # The partner restarted: the new instance holds no key for our stream.
            out.restart()
        return reply
