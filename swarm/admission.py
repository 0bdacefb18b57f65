"""Who may open an inbound connection now: slots and handshake allowances per address and subnet.

Pure bookkeeping, the clock passed in; knows nothing about sockets or HTTP. The peer asks
`admit` once a request is a real websocket upgrade (a plain GET spends nothing), holds the slot
it gets while the connection is half-open (no hello yet) and open, and calls `release` when it
ends. `admit_identity` decides, once the hello names the node, whether it may take one of the
slots kept for peers that proved useful.

Why per address and per subnet (a /24 for IPv4, a /48 for IPv6): one machine, or one hosting
provider's block, can otherwise hold every slot with fresh node ids or spend the node-wide
handshake allowance, so honest peers are refused (issue 14: 32 fresh ids from one address held
all 32 slots). Subnets are counted apart from addresses so a block of addresses cannot do it
either. Half-open connections get their own, smaller cap, because they cost nothing to open.
"""
from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass

from swarm.limits import TokenBucket

# Upgrade requests: one address may make HANDSHAKE_BURST_PER_SLOT per slot it may hold at once,
# refilled at HANDSHAKES_PER_SLOT_PER_S per slot (defaults: 8, then 2/s per address; 16, then
# 4/s per subnet), so a lab or test swarm that lifts the slot limits lifts these with them.
HANDSHAKE_BURST_PER_SLOT = 2.0
HANDSHAKES_PER_SLOT_PER_S = 0.5
MAX_BUCKETS = 4096                  # addresses and subnets with a handshake bucket; the stalest go first
MAX_USEFUL = 1024                   # node ids remembered as useful


def subnet_of(host: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) that `host` is in; a host that is not an IP address is its own."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    max_inbound: int = 32
    per_addr: int = 4            # inbound slots (half-open or open) one address may hold
    per_subnet: int = 8
    max_half_open: int = 48      # connections upgraded but not yet past the hello, all together
    half_open_per_subnet: int = 4  # ... from one subnet, so one block cannot fill them (eviction does the rest)
    reserved_useful: int = 8     # of max_inbound, kept for peers that delivered entries before


class Admission:
    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self.open = 0                # connections past their hello (half-open ones are counted apart)
        self.half_open = 0
        self.ordinary = 0            # open connections of peers not known as useful
        self._per_addr: dict[str, int] = {}
        self._per_subnet: dict[str, int] = {}
        self._half_per_subnet: dict[str, int] = {}
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._useful: OrderedDict[bytes, None] = OrderedDict()

    def admit(self, host: str, now_s: float) -> str | None:
        """Takes a half-open slot for `host`, or says why not: "limit", "half_open" (all taken:
        the caller may evict the oldest and ask again), "half_open_subnet", "addr", "subnet",
        "rate". Call only for a real websocket upgrade."""
        net = subnet_of(host)
        if self.open >= self.limits.max_inbound:
            return "limit"
        if self.half_open >= self.limits.max_half_open:
            return "half_open"
        if self._half_per_subnet.get(net, 0) >= self.limits.half_open_per_subnet:
            return "half_open_subnet"
        if self._per_addr.get(host, 0) >= self.limits.per_addr:
            return "addr"
        if self._per_subnet.get(net, 0) >= self.limits.per_subnet:
            return "subnet"
        for key, slots in (("a:" + host, self.limits.per_addr), ("s:" + net, self.limits.per_subnet)):
            bucket = self._bucket(key, slots * HANDSHAKES_PER_SLOT_PER_S, slots * HANDSHAKE_BURST_PER_SLOT, now_s)
            if not bucket.take(1.0, now_s):
                return "rate"
        self.half_open += 1
        self._per_addr[host] = self._per_addr.get(host, 0) + 1
        self._per_subnet[net] = self._per_subnet.get(net, 0) + 1
        self._half_per_subnet[net] = self._half_per_subnet.get(net, 0) + 1
        return None

    def admit_identity(self, host: str, node: bytes) -> tuple[str | None, str]:
        """The hello arrived: the slot stops being half-open. Returns (kind, why): kind "useful"
        or "ordinary" is the slot it now holds (pass it to `release`); None: refused because
        every slot is taken (why "limit") or only the reserved ones are left and this node has
        not proved useful ("reserved"); the caller closes it."""
        self.half_open -= 1
        _decrement(self._half_per_subnet, subnet_of(host))
        if self.open >= self.limits.max_inbound:
            return None, "limit"
        if node in self._useful:
            self.open += 1
            return "useful", ""
        if self.ordinary >= self.limits.max_inbound - self.limits.reserved_useful:
            return None, "reserved"
        self.open += 1
        self.ordinary += 1
        return "ordinary", ""

    def release(self, host: str, *, identified: bool, kind: str | None) -> None:
        """The connection ended. `identified`: admit_identity was called; `kind`: its answer."""
        net = subnet_of(host)
        if kind is not None:
            self.open -= 1
        if not identified:
            self.half_open -= 1
            _decrement(self._half_per_subnet, net)
        if kind == "ordinary":
            self.ordinary -= 1
        _decrement(self._per_addr, host)
        _decrement(self._per_subnet, net)

    def is_useful(self, node: bytes) -> bool:
        return node in self._useful

    def mark_useful(self, node: bytes) -> None:
        """A peer that delivered entries we appended: it may use the reserved slots later."""
        self._useful[node] = None
        self._useful.move_to_end(node)
        if len(self._useful) > MAX_USEFUL:
            self._useful.popitem(last=False)

    def _bucket(self, key: str, rate_per_s: float, burst: float, now_s: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket.full(rate_per_s, burst, now_s)
            if len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(key)
        return bucket


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 1) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
