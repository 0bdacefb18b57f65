"""Facts: who is trusted, which claims are verified or refuted, and the records — each a function
of the *set* of entries, never of the order they arrived in.

Theory of operation. Three layers, each computed from the one below and the verify entries:

1. Anchors: the spec's verifiers (every class) and the keys the creator admitted (their classes).
   A set union: an admit counts the same whether it arrived before or after the admitted key's
   verifies, so no verify needs to name the admit that trusts it.
2. Earned trust: a key that is no anchor of a class becomes trusted there once it has
   `spec.trust_replays` replays of the class's claims that agree, within the class's trust
   tolerance, with the value the anchors decided for those claims, and no replay that disagrees
   beyond it. It is judged against anchor decisions only (never against other earned keys), so
   a ring of Sybils cannot vouch for itself, and one disagreement takes the trust away again.
3. Decisions: a claim's assigned, successful replays (each verifier's first, by its own feed;
   the assignment is ledger/assign.py's: trusted keys drawn by the claim's seal, which an anchor
   signs after the claim, so an unsealed claim is never decided) in a canonical order —
   (max(verify time, claim time), verify id) — are read prefix by prefix until `quorum` of them
   agree within the noise; the agreed median verifies the claim, or refutes it when it is off
   the claimed value by more than the noise. The claimant controls none of it. A trust change
   or a seal moves assignments, and the decisions of the claims whose assignment moved are
   recomputed.
4. Records: a class's verified claims sorted by their decision key (the time the quorum's last
   replay says, then the deciding verify's id) are walked; a claim is a record when it beats the
   best before it by more than the noise. Its author's clock plays no part.

Each layer is recomputed locally when an entry touches it; `refresh` returns what changed so the
fold can tell whether a judged entry (a mint, a settle) already read a fact that has now moved
(then it rebuilds, see ledger/fold.py).
"""
from __future__ import annotations

import bisect
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ledger import assign, evidence
from ledger.state import Decision, RecordRow, State, Stream, VerifyInfo

TrustTest = Callable[[bytes, str], bool]


@dataclass(slots=True)
class Moved:
    """What one refresh changed: the fold compares it with what judged entries have read."""

    trust: set[bytes] = field(default_factory=set)      # keys whose trusted classes changed
    decisions: set[bytes] = field(default_factory=set)  # claims whose final decision changed
    records: set[bytes] = field(default_factory=set)    # claims whose record row appeared, moved or went
    rows_rewritten: bool = False                        # some class's records changed other than by appending
    # claim -> keys whose replays its decision read before or after the change: only their record
    # mints can have been judged on it (see credits.check_mint), so only they make a rebuild
    readers: dict[bytes, set[bytes]] = field(default_factory=dict)
    # claim -> keys that entered or left its assignment: only their fee mints read it (credits.check_mint)
    assigned: dict[bytes, set[bytes]] = field(default_factory=dict)


def anchored(state: State, key: bytes, platform_class: str) -> bool:
    classes = state.anchors.get(key)
    return classes is not None and platform_class in classes


def agreeing(values: list[float], noise: float) -> tuple[float, list[float]]:
    """The median of `values` and those within `noise` of it."""
    median = statistics.median(values)
    return median, [v for v in values if abs(v - median) <= noise]


def tolerance(state: State, platform_class: str) -> float:
    return state.spec.trust_tolerance_bpb.get(platform_class, state.spec.noise_bpb[platform_class])


def decide(state: State, claim_id: bytes, trusted: TrustTest) -> tuple[Decision | None, dict[bytes, float]]:
    """The claim's decision among the replays of keys `trusted` accepts, and the values it read."""
    claim = state.claims[claim_id]
    cls, noise = claim.platform_class, state.spec.noise_bpb[claim.platform_class]
    first: dict[bytes, tuple[int, bytes]] = {}  # verifier -> (seq, verify id) of its first ok replay
    for vid in state.verifies_of.get(claim_id, ()):
        v = state.verifies[vid]
        if (v.value is None or v.paired or v.commit != claim.commit or v.platform_class != cls
                or v.author == claim.author or not trusted(v.author, cls)):
            continue
        if v.author not in first or v.seq < first[v.author][0]:
            first[v.author] = (v.seq, vid)
    order = sorted((max(state.verifies[vid].time_ms, claim.time_ms), vid) for _, vid in first.values())
    measured: dict[bytes, float] = {}
    used: list[bytes] = []
    for key in order:
        v = state.verifies[key[1]]
        assert v.value is not None  # filtered above
        measured[v.author] = v.value
        used.append(key[1])
        if len(measured) < state.spec.quorum:
            continue
        median, agree = agreeing(list(measured.values()), noise)
        if len(agree) < state.spec.quorum:
            continue
        value = float(median if len(agree) == len(measured) else agreeing(agree, noise)[0])
        quorum = tuple(vid for vid in used if abs(_value(state, vid) - median) <= noise)
        refuted = claim.claimed is None or abs(value - claim.claimed) > noise
        return Decision("refuted" if refuted else "verified", value, quorum, key), measured
    return None, measured


def _value(state: State, verify_id: bytes) -> float:
    value = state.verifies[verify_id].value
    return float("nan") if value is None else value


def earns(state: State, key: bytes, platform_class: str) -> bool:
    """Whether a key that is no anchor of the class has earned trust there (see the module doc)."""
    need = state.spec.trust_replays
    agree, disagree = state.vote_counts.get((key, platform_class), (0, 0))
    return need > 0 and agree >= need and disagree == 0


def _recount(state: State, key: bytes, claim_id: bytes) -> None:
    """Keeps `key`'s vote on one claim (+1: its replay agrees with the anchors' decision, -1: it
    disagrees beyond the tolerance, none: no decision) and its per-class totals current, so that
    `earns` is O(1) however many replays a key publishes."""
    claim = state.claims[claim_id]
    anchor = state.anchor_decisions.get(claim_id)
    vote = 0
    mine = [v for vid in state.paired_of.get(claim_id, ()) if (v := state.verifies[vid]).author == key]
    if mine and claim.author != key:
        vote = _same_seed_vote(state, claim.platform_class, claim_id, mine)
    elif anchor is not None and claim.author != key:
        value = next((v.value for vid in state.verifies_of.get(claim_id, ())
                      if (v := state.verifies[vid]).author == key and v.value is not None), None)
        if value is not None:
            vote = 1 if abs(value - anchor.value) <= tolerance(state, claim.platform_class) else -1
    old = state.votes.get((key, claim_id), 0)
    if vote == old:
        return
    agree, disagree = state.vote_counts.get((key, claim.platform_class), (0, 0))
    agree += (vote == 1) - (old == 1)
    disagree += (vote == -1) - (old == -1)
    state.vote_counts[(key, claim.platform_class)] = (agree, disagree)
    if vote:
        state.votes[(key, claim_id)] = vote
    else:
        del state.votes[(key, claim_id)]


def _same_seed_vote(state: State, cls: str, claim_id: bytes, mine: list[VerifyInfo]) -> int:
    """A key's vote from its paired rounds: each is compared with the anchors' replays of the same
    round (one training seed: they must agree within the class's tolerance, both the candidate's
    and the parent's value). -1 if any disagrees, +1 if some agree, 0 if no anchor ran its rounds."""
    tol = tolerance(state, cls)
    vote = 0
    for v in mine:
        for vid in state.paired_of.get(claim_id, ()):
            a = state.verifies[vid]
            if a.round_index != v.round_index or a.author == v.author or not anchored(state, a.author, cls):
                continue
            assert a.value is not None and a.parent_value is not None and v.value is not None  # paired_of holds ok pairs
            assert v.parent_value is not None
            if abs(a.value - v.value) > tol or abs(a.parent_value - v.parent_value) > tol:
                return -1
            vote = 1
    return vote


def trusted(state: State, key: bytes, platform_class: str) -> bool:
    classes = state.verifiers.get(key)
    return classes is not None and platform_class in classes


def refresh(state: State, *, claims: Iterable[bytes] = (), replays: Iterable[tuple[bytes, bytes]] = (),
            anchors: Iterable[bytes] = (), sealed: Iterable[bytes] = (), paired: Iterable[bytes] = ()) -> Moved:
    """Recomputes the facts that depend on `claims` (a trusted key replayed them), `replays` (new
    (key, claim) replays, for the key's earned trust), `anchors` (keys that were admitted),
    `sealed` (claims whose seal moved) and `paired` (new ok paired verify ids, ledger/evidence.py)."""
    moved = Moved()
    anchor_dirty = set(claims)
    keys = set(anchors)
    for key, claim_id in replays:
        _recount(state, key, claim_id)
        keys.add(key)
    for key in anchors:
        anchor_dirty |= state.verified_by.get(key, set())
    # layer 2 inputs: anchor decisions of the touched claims
    candidates = set(keys)
    for claim_id in anchor_dirty:
        if claim_id not in state.claims:
            continue
        before = state.anchor_decisions.get(claim_id)
        now, _ = decide(state, claim_id, lambda k, c: anchored(state, k, c))
        if now != before:
            _put(state.anchor_decisions, claim_id, now)
            for vid in state.verifies_of.get(claim_id, ()):
                author = state.verifies[vid].author
                _recount(state, author, claim_id)
                candidates.add(author)
    final_dirty = set(anchor_dirty)
    for key in sorted(candidates):
        classes = frozenset(c for c in state.spec.platform_classes if anchored(state, key, c) or earns(state, key, c))
        had = state.verifiers.get(key, frozenset())
        if classes != had:
            if classes:
                state.verifiers[key] = classes
            else:
                state.verifiers.pop(key, None)
            moved.trust.add(key)
            final_dirty |= state.verified_by.get(key, set())
            final_dirty |= assign.retrust(state, key, had, classes, moved.assigned)
    for claim_id in sealed:
        if assign.reseal(state, claim_id, moved.assigned):
            final_dirty.add(claim_id)
    # class -> claims appended at the tail of its verified order, or -1 once any change was elsewhere
    touched: dict[str, int] = {}
    judged = _paired(state, final_dirty, paired)
    for claim_id in final_dirty | set(judged):
        if claim_id not in state.claims:
            continue
        if claim_id in judged:
            now, measured = judged[claim_id]
        elif evidence.is_paired_claim(state, claim_id):
            continue  # its paired test is the class stream's, and nothing moved it
        else:
            members = {key for _, key in state.assigned.get(claim_id, ())}
            now, measured = decide(state, claim_id, lambda k, c: k in members)
        read_before = set(state.measured.get(claim_id, ()))
        state.measured[claim_id] = measured
        before = state.decisions.get(claim_id)
        if now != before:
            _put(state.decisions, claim_id, now)
            moved.decisions.add(claim_id)
            moved.readers[claim_id] = read_before | set(measured)
            cls = state.claims[claim_id].platform_class
            at_tail = _reorder(state, cls, claim_id, before, now)
            appended = touched.get(cls, 0)
            touched[cls] = appended + 1 if at_tail and appended >= 0 else -1
            _index(state, claim_id, now)
        elif read_before != set(measured):
            # the same decision read other keys: a record mint by a key that entered or left the
            # read set was judged on the first rule of credits.check_mint, whose answer just moved
            moved.readers.setdefault(claim_id, set()).update(read_before ^ set(measured))
    for cls in sorted(touched):
        _records(state, cls, moved, appended=touched[cls])
    return moved


def _paired(state: State, dirty: set[bytes], paired: Iterable[bytes]) -> dict[bytes, tuple[Decision | None, dict[bytes, float]]]:
    """Walks the paired streams that new rounds or moved assignments touch; returns the paired
    claims whose decision may have changed with what each now reads."""
    again = sorted({state.claims[c].platform_class for c in dirty
                    if c in state.claims and evidence.is_paired_claim(state, c)})
    out: dict[bytes, tuple[Decision | None, dict[bytes, float]]] = {}
    for cls in again:
        stream = evidence.rewalk(state, cls)
        for claim_id in state.paired_in.get(cls, ()):
            out[claim_id] = stream.decisions.get(claim_id), _reads(state, stream, claim_id)
    for vid in paired:
        v = state.verifies[vid]
        if v.platform_class in again:
            continue
        stream = evidence.extend(state, v.platform_class, vid)
        for claim_id in stream.judged | {v.claim}:
            out[claim_id] = stream.decisions.get(claim_id), _reads(state, stream, claim_id)
        stream.judged.clear()
    for cls in again:
        state.streams[cls].judged.clear()
    return out


def _reads(state: State, stream: Stream, claim_id: bytes) -> dict[bytes, float]:
    """The keys whose rounds the claim's paired test read (each key's first round's value)."""
    rounds = stream.rounds.get(claim_id, {})
    out: dict[bytes, float] = {}
    for r in range(stream.consumed.get(claim_id, 0)):
        v = state.verifies[rounds[r][1]]
        if v.value is not None:
            out.setdefault(v.author, v.value)
    return out


def _reorder(state: State, cls: str, claim_id: bytes, before: Decision | None, now: Decision | None) -> bool:
    """Keeps the class's verified claims sorted by decision key; True when only appended at the end."""
    order = state.verified_order.setdefault(cls, [])
    at_tail = True
    if before is not None and before.status == "verified":
        order.remove((before.key, claim_id))
        at_tail = False
    if now is not None and now.status == "verified":
        at = bisect.bisect(order, (now.key, claim_id))
        order.insert(at, (now.key, claim_id))
        at_tail = at_tail and at == len(order) - 1
    return at_tail


def _put(table: dict[bytes, Decision], claim_id: bytes, decision: Decision | None) -> None:
    if decision is None:
        table.pop(claim_id, None)
    else:
        table[claim_id] = decision


def _index(state: State, claim_id: bytes, decision: Decision | None) -> None:
    state.verified.pop(claim_id, None)
    state.refuted.pop(claim_id, None)
    if decision is not None:
        (state.verified if decision.status == "verified" else state.refuted)[claim_id] = decision.value


def _records(state: State, cls: str, moved: Moved, *, appended: int) -> None:
    """Walks the class's verified claims in decision order into its path of records. When the only
    change was `appended` claims at the end, the rest was walked before: it walks just those."""
    noise = state.spec.noise_bpb[cls]
    order = state.verified_order.get(cls, [])
    old = [r for r in state.records if r.platform_class == cls]
    if appended >= 0 and old:
        rows, best, walk = list(old), old[-1].value, order[len(order) - appended:]
        tests, rejections = state.lord.get(cls, (0, ()))
    else:
        rows, best, walk = [], None, order
        tests, rejections = 0, ()
    stream = state.streams.get(cls)
    for _, cid in walk:
        value = state.decisions[cid].value
        claim = state.claims[cid]
        if stream is not None and cid in stream.tests:
            # a paired test: LORD++ against the best (ledger/evidence.py); its parent must be a record
            parent = next((r for r in reversed(rows) if r.commit == claim.parent), None)
            if parent is None or best is None:
                continue
            tests += 1
            hit, gain, low, high, seeds = evidence.record_test(state, cid, parent.value, best, tests, rejections)
            if hit:
                rejections = (*rejections, tests)
                value = best - gain
                rows.append(RecordRow(cls, len(rows) + 1, cid, claim.commit, claim.author, value, best,
                                      gain=gain, low=low, high=high, seeds=seeds))
                best = value
            continue
        if best is None or value < best - noise:
            rows.append(RecordRow(cls, len(rows) + 1, cid, claim.commit, claim.author, value, best))
            best = value
    state.lord[cls] = (tests, rejections)
    if rows == old:
        if any(_stats(a) != _stats(b) for a, b in zip(rows, old)):
            # the same path, but a test re-decided with another noise estimate: new intervals only
            fresh = {r.claim: r for r in rows}
            state.records = [fresh.get(r.claim, r) if r.platform_class == cls else r for r in state.records]
            state.record_of.update(fresh)
        return
    if rows[:len(old)] != old:
        moved.rows_rewritten = True
    for row in old:
        state.record_of.pop(row.claim, None)
    for row in rows:
        state.record_of[row.claim] = row
    changed = set(old) ^ set(rows)
    moved.records |= {r.claim for r in changed}
    for row in changed:
        moved.readers.setdefault(row.claim, set()).update(state.measured.get(row.claim, ()))
    state.changes.records.extend(r for r in rows if r in changed)
    others = [r for r in state.records if r.platform_class != cls]
    if moved.rows_rewritten or len(others) + len(old) != len(state.records):
        state.records = sorted(others + rows, key=lambda r: (state.decisions[r.claim].key, r.claim))
    else:
        for row in rows[len(old):]:
            bisect.insort(state.records, row, key=lambda r: (state.decisions[r.claim].key, r.claim))
    if best is None:
        state.best.pop(cls, None)
    else:
        state.best[cls] = best


def _stats(row: RecordRow) -> tuple[float | None, float | None, float | None, int]:
    return row.gain, row.low, row.high, row.seeds
