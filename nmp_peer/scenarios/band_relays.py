"""Every relay of a band in one process: ``python -m nmp_peer.scenarios.band_relays SPEC``.

``nmp_peer.scenarios.band`` starts this inside the relay namespace of a band across
network namespaces. ``SPEC`` is the pickled list of the band's relay specifications,
written by that module for this process alone. It prints ``ready`` once every relay
listens, relays until SIGTERM or SIGINT, then writes the relays' summaries (in the
order of the specs) to ``SPEC`` with the suffix ``.json``.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import signal
import sys
from pathlib import Path
from typing import Any

from nmp_peer.netsim.relay import Relay


async def serve(spec_path: Path) -> list[dict[str, Any]]:
    specs = pickle.loads(spec_path.read_bytes())  # written by our own parent for this process
    relays = [Relay(s.listen, s.forward, s.b_to_a, s.a_to_b, log=s.log) for s in specs]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        for relay in relays:
            await relay.start()
        print("ready", flush=True)
        await stop.wait()
    finally:
        for relay in relays:
            relay.close()
    return [relay.summary() for relay in relays]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m nmp_peer.scenarios.band_relays SPEC", file=sys.stderr)
        return 2
    spec_path = Path(argv[0])
    summaries = asyncio.run(serve(spec_path))
    spec_path.with_suffix(".json").write_text(json.dumps(summaries, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
