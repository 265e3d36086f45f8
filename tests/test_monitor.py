"""The live web monitor: its guard over real HTTP, its level meters and snapshots, and the page
in a real headless browser (Debian's chromium, driven over its DevTools protocol) watching a
real two-process jam through the impairment relay."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from conftest import JamProcess, music_like

from nmp_peer.audio_io import write_audio
from nmp_peer.cli import main
from nmp_peer.live.monitor import Monitor, MonitorConfig, SnapshotBoard
from nmp_peer.receiver.snapshot import LevelMeter, make_snapshot, peer_snapshot, self_snapshot
from nmp_peer.receiver.stats import Stats

TOKEN = "0123456789abcdef0123456789abcdef"
COUNTERS = {  # the page's field: the JSON summary's
    "received": "packets_received",
    "lost": "packets_lost",
    "late": "packets_late",
    "concealed": "packets_concealed",
    "concealer_partial": "concealer_partial",
    "concealer_misses": "concealer_misses",
    "underruns": "underruns",
}


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------- the command line
def test_a_non_loopback_monitor_without_a_key_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for address in ("0.0.0.0:8080", ":8080", "192.0.2.7:8080", "example.org:8080"):
        assert main(["jam", "--peer", "127.0.0.1:9", "--monitor", address]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--monitor-key-file" in err and address in err, err


def test_monitor_options_that_cannot_work_end_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    short = tmp_path / "short.key"
    short.write_text("abc123\n")
    spaced = tmp_path / "spaced.key"
    spaced.write_text("0123456789 abcdef 0123456789\n")
    cases = [
        (["--monitor-key-file", str(short)], "needs --monitor"),
        (["--monitor", "127.0.0.1:99999"], "--monitor"),
        (["--monitor", "0.0.0.0:8080", "--monitor-key-file", str(short)], "16+"),
        (["--monitor", "0.0.0.0:8080", "--monitor-key-file", str(spaced)], "16+"),
        (["--monitor", "0.0.0.0:8080", "--monitor-key-file", str(tmp_path / "none.key")], "cannot read"),
    ]
    for args, said in cases:
        assert main(["jam", "--peer", "127.0.0.1:9", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and said in err, (args, err)


def test_loopback_addresses_need_no_key_and_any_address_takes_one(tmp_path: Path) -> None:
    for address in ("127.0.0.1:0", "localhost:8080", "[::1]:8080", "127.1.2.3:0"):
        assert MonitorConfig.parse(address).token is None
    key = tmp_path / "monitor.key"
    key.write_text(TOKEN + "\n")
    assert MonitorConfig.parse("0.0.0.0:8080", key) == MonitorConfig("0.0.0.0", 8080, TOKEN)


# ---------------------------------------------------------------------- the guard, over real HTTP
@asynccontextmanager
async def serving(config: MonitorConfig) -> AsyncIterator[tuple[Monitor, SnapshotBoard, str]]:
    board = SnapshotBoard()
    monitor = Monitor(config, board)
    await monitor.start()
    try:
        yield monitor, board, f"http://127.0.0.1:{monitor.port}"
    finally:
        await monitor.close()


def snapshot_of(received: int) -> dict[str, Any]:
    stats = Stats(packets_received=received, packets_lost=received // 10)
    return make_snapshot(received / 86.0, self_snapshot("me", stats), [peer_snapshot("peer", "127.0.0.1:9", stats)])


def test_a_keyed_monitor_refuses_a_wrong_or_missing_key_with_403_over_real_http() -> None:
    async def run() -> None:
        async with serving(MonitorConfig("0.0.0.0", 0, TOKEN)) as (monitor, board, base):
            board.publish(snapshot_of(100))
            async with aiohttp.ClientSession() as http:
                for path in ("/", "/snapshot.json", "/ws"):
                    for query in ("", "?key=", "?key=" + TOKEN[:-1], "?key=" + TOKEN + "0", "?key=" + TOKEN.upper()):
                        async with http.get(base + path + query) as r:
                            assert r.status == 403, (path, query)
                    async with http.get(base + path, headers={"Authorization": "Bearer wrong-token-wrong-token"}) as r:
                        assert r.status == 403
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await http.ws_connect(base + "/ws?key=not-the-token-at-all")
                assert refused.value.status == 403
                async with http.get(base + "/?key=" + TOKEN) as r:
                    assert r.status == 200 and "nmp-peer monitor" in await r.text()
                    assert r.headers["Referrer-Policy"] == "no-referrer"
                async with http.get(base + "/snapshot.json", headers={"Authorization": "Bearer " + TOKEN}) as r:
                    assert r.status == 200 and await r.json() == board.latest
                async with http.ws_connect(base + "/ws?key=" + TOKEN) as ws:
                    first = await ws.receive_json(timeout=5)
                    assert first["seq"] == 1 and first["peers"][0]["received"] == 100
                    board.publish(snapshot_of(200))
                    second = await ws.receive_json(timeout=5)
                    assert second["seq"] == 2 and second["peers"][0]["lost"] == 20
                    assert monitor.clients == 1

    asyncio.run(run())


def test_an_unkeyed_monitor_serves_loopback_names_only_and_no_other_site_s_websocket() -> None:
    async def run() -> None:
        async with serving(MonitorConfig("127.0.0.1", 0)) as (monitor, board, base):
            board.publish(snapshot_of(5))
            port = monitor.port
            async with aiohttp.ClientSession() as http:
                for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
                    async with http.get(base + "/snapshot.json", headers={"Host": host}) as r:
                        assert r.status == 200, host
                for host in (f"attacker.example:{port}", f"192.0.2.1:{port}"):  # DNS rebinding
                    async with http.get(base + "/snapshot.json", headers={"Host": host}) as r:
                        assert r.status == 403, host
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await http.ws_connect(base + "/ws", origin="http://attacker.example")
                assert refused.value.status == 403
                async with http.ws_connect(base + "/ws", origin=base) as ws:
                    assert (await ws.receive_json(timeout=5))["seq"] == 1

    asyncio.run(run())


def test_a_monitor_on_a_port_in_use_ends_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["jam", "--peer", "127.0.0.1:9", "--listen", "127.0.0.1:0", "--monitor", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot serve the monitor" in err, err


# ---------------------------------------------------------------------- meters and snapshots
def test_a_level_meter_reads_rms_and_peak_in_dbfs_and_falls_back_at_its_release() -> None:
    meter = LevelMeter()
    assert meter.rms_dbfs is None and meter.peak_dbfs is None
    t = np.arange(512) / 44100
    sine = (0.5 * np.sin(2 * np.pi * (16 * 44100 / 512) * t)).astype(np.float32)[:, None]  # 16 whole periods
    meter.update(sine)
    assert meter.peak_dbfs == pytest.approx(20 * math.log10(0.5), abs=0.05)
    assert meter.rms_dbfs == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.05)
    loud, loud_peak = meter.rms_dbfs, meter.peak_dbfs
    blocks = round(0.3 * 44100 / 512)  # one release time of silence: 1/e of the power
    for _ in range(blocks):
        meter.update(np.zeros((512, 1), np.float32))
    assert meter.rms_dbfs is not None and meter.peak_dbfs is not None
    assert loud - meter.rms_dbfs == pytest.approx(10 * math.log10(math.e), abs=0.2)
    assert loud_peak - meter.peak_dbfs == pytest.approx(10 * math.log10(math.e), abs=0.2)
    meter.update(sine)  # instant attack
    assert meter.rms_dbfs == loud
    stereo = LevelMeter()
    stereo.update(np.stack([sine[:, 0], -sine[:, 0] / 2], axis=1))
    assert stereo.peak_dbfs == pytest.approx(20 * math.log10(0.5), abs=0.05)


def test_a_snapshot_carries_each_stream_s_stats_as_its_summary_rounds_them() -> None:
    stats = Stats(
        packets_received=900,
        packets_lost=12,
        packets_late=3,
        packets_concealed=15,
        concealer_partial=2,
        underruns=1,
        buffer_depth_packets=2.34567,
        target_depth_packets=1.8888,
        jitter_ms=0.71234,
        latency_samples=1390,
    )
    summary = stats.to_dict()
    peer = peer_snapshot("bass", "10.0.0.2:50000", stats, rtt_ms=23.456)
    for field, key in COUNTERS.items():
        assert peer[field] == summary[key], field
    assert peer["jitter_ms"] == summary["jitter_ms"] and peer["latency_ms"] == summary["latency_ms"]
    assert peer["depth_packets"] == summary["buffer_depth_packets"]
    assert peer["target_packets"] == summary["target_depth_packets"]
    assert peer["depth_ms"] == round(2.34567 * 512 / 44.1, 2) and peer["rtt_ms"] == 23.46
    assert peer["level_dbfs"] is None and peer["name"] == "bass"
    snap = make_snapshot(1.23456, self_snapshot("me", stats), [peer, peer_snapshot("keys", "10.0.0.3:1", Stats())])
    assert json.loads(json.dumps(snap, allow_nan=False)) == snap
    assert snap["time"] == 1.235 and [p["name"] for p in snap["peers"]] == ["bass", "keys"]


# ---------------------------------------------------------------------- the page in a real browser
class Chromium:
    """Debian's chromium, headless, with its DevTools protocol (CDP) on a local port."""

    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.process: subprocess.Popen[bytes] | None = None
        self.log = profile.parent / "chromium.log"
        self.port = 0

    def start(self, timeout_s: float = 60.0) -> None:
        """Skips, saying why, where chromium is missing or cannot start."""
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if exe is None:
            pytest.skip("chromium is not installed (make setup installs Debian's chromium)")
        args = [
            exe,
            "--headless",
            "--no-sandbox",  # as root (CI), chromium runs no sandbox; it only opens this test's local pages
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}",
            "--window-size=980,520",
            "about:blank",
        ]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.skip(f"chromium did not start: {self.log.read_text(errors='replace')[-600:]}")
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


class Tab:
    """One page (tab) of the browser, driven over its own CDP WebSocket."""

    def __init__(self) -> None:
        self._ids = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}

    async def open(self, http: aiohttp.ClientSession, devtools_port: int, url: str) -> None:
        async with http.put(f"http://127.0.0.1:{devtools_port}/json/new?about:blank") as r:
            target = await r.json(content_type=None)
        self.ws = await http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await self.call("Page.enable")
        await self.call("Runtime.enable")
        await self.call("Emulation.setDeviceMetricsOverride", width=980, height=520, deviceScaleFactor=1, mobile=False)
        await self.call("Page.navigate", url=url)

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            future = self._pending.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._ids += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._ids] = future
        await self.ws.send_json({"id": self._ids, "method": method, "params": params})
        reply = await asyncio.wait_for(future, 30.0)
        assert "error" not in reply, (method, reply["error"])
        return dict(reply["result"])

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    async def wait_for(self, what: str, expression: str, timeout_s: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"the page: {what}, not within {timeout_s:g} s"
            await asyncio.sleep(0.1)


def read_page(query: str = "") -> str:
    """JS: what the page shows (every ``data-field`` cell's text), the snapshot it holds, and
    /snapshot.json fetched at once (with ``query``: the key)."""
    return """(async () => {
  const fields = root => Object.fromEntries([...root.querySelectorAll('[data-field]')]
      .map(e => [e.dataset.field, e.textContent]));
  const m = window.nmpMonitor;
  const panels = [...document.querySelectorAll('section[data-peer]')];
  const page = {seq: m.rendered, updates: m.updates, last: m.last, self: fields(document.getElementById('self')),
      peers: panels.map(p => ({name: p.dataset.peer, fields: fields(p)}))};
  const r = await fetch('/snapshot.json' + QUERY);
  return {page, json: await r.json()};
})()""".replace("QUERY", json.dumps(query))


PLAYING = (
    "(m => m && m.last && m.last.peers.length && m.last.peers[0].received > 100"
    " && m.last.peers[0].level_dbfs !== null && m.last.self.input_level_dbfs !== null)(window.nmpMonitor)"
)
PLOTTED = """(() => {
  const c = document.querySelector('section[data-peer] canvas');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let depth = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 200 && d[i] < 140 && d[i + 1] > 120) depth++;
  return depth;
})()"""


def shown(field: str, text: str) -> float | int | None:
    """The value a page cell shows (a dash: none)."""
    if text == "\u2014":
        return None
    return int(text) if field in COUNTERS or field == "packets_sent" else float(text)


def assert_page_shows(page: dict[str, Any], snapshot: dict[str, Any]) -> None:
    """Every number the page shows is its snapshot's, as rounded for display (one decimal, two for packets)."""
    (panel,) = page["peers"]
    (peer,) = snapshot["peers"]
    assert panel["name"] == peer["name"] and panel["fields"]["address"] == peer["address"]
    for field, text in panel["fields"].items():
        if field in ("address", "pinned"):
            assert text == str(peer[field])
            continue
        value, want = shown(field, text), peer[field]
        if want is None or field in COUNTERS:
            assert value == want, (field, text, want)
        else:
            tolerance = (0.005 if "packets" in field else 0.05) + 1e-9
            assert value is not None and abs(value - want) <= tolerance, (field, text, want)
    for field in ("input_level_dbfs", "input_peak_dbfs", "packets_sent"):
        value, want = shown(field, page["self"][field]), snapshot["self"][field]
        if want is None or field == "packets_sent":
            assert value == want, (field, value, want)
        else:
            assert value is not None and abs(value - want) <= 0.05 + 1e-9, (field, value, want)


def monitor_port(jam: JamProcess) -> int:
    """The port of the monitor a jam announced (``nmp-peer jam: monitor at http://HOST:PORT/ ...``)."""
    jam.wait_for("the monitor's address", lambda: any("monitor at http://" in line for line in jam.lines))
    line = next(line for line in jam.lines if "monitor at http://" in line)
    return int(line.split("monitor at http://")[1].split("/")[0].rsplit(":", 1)[1])


@pytest.mark.slow
def test_the_page_in_a_real_browser_shows_a_live_jam_s_numbers_as_its_snapshots_and_summary(tmp_path: Path) -> None:
    """B serves a keyed monitor on every address (the key file's token in the page's URL), A
    an unkeyed one on 127.0.0.1; the relay drops 5 % of A's packets to B, so that B's page
    counts losses and concealments."""
    seconds = 8.0
    write_audio(tmp_path / "a.wav", music_like(seconds, seed=1))
    write_audio(tmp_path / "b.wav", music_like(seconds, seed=2))
    key = tmp_path / "monitor.key"
    key.write_text(TOKEN + "\n")
    pa, pb, relay_port = free_port(), free_port(), free_port()
    relay_err = tmp_path / "relay.err"
    with open(relay_err, "wb") as err_file:
        relay = subprocess.Popen(
            [sys.executable, "-m", "nmp_peer.cli", "impair", "--listen", f"127.0.0.1:{relay_port}"]
            + ["--forward", f"127.0.0.1:{pb}", "--loss", "0.05", "--one-way", "--seed", "3"]
            + ["--summary", str(tmp_path / "relay.json")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err_file,
        )
    chromium = Chromium(tmp_path / "profile")
    jams: list[JamProcess] = []
    try:
        deadline = time.monotonic() + 60
        while "relaying" not in relay_err.read_text():
            assert relay.poll() is None and time.monotonic() < deadline, relay_err.read_text()
            time.sleep(0.1)
        common = ["--peer", f"127.0.0.1:{relay_port}", "--concealer", "lpc", "--duration", "120"]
        b = JamProcess(
            ["--listen", f"127.0.0.1:{pb}", "--input", str(tmp_path / "b.wav"), "--output", str(tmp_path / "b.out.wav")]
            + ["--monitor", "0.0.0.0:0", "--monitor-key-file", str(key), *common]
        )
        jams.append(b)
        b_port = monitor_port(b)
        a = JamProcess(
            ["--listen", f"127.0.0.1:{pa}", "--input", str(tmp_path / "a.wav"), "--output", str(tmp_path / "a.out.wav")]
            + ["--monitor", "127.0.0.1:0", *common]
        )
        jams.append(a)
        a_port = monitor_port(a)
        chromium.start()
        final = asyncio.run(watch(chromium.port, b_port, a_port, tmp_path))
        code, summary, err = b.stop()
        assert code == 0, err
        assert a.stop()[0] == 0
    finally:
        chromium.stop()
        for jam in jams:
            jam.kill()
        relay.send_signal(signal.SIGTERM)
        relay.wait(30)
    # After A's stream ended the counters stood still: the page's last numbers are B's summary's.
    (peer,) = final["peers"]
    for field, key_ in COUNTERS.items():
        assert shown(field, peer["fields"][field]) == summary[key_], (field, peer["fields"][field], summary[key_])
    for field in ("jitter_ms", "latency_ms"):
        assert abs(float(peer["fields"][field]) - summary[field]) <= 0.05 + 1e-9, field
    assert summary["packets_lost"] > 0 and summary["packets_concealed"] >= summary["packets_lost"]
    png = tmp_path / "monitor.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    if os.environ.get("NMP_MONITOR_SCREENSHOT"):  # the README's picture: NMP_MONITOR_SCREENSHOT=docs/monitor.png
        shutil.copyfile(png, os.environ["NMP_MONITOR_SCREENSHOT"])


async def watch(devtools: int, b_port: int, a_port: int, tmp_path: Path) -> dict[str, Any]:
    """B's page (keyed): checked live against /snapshot.json, screenshot, then what it shows at
    the end of A's stream. A's page (unkeyed): checked once."""
    async with aiohttp.ClientSession() as http:
        b_page, a_page = Tab(), Tab()
        await b_page.open(http, devtools, f"http://127.0.0.1:{b_port}/?key={TOKEN}")
        await a_page.open(http, devtools, f"http://127.0.0.1:{a_port}/")
        await b_page.wait_for("a snapshot with A's audio playing", PLAYING)
        # The page took the key from its URL and dropped it from the address bar; without the key
        # even the page's own origin gets 403.
        assert await b_page.evaluate("location.href") == f"http://127.0.0.1:{b_port}/"
        assert await b_page.evaluate("fetch('/snapshot.json').then(r => r.status)") == 403
        key = f"?key={TOKEN}"
        # Live: the page redraws as snapshots come; each time it shows the one it holds, and
        # that one is /snapshot.json's whenever both are the same snapshot (most reads).
        first = await b_page.evaluate(read_page(key))
        t0 = time.monotonic()
        same, reads = 0, 0
        while same < 5 or time.monotonic() - t0 < 3.0:
            got = await b_page.evaluate(read_page(key))
            page, snap = got["page"], got["json"]
            assert_page_shows(page, page["last"])
            assert snap["seq"] >= page["seq"] and snap["time"] >= page["last"]["time"]
            for field in COUNTERS:
                assert snap["peers"][0][field] >= page["last"]["peers"][0][field]
            if snap["seq"] == page["seq"]:
                assert snap == page["last"]
                same += 1
            reads += 1
            assert reads < 400, f"the page held /snapshot.json's snapshot in only {same} of {reads} reads"
            await asyncio.sleep(0.07)
        last = await b_page.evaluate(read_page(key))
        wall = time.monotonic() - t0
        p0, p1 = first["page"], last["page"]
        updates_per_s = (p1["updates"] - p0["updates"]) / wall
        snapshots_per_s = (p1["last"]["seq"] - p0["last"]["seq"]) / (p1["last"]["time"] - p0["last"]["time"])
        print(f"monitor: {snapshots_per_s:.1f} snapshots/s published, {updates_per_s:.1f} page updates/s")
        assert snapshots_per_s >= 10.0 and updates_per_s >= 5.0, (snapshots_per_s, updates_per_s)
        assert p1["last"]["peers"][0]["received"] > p0["last"]["peers"][0]["received"]  # live
        assert await b_page.evaluate(PLOTTED) > 50, "the plot shows no buffer-depth line"
        shot = await b_page.call("Page.captureScreenshot", format="png")
        (tmp_path / "monitor.png").write_bytes(base64.b64decode(shot["data"]))
        # A's page, unkeyed on 127.0.0.1, shows A's stream from B, as A's /snapshot.json has it.
        await a_page.wait_for("a snapshot with B's audio playing", PLAYING)
        for _ in range(100):
            got = await a_page.evaluate(read_page())
            assert_page_shows(got["page"], got["page"]["last"])
            if got["json"]["seq"] == got["page"]["seq"]:
                assert got["json"] == got["page"]["last"]
                break
            await asyncio.sleep(0.07)
        else:
            raise AssertionError("A's page never held /snapshot.json's snapshot")
        # The end: A's file is over, its stream ended; B's counters stand still.
        await b_page.wait_for("the end of A's stream", "window.nmpMonitor.last.peers[0].stream_ends > 0")
        await asyncio.sleep(0.5)
        end = await b_page.evaluate(read_page(key))
        assert_page_shows(end["page"], end["page"]["last"])
        return dict(end["page"])


def test_a_jam_without_a_monitor_does_not_import_aiohttp() -> None:
    """aiohttp takes about 0.25 s to import: only a jam that serves a monitor pays it."""
    code = "import sys, nmp_peer.cli.peer, nmp_peer.live.peer; sys.exit('aiohttp' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
