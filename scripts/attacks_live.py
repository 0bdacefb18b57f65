"""Issue 12's identity attacks against a real node: `python -m node` with its default configuration.

The victim is the README's first command in a fresh home (a solo swarm: the node is its creator,
its verifier key the spec's only trusted verifier), run as a real process. The attacker joins it
over the real peer protocol on 127.0.0.1 (it fetches the spec, dials, gossips) with keys it made
for free, and publishes what an attacker would: profiles asking to be admitted, invented claims,
verifications of them, record and fee mints, a self-made admission. Each attack reads the victim's
own ledger file afterwards (read-only, while the node runs) and says what the attacker got there:
credits, records, trust. The attacks that need trusted keys the attacker cannot get this way (the
quorum and market rules) are played against the fold in scripts/bench_attacks.py.

    python scripts/attacks_live.py        one JSON line per attack, then the victim's own audit

Knows nothing about pytest: tests/node/test_attacks_live.py runs it.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger import credits  # noqa: E402
from ledger.audit import open_readonly  # noqa: E402
from ledger.bodies import Admit, Body, Claim, Mint, Profile, Verify  # noqa: E402
from ledger.entry import Entry, decode_entry  # noqa: E402
from ledger.keys import Identity  # noqa: E402
from ledger.spec import SignedSpec, decode_spec  # noqa: E402
from ledger.store import Ledger  # noqa: E402
from swarm.join import fetch_spec  # noqa: E402
from swarm.peer import Peer, PeerConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 600.0    # the victim's first start prepares its data set: ~5 s idle, minutes on a loaded 2-core VM
DELIVERY_TIMEOUT_S = 120.0  # every attacker entry in the victim's file (sub-second on loopback when idle)
STOP_TIMEOUT_S = 120.0
# How long an attack that needs the creator's admission waits for it: the creator's admit loop
# looks every 2 s (node/wiring.py ADMIT_INTERVAL_S); ten rounds and a loaded machine's margin.
ADMIT_WINDOW_S = 30.0
PEER_LINE = re.compile(r"\bpeer (\d+\.\d+\.\d+\.\d+:\d+)")


def key(name: str) -> Identity:
    return Identity.from_seed(hashlib.sha256(b"attacks-live/" + name.encode()).digest())


def fake_commit(n: int) -> bytes:
    return hashlib.sha1(b"attacks-live/commit/%d" % n).digest()


@dataclass
class Victim:
    proc: subprocess.Popen[str]
    home: Path
    peer: str
    lines: list[str] = field(default_factory=list)

    @property
    def ledger_path(self) -> Path:
        return self.home / "swarms" / "current" / "ledger.sqlite"

    def rows(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """A query on the victim's ledger file, read-only (WAL: the running node keeps writing)."""
        conn = open_readonly(self.ledger_path)
        try:
            return list(conn.execute(sql, tuple(args)))
        finally:
            conn.close()

    def head(self, author: bytes) -> int:
        ((seq,),) = self.rows("SELECT coalesce(max(seq), 0) FROM entries WHERE author = ?", [author])
        return int(seq)

    def balance_ucr(self, keys: Iterable[Identity]) -> int:
        return sum(int(u) for k in keys for (u,) in self.rows("SELECT ucr FROM balances WHERE author = ?",
                                                               [k.public_key]))

    def records_by(self, keys: Iterable[Identity]) -> int:
        return sum(int(n) for k in keys for (n,) in self.rows("SELECT count(*) FROM records WHERE author = ?",
                                                               [k.public_key]))

    def admitted(self, keys: Iterable[Identity]) -> list[str]:
        """Attacker keys that an Admit entry of the swarm's creator (the only admissions that
        count) names in the victim's file."""
        creator = decode_spec((self.ledger_path.parent / "spec.bin").read_bytes()).spec.creator
        wanted = {k.public_key: k.node_id[:12] for k in keys}
        named = set()
        for (wire,) in self.rows("SELECT wire FROM entries WHERE kind = 'admit' AND author = ?", [creator]):
            body = decode_entry(wire, signature_checked=True).body
            if isinstance(body, Admit) and body.verifier in wanted:
                named.add(wanted[body.verifier])
        return sorted(named)


@contextlib.asynccontextmanager
async def victim_node(home: Path, extra: list[str] | None = None) -> AsyncIterator[Victim]:
    """`python -m node` in a fresh home, as README's first command; stopped with SIGINT at the end."""
    env = {**os.environ, "AUTOSWARM_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "node", *(extra or [])], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    victim = Victim(proc, home, "")
    assert proc.stdout is not None
    reader = asyncio.create_task(asyncio.to_thread(_read_lines, proc.stdout, victim.lines))
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not victim.peer:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the victim node did not start: " + " | ".join(victim.lines[-10:]))
            victim.peer = next((m.group(1) for line in victim.lines if (m := PEER_LINE.search(line))), "")
            await asyncio.sleep(0.2)  # polls the node's output for its peer address line
        yield victim
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.to_thread(proc.wait, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        await reader
        proc.stdout.close()


def _read_lines(stream: Any, into: list[str]) -> None:
    for line in stream:
        into.append(line.rstrip("\n"))


@dataclass
class Attacker:
    """Free keys, a ledger of the victim's swarm and a real peer connected to the victim."""

    spec: SignedSpec
    ledger: Ledger
    peer: Peer
    clock_ms: int = 0

    async def publish(self, who: Identity, body: Body) -> Entry:
        """Signs `body` as `who` (any key: keys are free), stores it and gossips it to the victim."""
        self.clock_ms = max(self.clock_ms + 1, int(time.time() * 1000))
        entry = await self.ledger.publish(who, body, time_ms=self.clock_ms)
        self.peer.announce(entry)
        return entry


@contextlib.asynccontextmanager
async def attacker_for(victim: Victim, tmp: Path, name: str) -> AsyncIterator[Attacker]:
    spec = await fetch_spec(victim.peer)
    async with (Ledger.open(tmp / f"{name}.ledger", spec) as ledger,
                Peer.open(PeerConfig(host="127.0.0.1", port=0, bootstrap=(victim.peer,)), ledger,
                          key(f"{name}/peer")) as peer):
        await peer.wait_until(lambda: len(peer.connected()) >= 1, DELIVERY_TIMEOUT_S)
        yield Attacker(spec, ledger, peer)


async def delivered(victim: Victim, attacker: Attacker, keys: Iterable[Identity]) -> None:
    """Waits until the victim's file holds every entry the attacker published with `keys`."""
    want = {k.public_key: seq for k in keys if (seq := (await attacker.ledger.heads()).get(k.public_key, 0))}
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    while any(victim.head(author) < seq for author, seq in want.items()):
        if time.monotonic() > deadline:
            raise RuntimeError("the victim did not receive the attack's entries in time")
        await asyncio.sleep(0.2)  # polls the victim's file


def _claim(spec: SignedSpec, n: int, val_bpb: float, parent: bytes | None = None) -> Claim:
    cls = spec.spec.platform_classes[0]
    return Claim(commit=fake_commit(n), parent=parent or spec.spec.baseline_commit, platform_class=cls,
                 status="ok", val_bpb=val_bpb, num_steps=20, planned_steps=20, seed=0, training_s=25.0,
                 wall_s=40.0, peak_vram_mb=0.0, loss_curve=[3.0, 2.0], diff_summary="LR 0.04 -> 0.08",
                 message="a great improvement", bundle=None)


def _verify(claim: Entry, val_bpb: float) -> Verify:
    body = claim.body
    assert isinstance(body, Claim)
    return Verify(claim=claim.id, commit=body.commit, platform_class=body.platform_class, status="ok",
                  val_bpb=val_bpb, num_steps=body.num_steps, seed=0, training_s=25.0)


def _record_mint(attacker: Attacker, verifier: Identity, claim: Entry, quorum: list[Entry], value: float,
                 prev: float | None) -> Mint:
    """The mint the verifier's own fold allows if it can (an admitted Sybil's), else the one it would try."""
    allowed, _ = credits.record_mint(attacker.ledger.state, verifier.public_key, claim.id)
    if allowed is not None:
        return allowed
    spec = attacker.spec.spec
    amount = 0 if prev is None else credits.record_share_ucr(spec.record_ucr_per_bpb, prev, value, len(quorum))
    return Mint(reason="record", subject=claim.id, quorum=[q.id for q in quorum], to=claim.author, amount=amount,
                value=value, prev_best=prev)


Result = dict[str, Any]


async def fresh_keys_ask_to_verify(victim: Victim, tmp: Path) -> Result:
    """The issue's first finding: a fresh key profiles itself as a verifier, waits to be admitted,
    then "verifies" two invented claims of its twin (0.5 and then 0.4 bpb, for commits that do not
    exist) and mints the second one's record worth, and a fee per verification."""
    author, sybil = key("fresh/author"), key("fresh/verifier")
    async with attacker_for(victim, tmp, "fresh") as att:
        cls = att.spec.spec.platform_classes[0]
        await att.publish(sybil, Profile(platform_class=cls, gpu="", gpu_memory_mb=0, driver="", torch="2.5",
                                         cpu="attacker"))
        await delivered(victim, att, [sybil])
        deadline = time.monotonic() + ADMIT_WINDOW_S
        while not victim.admitted([sybil]) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)  # the window in which an admitting creator would have admitted it
        prev: float | None = None
        for n, value in enumerate((0.5, 0.4)):
            claim = await att.publish(author, _claim(att.spec, 100 + n, value))
            check = await att.publish(sybil, _verify(claim, value))
            await att.publish(sybil, Mint(reason="verification", subject=check.id, quorum=[], to=sybil.public_key,
                                          amount=att.spec.spec.verify_ucr, value=None, prev_best=None))
            await att.publish(sybil, _record_mint(att, sybil, claim, [check], value, prev))
            prev = value
        await delivered(victim, att, [author, sybil])
        keys = [author, sybil]
        return {"attack": "fresh_keys_ask_to_verify", "admitted": victim.admitted(keys),
                "attacker_ucr": victim.balance_ucr(keys), "attacker_records": victim.records_by(keys)}


async def sybil_ring(victim: Victim, tmp: Path) -> Result:
    """Three free keys verify each other's invented claims, more often than earning trust takes
    (spec trust_replays), in a ring, then mint fees and records for all of it."""
    ring = [key(f"ring/{i}") for i in range(3)]
    async with attacker_for(victim, tmp, "ring") as att:
        rounds = att.spec.spec.trust_replays + 2
        for r in range(rounds):
            for i, author in enumerate(ring):
                value = 0.9 - 0.01 * r
                claim = await att.publish(author, _claim(att.spec, 1000 + 10 * r + i, value))
                checks = []
                for other in ring:
                    if other is author:
                        continue
                    check = await att.publish(other, _verify(claim, value))
                    checks.append(check)
                    await att.publish(other, Mint(reason="verification", subject=check.id, quorum=[],
                                                  to=other.public_key, amount=att.spec.spec.verify_ucr, value=None,
                                                  prev_best=None))
                for other in ring:
                    if other is not author:
                        await att.publish(other, _record_mint(att, other, claim, checks, value, value + 0.01))
        await delivered(victim, att, ring)
        return {"attack": "sybil_ring", "rounds": rounds, "admitted": victim.admitted(ring),
                "attacker_ucr": victim.balance_ucr(ring), "attacker_records": victim.records_by(ring)}


async def self_admission(victim: Victim, tmp: Path) -> Result:
    """A key signs an Admit of itself (only the creator's admissions count), then verifies and mints."""
    author, sybil = key("self/author"), key("self/verifier")
    async with attacker_for(victim, tmp, "self") as att:
        cls = att.spec.spec.platform_classes[0]
        await att.publish(sybil, Admit(verifier=sybil.public_key, platform_classes=[cls]))
        claim = await att.publish(author, _claim(att.spec, 5000, 0.5))
        check = await att.publish(sybil, _verify(claim, 0.5))
        await att.publish(sybil, Mint(reason="verification", subject=check.id, quorum=[], to=sybil.public_key,
                                      amount=att.spec.spec.verify_ucr, value=None, prev_best=None))
        await att.publish(sybil, _record_mint(att, sybil, claim, [check], 0.5, 0.6))
        await delivered(victim, att, [author, sybil])
        keys = [author, sybil]
        return {"attack": "self_admission", "admitted": victim.admitted(keys),
                "attacker_ucr": victim.balance_ucr(keys), "attacker_records": victim.records_by(keys)}


async def fee_flood(victim: Victim, tmp: Path) -> Result:
    """One free key publishes 200 verifications of one claim and a fee mint for each."""
    author, flooder = key("flood/author"), key("flood/verifier")
    async with attacker_for(victim, tmp, "flood") as att:
        claim = await att.publish(author, _claim(att.spec, 7000, 0.9))
        for _ in range(200):
            check = await att.publish(flooder, _verify(claim, 0.9))
            await att.publish(flooder, Mint(reason="verification", subject=check.id, quorum=[],
                                            to=flooder.public_key, amount=att.spec.spec.verify_ucr, value=None,
                                            prev_best=None))
        await delivered(victim, att, [author, flooder])
        keys = [author, flooder]
        return {"attack": "fee_flood", "verifies": 200, "admitted": victim.admitted(keys),
                "attacker_ucr": victim.balance_ucr(keys), "attacker_records": victim.records_by(keys)}


ATTACKS: list[Callable[[Victim, Path], Any]] = [fresh_keys_ask_to_verify, sybil_ring, self_admission, fee_flood]


def judged(result: Result) -> Result:
    """`succeeded` when the attacker got anything: credits, a record, or trust."""
    got = result["attacker_ucr"] > 0 or result["attacker_records"] > 0 or bool(result["admitted"])
    return {**result, "level": "node", "succeeded": got}


async def run_all(tmp: Path, names: list[str] | None = None, emit: Callable[[Result], None] = print) -> list[Result]:
    """Every attack (or those named) against one victim node; then the victim's file must audit clean."""
    results = []
    async with victim_node(tmp / "victim") as victim:
        for attack in ATTACKS:
            if names and attack.__name__ not in names:
                continue
            started = time.monotonic()
            result = judged(await attack(victim, tmp))
            result["seconds"] = round(time.monotonic() - started, 1)
            results.append(result)
            emit(result)
        peer_line = next((line for line in victim.lines if "peer " in line), "")
    audit = subprocess.run([sys.executable, "-m", "ledger", "audit", str(victim.ledger_path), "--quiet"],
                           capture_output=True, text=True, timeout=STOP_TIMEOUT_S)
    emit({"check": "victim_audit", "ok": audit.returncode == 0, "peer_line": peer_line[-80:],
          "output": (audit.stdout + audit.stderr)[-400:]})
    results.append({"check": "victim_audit", "ok": audit.returncode == 0})
    return results


def main(argv: list[str] | None = None) -> int:
    names = list(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="autoswarm-attacks-") as tmp:
        results = asyncio.run(run_all(Path(tmp), names, lambda r: print(json.dumps(r, sort_keys=True), flush=True)))
    failed = [r for r in results if r.get("succeeded") or r.get("ok") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
