"""The event loop a live peer runs on: asyncio's own, or uvloop's (the ``[uvloop]`` extra).

``[live] event_loop`` in the config (``nmp-peer jam``) or ``--event-loop`` (``nmp-peer bench
--path jam``) chooses it; ``run`` is where the loop is made. uvloop (libuv under the asyncio
API, made for this) runs the same code; what it saves a jam is measured by ``nmp-peer bench
--path jam --event-loop uvloop`` against ``--event-loop asyncio`` (README, "Speed").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar, get_args

from nmp_peer.errors import UserError

EventLoopName = Literal["asyncio", "uvloop"]
EVENT_LOOPS: tuple[str, ...] = get_args(EventLoopName)
T = TypeVar("T")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the named loop (None: asyncio's default); a one-line ``UserError`` for
    an unknown name or a uvloop that is not installed."""
    if name == "asyncio":
        return None
    if name != "uvloop":
        raise UserError(f"unknown event loop {name!r}; choose {' or '.join(EVENT_LOOPS)}")
    try:
        import uvloop
    except ImportError:
        raise UserError("event loop uvloop needs the uvloop package: pip install 'nmp-peer[uvloop]'") from None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], event_loop: str = "asyncio") -> T:
    """``asyncio.run(main)`` on the named event loop."""
    try:
        factory = loop_factory(event_loop)
    except UserError:
        main.close()  # never awaited: no warning for it
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """``uvloop`` or ``asyncio``: what the running loop is (for summaries)."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
