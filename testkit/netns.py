"""Hosts on one machine for a multi-host run: network namespaces joined by virtual links through a bridge.

    core   10.77.0.1  the bridge (the hosts' switch), Redis, and what stands in for Discord and Slack
    gpu-a  10.77.0.2  a worker; its link is a veth pair whose other end is a port of core's bridge
    gpu-b  10.77.0.3  a worker, and the front-ends beside it

The GPU hosts keep their loopback down, so everything they say goes over their link. Cutting a host sets its
bridge port down, as a pulled cable or a dead switch port would: its packets go nowhere and its connections
hang until their timeouts, instead of failing at once. Namespaces are named after the process that made
them; `Network` deletes its own on exit and any left by a process that no longer runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

PREFIX = "kullm-net"
SUBNET = "10.77.0"
BRIDGE = "br0"


@dataclass(frozen=True)
class Host:
    """One namespace: what runs in it is started through `command`, and listens on `address`."""

    namespace: str
    address: str
    port: str = ""  # this host's port on core's bridge ("" for core itself)

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this host's namespace (`ip netns exec` execs it: the pid stays the same)."""
        return ["ip", "netns", "exec", self.namespace, *argv]


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, in one line; None where they can."""
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    if shutil.which("ip") is None:
        return "making network namespaces needs iproute2 (`ip`)"
    probe = f"{PREFIX}-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    try:
        veth = _ip(
            "-n", probe, "link", "add", "name", "probe-a", "type", "veth", "peer", "name", "probe-b", check=False
        )
        bridge = _ip("-n", probe, "link", "add", BRIDGE, "type", "bridge", check=False)
        failed = veth if veth.returncode else bridge
        return f"virtual links cannot be made: {failed.stderr.strip()}" if failed.returncode else None
    finally:
        _ip("netns", "del", probe, check=False)


class Network:
    """core, gpu-a and gpu-b (see the module docstring) for as long as the `with` block runs."""

    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag or f"{PREFIX}-{os.getpid()}"
        self.core = Host(f"{self.tag}-core", f"{SUBNET}.1")
        self.gpu_a = Host(f"{self.tag}-a", f"{SUBNET}.2", "port-a")
        self.gpu_b = Host(f"{self.tag}-b", f"{SUBNET}.3", "port-b")

    @property
    def hosts(self) -> tuple[Host, Host, Host]:
        return self.core, self.gpu_a, self.gpu_b

    def __enter__(self) -> Network:
        sweep()
        try:
            self._make()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.remove()

    def _make(self) -> None:
        core = self.core.namespace
        _ip("netns", "add", core)
        _ip("-n", core, "link", "set", "lo", "up")  # Redis and the stand-ins are reached by their own address
        _ip("-n", core, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", core, "addr", "add", f"{self.core.address}/24", "dev", BRIDGE)
        _ip("-n", core, "link", "set", BRIDGE, "up")
        for host in (self.gpu_a, self.gpu_b):
            _ip("netns", "add", host.namespace)
            _ip(
                "link",
                "add",
                "name",
                "eth0",
                "netns",
                host.namespace,
                "type",
                "veth",
                "peer",
                "name",
                host.port,
                "netns",
                core,
            )
            _ip("-n", core, "link", "set", host.port, "master", BRIDGE)
            _ip("-n", core, "link", "set", host.port, "up")
            _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.namespace, "link", "set", "eth0", "up")

    def cut(self, host: Host) -> None:
        """Take `host` off the network: its bridge port goes down, and nothing it sends arrives."""
        _ip("-n", self.core.namespace, "link", "set", host.port, "down")

    def restore(self, host: Host) -> None:
        """Bring `host`'s link back."""
        _ip("-n", self.core.namespace, "link", "set", host.port, "up")

    def remove(self) -> None:
        """Delete the namespaces (their links go with them); processes still inside lose their network."""
        for host in self.hosts:
            _ip("netns", "del", host.namespace, check=False)


def sweep() -> None:
    """Delete the namespaces of runs whose process is gone (killed before it could clean up)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in listed.splitlines():
        name = line.split(" ", 1)[0]
        pid = name.removeprefix(f"{PREFIX}-").split("-", 1)[0]
        if name.startswith(f"{PREFIX}-") and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _ip("netns", "del", name, check=False)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done
