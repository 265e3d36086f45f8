"""A band's session file: who plays, where, and how each sounds in the mix.

```toml
[session]
key_file = "band.key"   # optional: a pre-shared key for the whole band (relative to this file)
config = "lan"          # optional: the peers' config (buffer, concealer, codec): a file or a shipped name

[[peer]]
name = "anna"
address = "192.0.2.10:50000"
pan = -0.5              # optional mix settings, as each listener hears this peer
gain_db = 0.0
mute = false
```

Every musician runs ``nmp-peer band --session FILE --name ME``: the peer named ``ME`` is
this one (it listens on its address's port), the others are its remotes. A shipped
example is ``nmp_peer/conf/band/quartet.toml`` (``--session quartet``). The command
line's ``--peer NAME=HOST:PORT`` (repeated) names the remotes without a file.
Validated like the config (:mod:`nmp_peer.config`): a bad value is named in one line.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nmp_peer.config import ConfigError, first_error, read_toml
from nmp_peer.live.peer import MAX_REMOTES
from nmp_peer.live.remote import RemoteSpec
from nmp_peer.live.transport import Endpoint
from nmp_peer.shipped import resolve_config

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


class BandFileError(ConfigError):
    """A session file that cannot be used (one line naming the file and the key)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PeerEntry(_Section):
    name: str
    address: str
    gain_db: float = Field(0.0, ge=-120.0, le=24.0)
    pan: float = Field(0.0, ge=-1.0, le=1.0)
    mute: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError(f"{value!r} is not a peer name (letters, digits, '_', '.', '-'; at most 32)")
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        Endpoint.parse(value)
        return value

    def spec(self) -> RemoteSpec:
        return RemoteSpec(self.name, Endpoint.parse(self.address), self.gain_db, self.pan, self.mute)


class SessionSection(_Section):
    key_file: str | None = None
    config: str | None = None


class BandFile(_Section):
    session: SessionSection = SessionSection()
    peer: list[PeerEntry]

    @model_validator(mode="after")
    def _band(self) -> BandFile:
        if not 2 <= len(self.peer) <= MAX_REMOTES + 1:
            raise ValueError(f"a band has 2..{MAX_REMOTES + 1} peers, not {len(self.peer)}")
        names = [p.name for p in self.peer]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"peer names must differ: {', '.join(dupes)} more than once")
        return self

    def me(self, name: str) -> PeerEntry:
        for p in self.peer:
            if p.name == name:
                return p
        raise BandFileError(f"no peer named {name!r} in the session (it has {', '.join(p.name for p in self.peer)})")

    def remotes(self, name: str) -> list[RemoteSpec]:
        self.me(name)
        return [p.spec() for p in self.peer if p.name != name]


def load_band(path: str | Path) -> BandFile:
    """A session file, or a shipped one by name (``quartet``); relative paths in it are from its folder."""
    p = resolve_config(path, BandFileError, "session", subdir="band")
    data = read_toml(p, BandFileError, "session file")
    try:
        band = BandFile.model_validate(data)
    except ValidationError as exc:
        raise BandFileError(f"{p}: {first_error(exc)}") from None
    for attr in ("key_file", "config"):
        value = getattr(band.session, attr)
        if value is not None and not Path(value).is_absolute() and (attr == "key_file" or (p.parent / value).exists()):
            setattr(band.session, attr, str(p.parent / value))
    return band


def parse_peer_option(text: str) -> RemoteSpec:
    """``NAME=HOST:PORT`` (``--peer``)."""
    name, sep, address = text.partition("=")
    if not sep or not NAME.match(name):
        raise BandFileError(f"--peer {text!r} is not NAME=HOST:PORT (e.g. --peer bob=192.0.2.7:50000)")
    return RemoteSpec(name, Endpoint.parse(address))
