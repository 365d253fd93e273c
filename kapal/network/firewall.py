"""Living beside a host firewall that drops forwarded traffic: dockerd's, typically.

A dockerd with iptables sets the filter table's FORWARD policy to DROP and loads
``br_netfilter``, so bridged and routed packets of *every* bridge on the host pass
through that chain: kapal's containers would lose their way out, and even each
other on one bridge. kapal's own rules live in its nftables table, but an accept
there cannot overrule a drop in another table. So, only when the policy is DROP,
kapal adds to FORWARD what Docker adds for its own bridges — traffic from a kapal
bridge, and replies or published-port connections to it — each rule tagged with a
comment naming the daemon's table, and removes exactly those rules when its
bridges go. kapal's isolation rules (its nftables table) still apply on top.
"""

from __future__ import annotations

import logging
import shutil
import subprocess

log = logging.getLogger("kapald")


class ForwardAccept:
    def __init__(self, tag: str, iptables: str = "iptables") -> None:
        self.tag = f"kapal:{tag}"
        self.iptables = iptables
        self._bridges: set[str] = set()

    def _run(self, *args: str) -> subprocess.CompletedProcess[str] | None:
        if shutil.which(self.iptables) is None:
            return None
        return subprocess.run([self.iptables, "-w", *args], capture_output=True, text=True)

    def _rules(self, bridge: str) -> list[list[str]]:
        comment = ["-m", "comment", "--comment", self.tag]
        replies = ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED,DNAT"]
        return [["-i", bridge, *comment, "-j", "ACCEPT"], ["-o", bridge, *replies, *comment, "-j", "ACCEPT"]]

    def _listing(self) -> str:
        result = self._run("-S", "FORWARD")
        return result.stdout if result is not None and result.returncode == 0 else ""

    def apply(self, bridges: set[str]) -> None:
        """Make FORWARD accept the traffic of *bridges* if (and only if) its policy drops it."""
        if bridges == self._bridges:
            return
        listing = self._listing()
        for bridge in sorted(self._bridges - bridges):
            self._delete(bridge)
        if "-P FORWARD DROP" in listing:
            present = _tagged_bridges(listing, self.tag)  # a previous kapald's: adopted
            for bridge in sorted(bridges - self._bridges - present):
                self._add(bridge)
        self._bridges = set(bridges)

    def _add(self, bridge: str) -> None:
        for rule in self._rules(bridge):
            result = self._run("-I", "FORWARD", *rule)
            if result is None or result.returncode != 0:
                why = result.stderr.strip() if result is not None else "iptables is not installed"
                log.warning(
                    "the host's iptables FORWARD policy is DROP and kapal could not accept %s's traffic "
                    "(%s): its containers may have no network",
                    bridge,
                    why,
                )
                return
        log.info("the host's iptables FORWARD policy is DROP (dockerd's?): accepting %s's traffic", bridge)

    def _delete(self, bridge: str) -> None:
        for rule in self._rules(bridge):
            for _ in range(4):  # any copies, until iptables says there is none left
                result = self._run("-D", "FORWARD", *rule)
                if result is None or result.returncode != 0:
                    break

    def remove(self) -> None:
        """Remove every rule of this daemon's (its bridges are going)."""
        for bridge in self._bridges | _tagged_bridges(self._listing(), self.tag):
            self._delete(bridge)
        self._bridges = set()


def _tagged_bridges(listing: str, tag: str) -> set[str]:
    """Bridges that already have this daemon's accept rule in *listing* (``iptables -S``)."""
    out = set()
    for line in listing.splitlines():
        words = line.split()
        if tag in line and "-i" in words:
            out.add(words[words.index("-i") + 1])
    return out
