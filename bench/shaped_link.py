"""The bench's slow link: a network namespace joined to the host by a veth pair, shaped by tc's token bucket filter.

Why not the latency proxy: it forwards in Python on the same cores, so its own throughput, not the link's, would
bound a 550 MiB download. Here the kernel shapes the bytes; Dovecot listens on the host's end and each client
runs inside the namespace (`ip netns exec`). Needs root.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from hanna_sync.demo.sandbox import Dovecot

NETNS = "hanna-bench"
VETH_HOST, VETH_NS = "hbench0", "hbench1"
HOST_ADDRESS, NS_ADDRESS = "198.18.0.1", "198.18.0.2"  # RFC 2544's benchmarking range


class Link:
    """A network namespace joined to the host by a veth pair, each end shaped by a token bucket filter.

    Counts as the proxy does where it can: bytes each way from the veth's counters (no round trips,
    no connections: those are the proxy's)."""

    def __init__(self, rate: str) -> None:
        self.rate = rate
        self.prefix = ("ip", "netns", "exec", NETNS)
        self._start = (0, 0)

    def up(self) -> None:
        self.down()
        for argv in (["ip", "netns", "add", NETNS],
                     ["ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS],
                     ["ip", "link", "set", VETH_NS, "netns", NETNS],
                     ["ip", "addr", "add", f"{HOST_ADDRESS}/30", "dev", VETH_HOST],
                     ["ip", "link", "set", VETH_HOST, "up"],
                     [*self.prefix, "ip", "addr", "add", f"{NS_ADDRESS}/30", "dev", VETH_NS],
                     [*self.prefix, "ip", "link", "set", VETH_NS, "up"],
                     [*self.prefix, "ip", "link", "set", "lo", "up"],
                     ["tc", "qdisc", "add", "dev", VETH_HOST, "root", "tbf", "rate", self.rate, "burst", "32kbit",
                      "latency", "400ms"],
                     [*self.prefix, "tc", "qdisc", "add", "dev", VETH_NS, "root", "tbf", "rate", self.rate, "burst",
                      "32kbit", "latency", "400ms"]):
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
            if proc.returncode:
                self.down()
                raise OSError(f"{' '.join(argv)}: {proc.stderr.strip()}")

    def down(self) -> None:
        """Deleting the namespace deletes the veth pair with it."""
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True, check=False)

    def _counters(self) -> tuple[int, int]:
        stats = Path("/sys/class/net") / VETH_HOST / "statistics"
        return int((stats / "tx_bytes").read_text()), int((stats / "rx_bytes").read_text())

    def reset(self) -> None:
        self._start = self._counters()

    def settle(self) -> None:
        """The commands ran to their end: nothing is in flight."""

    @property
    def connections(self) -> list[object]:
        return []

    @property
    def round_trips(self) -> int:
        return 0

    @property
    def bytes_down(self) -> int:
        return self._counters()[0] - self._start[0]

    @property
    def bytes_up(self) -> int:
        return self._counters()[1] - self._start[1]


class FarDovecot(Dovecot):
    """The sandbox Dovecot listening on the veth's host address too, its certificate naming that address."""

    def _config(self) -> str:
        return super()._config().replace("listen = 127.0.0.1\n", f"listen = 127.0.0.1, {HOST_ADDRESS}\n")
