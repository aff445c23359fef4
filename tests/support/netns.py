"""Two network namespaces joined by a veth pair: two "hosts" on one machine.

    NetPair("kvt1234")      ns kvt1234-a  veth kvt1234a  10.231.X.1/24
                                  |  (veth pair)
                            ns kvt1234-b  veth kvt1234b  10.231.X.2/24

`prefix(side)` is the argv prefix that runs a command inside one namespace (`ip netns
exec NS`); a kvmd started with it can only reach the other one over the veth link.
Unix sockets live in the file system, not in a network namespace, so a test still
talks to both daemons through their sockets. `close()` deletes both namespaces (the
veth pair goes with them); call it after everything running inside has been killed.
Needs root (CAP_NET_ADMIN) and iproute2; `unavailable_reason()` says why not.
"""

from __future__ import annotations

import os
import shutil
import subprocess


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class NetPair:
    def __init__(self, tag: str):
        self.tag = tag[:10]
        self.ns = {"a": f"{self.tag}-a", "b": f"{self.tag}-b"}
        octet = os.getpid() % 250 + 1
        self.addr = {"a": f"10.231.{octet}.1", "b": f"10.231.{octet}.2"}
        self._made: list[str] = []

    def create(self) -> NetPair:
        try:
            for ns in self.ns.values():
                _ip("netns", "add", ns)
                self._made.append(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            va, vb = f"{self.tag}a", f"{self.tag}b"
            _ip("link", "add", va, "netns", self.ns["a"], "type", "veth", "peer", "name", vb, "netns", self.ns["b"])
            for side, dev in (("a", va), ("b", vb)):
                _ip("-n", self.ns[side], "addr", "add", f"{self.addr[side]}/24", "dev", dev)
                _ip("-n", self.ns[side], "link", "set", dev, "up")
        except BaseException:
            self.close()
            raise
        return self

    def prefix(self, side: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[side]]

    def run(self, side: str, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix(side), *argv], capture_output=True, text=True, timeout=30)

    def close(self) -> None:
        for ns in self._made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self._made = []

    def exists(self) -> bool:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return any(line.split()[0] in self.ns.values() for line in out.splitlines() if line.strip())
