"""Builds signed entries for tests: a swarm spec, identities and per-author feeds."""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from ledger import credits, fold

from ledger.bodies import Body, Claim, Mint, Post, Seal, Transfer, Verify
from ledger.entry import Entry, sign_entry
from ledger.keys import Identity
from ledger.spec import SignedSpec, SwarmSpec, sign_spec

CLASS = "cpu-tiny"
NOISE = 0.01
RATE = 10**9  # ucr per 1.0 bpb


def identity(n: int) -> Identity:
    return Identity.from_seed(hashlib.sha256(b"test-identity-%d" % n).digest())


def make_spec(creator: Identity, verifiers: list[Identity], quorum: int = 1, verify_ucr: int = 1000,
              trust_replays: int = 5, assigned: int = 3) -> SignedSpec:
    spec = SwarmSpec(
        name="test", creator=creator.public_key, created_ms=0,
        harness_hash=b"h" * 32, dataset_hash=b"d" * 32, tokenizer_hash=b"t" * 32,
        time_budget_s=300, metric="val_bpb", direction="min", baseline_commit=b"\x00" * 20,
        allowed_files=["train.py"], platform_classes=[CLASS, "h100"],
        verifiers=[v.public_key for v in verifiers], quorum=quorum,
        noise_bpb={CLASS: NOISE, "h100": 0.002}, record_ucr_per_bpb=RATE, verify_ucr=verify_ucr,
        trust_replays=trust_replays, assigned=assigned,
    )
    return sign_spec(creator, spec)


@dataclass
class Feeds:
    """Signs entries for many authors, keeping each author's seq and prev."""

    swarm: bytes
    heads: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)
    clock_ms: int = 1_000

    def sign(self, who: Identity, body: Body) -> Entry:
        seq, prev = self.heads.get(who.public_key, (0, None))
        self.clock_ms += 1
        entry = sign_entry(who, swarm=self.swarm, seq=seq + 1, prev=prev, body=body, time_ms=self.clock_ms)
        self.heads[who.public_key] = (entry.seq, entry.id)
        return entry

    def sign_at(self, who: Identity, seq: int, prev: bytes | None, body: Body) -> Entry:
        """An entry at a chosen seq, e.g. the second branch of a fork."""
        return sign_entry(who, swarm=self.swarm, seq=seq, prev=prev, body=body, time_ms=self.clock_ms)


def commit(n: int) -> bytes:
    return hashlib.sha1(b"commit-%d" % n).digest()


def claim(n: int, val_bpb: float | None, cls: str = CLASS) -> Claim:
    return Claim(
        commit=commit(n), parent=commit(0), platform_class=cls, status="ok" if val_bpb is not None else "crash",
        val_bpb=val_bpb, num_steps=100, planned_steps=100, seed=1, training_s=3.0, wall_s=5.0, peak_vram_mb=0.0,
        loss_curve=[3.0, 2.0], diff_summary="LR 0.04 -> 0.05", message="", bundle=None,
    )


def verify(claim_entry: Entry, val_bpb: float | None) -> Verify:
    body = claim_entry.body
    assert isinstance(body, Claim)
    return Verify(
        claim=claim_entry.id, commit=body.commit, platform_class=body.platform_class,
        status="ok" if val_bpb is not None else "crash", val_bpb=val_bpb, num_steps=100, seed=1, training_s=3.0,
    )


def seal(*claims: Entry) -> Seal:
    """An anchor's seal of these claims: without one, no replay of a claim counts (ledger/assign.py)."""
    return Seal(claims=[c.id for c in claims])


def record_mint(claim_entry: Entry, quorum: list[Entry], value: float, prev_best: float | None, amount: int) -> Mint:
    return Mint(reason="record", subject=claim_entry.id, quorum=[q.id for q in quorum], to=claim_entry.author,
                amount=amount, value=value, prev_best=prev_best)


def transfer(to: Identity, amount: int, spends: list[bytes]) -> Transfer:
    return Transfer(to=to.public_key, amount=amount, spends=spends, memo="", job=None, offer=None)


def post(text: str = "hello") -> Post:
    return Post(channel="general", text=text, reply_to=None)


class Appender:
    """Signs bodies into a growing history, folding each as it goes; a verdict fails the test."""

    def __init__(self, feeds: Feeds, state: fold.State) -> None:
        self.feeds, self.state = feeds, state
        self.rows: list[Entry] = []

    def __call__(self, who: Identity, body: Body) -> Entry:
        entry = self.feeds.sign(who, body)
        fold.apply(self.state, entry)
        assert not self.state.verdicts.get(entry.id), self.state.verdicts[entry.id]
        self.rows.append(entry)
        return entry


def mint_owed_records(add: Appender, state: fold.State, verifiers: list[Identity]) -> None:
    """Every quorum member of every record mints its share, as honest nodes do."""
    for row in list(state.records):
        for who in verifiers:
            mint, _ = credits.record_mint(state, who.public_key, row.claim)
            if mint is not None:
                add(who, mint)


def valid_history(spec: SignedSpec, verifiers: list[Identity], users: list[Identity], *, steps: int,
                  seed: int) -> list[Entry]:
    """A random valid history (claims, verifications, mints, transfers, posts) in row order.

    Built as an honest node would, by consulting the fold; every judged entry is valid.
    """
    rng = random.Random(seed)
    feeds = Feeds(spec.swarm_id)
    state = fold.initial(spec.spec)
    add = Appender(feeds, state)
    rows = add.rows
    claims: list[Entry] = []
    unminted: list[Entry] = []
    by_key = {i.public_key: i for i in [*verifiers, *users]}

    for n in range(steps):
        action = rng.choice(["claim", "verify", "vmint", "pay", "post"])
        if action == "claim" or not claims:
            claims.append(add(rng.choice(users), claim(n, round(rng.uniform(1.0, 2.0), 3))))
            add(verifiers[0], seal(claims[-1]))
        elif action == "verify":
            c, v = rng.choice(claims), rng.choice(verifiers)
            value = c.body.val_bpb  # type: ignore[attr-defined]
            unminted.append(add(v, verify(c, value)))
            mint_owed_records(add, state, verifiers)
        elif action == "vmint" and unminted:
            ver = unminted.pop(rng.randrange(len(unminted)))
            fee = Mint(reason="verification", subject=ver.id, quorum=[], to=ver.author, amount=1000, value=None,
                       prev_best=None)
            if not credits.check_mint(state, ver.author, fee):
                add(by_key[ver.author], fee)
        elif action == "pay" and state.outputs:
            owner = rng.choice(sorted({o for (_, o) in state.outputs}))
            mine = sorted((e, a) for (e, o), a in state.outputs.items() if o == owner)
            picked = rng.sample(mine, k=rng.randint(1, min(len(mine), 4)))
            to = rng.choice([u for u in users if u.public_key != owner])
            add(by_key[owner], transfer(to, rng.randint(1, sum(a for _, a in picked)), [e for e, _ in picked]))
        else:
            add(rng.choice(users), post(f"post {n}"))
    return rows
