"""swarm/quota.py and swarm/stamp.py: pure rules, with property tests over random admission streams."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.quota import ADDR_REFILL_S, BLAMED, KiB, QuotaLimits, Quotas
from swarm.stamp import BadStamp, load_or_mint, load_stamps, mint_stamp, save_stamps, stamp_ok

SWARM = b"s" * 32
OWN = b"o" * 32
BITS = 8


def key(n: int) -> bytes:
    return hashlib.sha256(b"key-%d" % n).digest()


def eid(n: int) -> bytes:
    return hashlib.sha256(b"entry-%d" % n).digest()


def quotas(**limits: float) -> Quotas:
    return Quotas(QuotaLimits(**limits), swarm=SWARM, stamp_bits=BITS, own=OWN)  # type: ignore[arg-type]


def test_a_minted_stamp_checks_and_others_do_not() -> None:
    nonce = mint_stamp(SWARM, key(1), BITS)
    assert nonce is not None and stamp_ok(SWARM, key(1), nonce, BITS)
    assert not stamp_ok(SWARM, key(2), nonce, 30)          # another key at a real difficulty
    assert not stamp_ok(b"x" * 32, key(1), nonce, 30)      # another swarm
    assert not stamp_ok(SWARM, key(1), nonce[:4], BITS)    # wrong length
    assert stamp_ok(SWARM, key(1), b"\0" * 8, 0)           # difficulty 0: anything goes
    with pytest.raises(BadStamp):
        mint_stamp(SWARM, key(1), 99)


def test_difficulty_is_exact_at_known_vector() -> None:
    # the digest is sha256(DOMAIN || swarm || key || nonce): check the leading-zero rule by hand
    nonce = mint_stamp(SWARM, key(3), 12)
    assert nonce is not None
    digest = hashlib.sha256(b"autoswarm/stamp/v1\x00" + SWARM + key(3) + nonce).digest()
    assert digest[0] == 0 and digest[1] >> 4 == 0


def test_stamp_file_is_kept_and_reminted_when_stale(tmp_path: Path) -> None:
    path = tmp_path / "stamp.json"
    first = load_or_mint(path, SWARM, key(1), BITS)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_mint(path, SWARM, key(1), BITS) == first
    path.write_text("{not json")
    assert stamp_ok(SWARM, key(1), load_or_mint(path, SWARM, key(1), BITS), BITS)
    other = load_or_mint(path, SWARM, key(2), BITS)   # another key: the old stamp does not serve
    assert stamp_ok(SWARM, key(2), other, BITS)


def test_fresh_identity_is_held_to_its_small_quota_and_a_stamp_lifts_it() -> None:
    q = quotas(fresh_author_bytes=10 * KiB, stamped_author_bytes=100 * KiB, strangers_bytes=1 << 30)
    sent = [q.admit(eid(i), key(1), KiB, "net", float(i)) for i in range(12)]
    assert sent[:10] == [None] * 10 and sent[10:] == ["quota_author"] * 2
    nonce = mint_stamp(SWARM, key(1), BITS)
    assert nonce is not None and q.learn_stamp(key(1), nonce)
    assert q.fresh_total == 0 and q.strangers_total == 10 * KiB
    assert q.admit(eid(99), key(1), KiB, "net", 100.0) is None


def test_forged_stamp_is_refused() -> None:
    q = quotas()
    assert not q.learn_stamp(key(1), b"\0" * 8) or stamp_ok(SWARM, key(1), b"\0" * 8, BITS)


def test_own_and_valued_authors_are_never_limited() -> None:
    valued = key(7)
    q = Quotas(QuotaLimits(strangers_bytes=0), swarm=SWARM, stamp_bits=BITS, own=OWN, valued=lambda a: a == valued)
    assert q.admit(eid(1), OWN, 8 * KiB, "net", 0.0) is None
    assert q.admit(eid(2), valued, 8 * KiB, "net", 0.0) is None
    assert q.admit(eid(3), key(1), 1, "net", 0.0) in ("quota_addr", "quota_strangers")
    assert q.strangers_total == 0


def test_refund_and_keep() -> None:
    q = quotas()
    assert q.admit(eid(1), key(1), 500, "net", 0.0) is None
    assert q.admit(eid(2), key(1), 700, "net", 0.0) is None
    q.settle(eid(1), kept=True)
    q.settle(eid(2), kept=False)
    q.settle(eid(2), kept=False)   # settled once: the second call changes nothing
    assert q.stored == {key(1): 500} and q.strangers_total == 500


def test_one_subnet_gets_its_share_only() -> None:
    q = quotas(strangers_bytes=100 * KiB, addr_share=0.25, fresh_share=1.0)
    n = 0
    while q.admit(eid(n), key(n), KiB, "attacker", 0.0) is None:
        n += 1
    assert n == 25 and q.refused == {"quota_addr": 1}
    assert q.admit(eid(1000), key(1000), KiB, "honest", 0.0) is None
    # the share comes back over ADDR_REFILL_S: a relay that carries traffic for days is not cut off
    assert q.admit(eid(n), key(n), KiB, "attacker", ADDR_REFILL_S / 25 + 1) is None


def test_rate_refuses_a_burst_then_recovers() -> None:
    q = quotas(fresh_author_bytes=8 * KiB, fresh_bytes_per_s=KiB, strangers_bytes=1 << 30)
    # the burst is the whole quota: the rate only bites after refunds (entries the ledger refused)
    for i in range(8):
        assert q.admit(eid(i), key(1), KiB, "net", 0.0) is None
        q.settle(eid(i), kept=False)
    assert q.admit(eid(9), key(1), KiB, "net", 0.0) == "quota_rate"
    assert q.admit(eid(9), key(1), KiB, "net", 1.01) is None
    assert "quota_rate" in BLAMED and "quota_strangers" not in BLAMED


def test_refusals_that_were_not_asked_for_drain_the_senders_share() -> None:
    q = quotas(strangers_bytes=64 * KiB, fresh_share=1 / 16, addr_share=0.5)   # 4 KiB for unstamped keys
    assert q.admit(eid(0), key(0), 4 * KiB, "flood", 0.0) is None
    reasons = [q.admit(eid(i), key(i), KiB, "flood", 0.0) for i in range(1, 40)]
    assert reasons[0] == "quota_fresh" and reasons[-1] == "quota_addr"   # blamed from then on
    # the same refusals, asked for, leave the share alone
    for i in range(40, 80):
        assert q.admit(eid(i), key(i), KiB, "sync", 0.0, asked=True) == "quota_fresh"
    assert q.admit(eid(99), key(99), KiB, "sync", 0.0) == "quota_fresh"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(1, 9000), st.integers(0, 3), st.booleans(),
                          st.booleans()), max_size=300),
       st.integers(0, 300_000))
def test_strangers_never_hold_more_than_the_quota(stream: list[tuple[int, int, int, bool, bool]], quota: int) -> None:
    """Whatever arrives, in whatever order, with stamps learned midway and refunds: the bytes kept
    stay within every bound, and the counters equal the sum of what was kept."""
    limits = QuotaLimits(strangers_bytes=quota, fresh_author_bytes=20_000, stamped_author_bytes=60_000,
                         fresh_share=0.5, addr_share=0.5)
    q = Quotas(limits, swarm=SWARM, stamp_bits=0, own=OWN)
    kept: dict[int, tuple[bytes, int]] = {}
    for i, (author_n, size, subnet, keep, stamp) in enumerate(stream):
        if stamp:
            q.learn_stamp(key(author_n), b"\0" * 8)   # difficulty 0: every nonce is a stamp
        if q.admit(eid(i), key(author_n), size, f"net{subnet}", float(i)) is None:
            q.settle(eid(i), kept=keep)
            if keep:
                kept[i] = (key(author_n), size)
        assert q.strangers_total <= quota
        assert q.fresh_total <= 0.5 * quota
    assert q.strangers_total == sum(size for _, size in kept.values())
    by_author: dict[bytes, int] = {}
    for author, size in kept.values():
        by_author[author] = by_author.get(author, 0) + size
    assert q.stored == by_author
    assert all(v <= 60_000 for v in by_author.values())
    assert q.fresh_total == sum(v for a, v in by_author.items() if a not in q.stamps)


def test_saved_stamps_round_trip_and_garbage_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "stamps.json"
    saved = {key(1): b"\1" * 8, key(2): b"\2" * 8}
    save_stamps(path, saved)
    assert load_stamps(path) == saved
    for text in ("not json", '{"stamps": 3}', '{"stamps": {"zz": "00"}}', '{"other": {}}'):
        path.write_text(text)
        assert load_stamps(path) == {}
    path.write_text('{"stamps": {"%s": "0011"}}' % key(1).hex())   # a short nonce is dropped
    assert load_stamps(path) == {}
    assert load_stamps(tmp_path / "absent.json") == {}
