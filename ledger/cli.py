"""`python -m ledger`: audit, inspect and create ledger files from the command line.

    audit FILE [--strict] [--workers N] [--quiet]   check everything; exit 0 ok, 1 a problem, 2 bad input
          [--checkpoint CP ...] [--proof P ...]     ... and signed checkpoints against the file, proofs against them
    checkpoint FILE --key PATH [--count N] [--out CP]   a signed checkpoint (Merkle root) of the first N rows
    prove FILE (--entry ID | --since CP) [--checkpoint CP] [--out P]   an inclusion or consistency proof
    verify --checkpoint CP [...] --proof P [...]    proofs against checkpoints, without the ledger file
    show FILE [--author NODEID] [--kind KIND] [--limit N]   entries as JSON lines
    stats FILE                                      rows, authors, kinds, size, credits, records
    spec FILE                                       the swarm spec as JSON
    keygen PATH                                     a new identity file (mode 0600); prints its node id
    new-swarm --key PATH --out LEDGER [...]         signs a swarm spec and creates its ledger file

Every bad input ends in one line on stderr and exit status 2, never a traceback: errors of the
ledger package, OS errors and bad arguments are translated here, at the outermost boundary.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TextIO

from ledger import audit, checkpoint, jsonview
from ledger.bodies import KINDS, UCR_PER_CREDIT
from ledger.entry import decode_entry
from ledger.errors import InvalidEntry, LedgerError, StoreError
from ledger.keys import Identity, node_id_text, parse_node_id
from ledger.merkle import InvalidProof
from ledger.spec import SwarmSpec, sign_spec
from ledger.store import Ledger

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2
_LISTED_PROBLEMS = 20  # in the readable report; the AuditReport holds more


class UsageError(Exception):
    """An argument that parses but makes no sense: bad hex, unknown kind, an existing output."""


class _Parser(argparse.ArgumentParser):
    # argparse's own error prints the whole usage block; one line is easier to read and to grep
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


@dataclass(frozen=True, slots=True)
class NewSwarm:
    """Everything `new-swarm` needs, validated from the arguments."""

    key_path: Path
    out: Path
    name: str
    platform_classes: list[str]
    verifiers: list[bytes] | None  # None: the key's owner alone
    quorum: int
    noise_bpb: float
    time_budget_s: int
    harness_hash: bytes | None     # None: not given, zeros with a note
    dataset_hash: bytes | None
    tokenizer_hash: bytes | None
    baseline_commit: bytes | None
    allowed_files: list[str]
    record_credits_per_bpb: int
    verify_credits: float


def _hex(text: str, size: int, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"{what}: not hex: {text!r}") from None
    if len(raw) != size:
        raise UsageError(f"{what}: expected {size} bytes ({2 * size} hex digits), got {len(raw)}")
    return raw


def _node_id(text: str, what: str) -> bytes:
    try:
        return parse_node_id(text)
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}") from None


def _parser() -> _Parser:
    parser = _Parser(prog="python -m ledger", description="Audit, inspect and create autoswarm ledger files.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "audit", help="check a ledger file: chain, signatures, feeds, credit rules, derived tables",
        epilog="exit status: 0 every check holds; 1 a problem, the first bad row named; 2 bad input or unreadable file",
    )
    p.add_argument("file", type=Path)
    p.add_argument("--strict", action="store_true", help="entries refused by the credit rules are failures too")
    p.add_argument("--workers", type=int, default=None, help="signature-checking processes (default: every core)")
    p.add_argument("--quiet", action="store_true", help="print only the verdict line")
    p.add_argument("--checkpoint", action="append", type=Path, default=[], metavar="CP",
                   help="a signed checkpoint to check against the file's first rows (repeat)")
    p.add_argument("--proof", action="append", type=Path, default=[], metavar="P",
                   help="an inclusion or consistency proof to check against the checkpoints (repeat)")

    p = sub.add_parser("checkpoint", help="sign a checkpoint (entry count and Merkle root) of a ledger file")
    p.add_argument("file", type=Path)
    p.add_argument("--key", type=Path, required=True, help="identity file of the signing node")
    p.add_argument("--count", type=int, default=None, help="entries: the first N rows (default: all)")
    p.add_argument("--out", type=Path, default=None, help="write it here (never overwritten) instead of stdout")

    p = sub.add_parser("prove", help="an inclusion proof of an entry, or a consistency proof between checkpoints")
    p.add_argument("file", type=Path)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--entry", metavar="ID", help="entry id (64 hex digits): prove it is in the rows")
    what.add_argument("--since", type=Path, metavar="CP", help="older checkpoint: prove the rows extend it")
    p.add_argument("--checkpoint", type=Path, default=None, metavar="CP",
                   help="prove against this checkpoint's rows (default: all rows of the file)")
    p.add_argument("--out", type=Path, default=None, help="write it here (never overwritten) instead of stdout")

    p = sub.add_parser("verify", help="check proofs against signed checkpoints, without the ledger file",
                       epilog="exit status: 0 every proof holds; 1 one does not; 2 bad input")
    p.add_argument("--checkpoint", action="append", type=Path, required=True, metavar="CP")
    p.add_argument("--proof", action="append", type=Path, default=[], metavar="P")

    p = sub.add_parser("show", help="print entries as JSON lines")
    p.add_argument("file", type=Path)
    p.add_argument("--author", help="node id (as...)")
    p.add_argument("--kind", help=f"one of: {', '.join(sorted(KINDS))}")
    p.add_argument("--limit", type=int, default=None)

    p = sub.add_parser("stats", help="rows, authors, kinds, size, credits and records of a ledger file")
    p.add_argument("file", type=Path)

    p = sub.add_parser("spec", help="print the swarm spec of a ledger file as JSON")
    p.add_argument("file", type=Path)

    p = sub.add_parser("keygen", help="create an identity file (mode 0600) and print its node id")
    p.add_argument("path", type=Path)

    p = sub.add_parser("new-swarm", help="sign a swarm spec and create its ledger file; prints the swarm id")
    p.add_argument("--key", type=Path, required=True, help="identity file of the creator")
    p.add_argument("--out", type=Path, required=True, help="ledger file to create")
    p.add_argument("--name", default="autoswarm")
    p.add_argument("--platform-class", action="append", dest="platform_classes", metavar="CLASS")
    p.add_argument("--verifier", action="append", dest="verifiers", metavar="NODEID",
                   help="trusted verifier (repeat); default: the key's owner alone")
    p.add_argument("--quorum", type=int, default=1)
    p.add_argument("--noise-bpb", type=float, default=0.01, help="noise threshold of every platform class")
    p.add_argument("--time-budget-s", type=int, default=300)
    p.add_argument("--harness-hash", metavar="HEX")
    p.add_argument("--dataset-hash", metavar="HEX")
    p.add_argument("--tokenizer-hash", metavar="HEX")
    p.add_argument("--baseline-commit", metavar="HEX")
    p.add_argument("--allowed-file", action="append", dest="allowed_files", metavar="PATH")
    p.add_argument("--record-credits-per-bpb", type=int, default=1000)
    p.add_argument("--verify-credits", type=float, default=1.0)
    return parser


def _new_swarm_config(args: argparse.Namespace) -> NewSwarm:
    def opt_hex(text: str | None, size: int, what: str) -> bytes | None:
        return None if text is None else _hex(text, size, what)

    if args.quorum < 1:
        raise UsageError("--quorum must be at least 1")
    return NewSwarm(
        key_path=args.key, out=args.out, name=args.name,
        platform_classes=args.platform_classes or ["cpu-tiny"],
        verifiers=None if not args.verifiers else [_node_id(v, "--verifier") for v in args.verifiers],
        quorum=args.quorum, noise_bpb=args.noise_bpb, time_budget_s=args.time_budget_s,
        harness_hash=opt_hex(args.harness_hash, 32, "--harness-hash"),
        dataset_hash=opt_hex(args.dataset_hash, 32, "--dataset-hash"),
        tokenizer_hash=opt_hex(args.tokenizer_hash, 32, "--tokenizer-hash"),
        baseline_commit=opt_hex(args.baseline_commit, 20, "--baseline-commit"),
        allowed_files=args.allowed_files or ["train.py"],
        record_credits_per_bpb=args.record_credits_per_bpb, verify_credits=args.verify_credits,
    )


def _new_swarm(config: NewSwarm, out: TextIO, err: TextIO) -> int:
    identity = Identity.load(config.key_path)
    if config.out.exists():
        raise UsageError(f"{config.out}: already exists; a swarm's ledger is created once")
    spec = SwarmSpec(
        name=config.name, creator=identity.public_key, created_ms=int(time.time() * 1000),
        harness_hash=config.harness_hash or bytes(32), dataset_hash=config.dataset_hash or bytes(32),
        tokenizer_hash=config.tokenizer_hash or bytes(32), time_budget_s=config.time_budget_s,
        metric="val_bpb", direction="min", baseline_commit=config.baseline_commit or bytes(20),
        allowed_files=config.allowed_files, platform_classes=config.platform_classes,
        verifiers=config.verifiers if config.verifiers is not None else [identity.public_key],
        quorum=config.quorum, noise_bpb={c: config.noise_bpb for c in config.platform_classes},
        record_ucr_per_bpb=config.record_credits_per_bpb * UCR_PER_CREDIT,
        verify_ucr=round(config.verify_credits * UCR_PER_CREDIT),
    )
    signed = sign_spec(identity, spec)

    async def create() -> None:
        async with Ledger.open(config.out, signed):
            pass

    asyncio.run(create())
    missing = [name for name in ("harness_hash", "dataset_hash", "tokenizer_hash", "baseline_commit")
               if getattr(config, name) is None]
    if missing:
        print(f"note: {', '.join(missing)} not given; using zeros (fine for tests, not for a real swarm)", file=err)
    print(signed.swarm_id.hex(), file=out)
    return EXIT_OK


def _audit(args: argparse.Namespace, out: TextIO) -> int:
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.proof and not args.checkpoint:
        raise UsageError("--proof needs the --checkpoint it is checked against")
    try:
        loaded = _load_proof_files(args.checkpoint, args.proof)
    except (checkpoint.InvalidCheckpoint, InvalidProof) as exc:
        print(f"FAILED: {exc}", file=out)
        return EXIT_PROBLEM
    # a bar only where someone watches: in a log file it is one long line of carriage returns
    progress = not args.quiet and sys.stderr.isatty()
    report = audit.audit_file(args.file, workers=args.workers, progress=progress, strict=args.strict)
    if not args.quiet:
        _print_report(report, out)
    if not report.ok:
        print(f"FAILED: {report.first_problem}", file=out)
        return EXIT_PROBLEM
    proven = ""
    if args.checkpoint:
        try:
            lines = _check_against_file(args.file, args.checkpoint, loaded)
        except (checkpoint.InvalidCheckpoint, InvalidProof) as exc:
            print(f"FAILED: {exc}", file=out)
            return EXIT_PROBLEM
        if not args.quiet:
            print("\n".join(lines), file=out)
        proven = f"; {_counted(loaded)} verified"
    extra = f"; {report.invalid_count} entries refused by the credit rules" if report.invalid_count else ""
    print(f"OK: {report.rows} rows, every check holds{extra}{proven}", file=out)
    return EXIT_OK


_Loaded = tuple[list[checkpoint.SignedCheckpoint], list[checkpoint.Proof]]


def _load_proof_files(checkpoints: list[Path], proofs: list[Path]) -> _Loaded:
    """Reads and verifies the signature of every checkpoint, and decodes every proof; errors name the file."""
    cps, prs = [], []
    for path in checkpoints:
        try:
            cps.append(checkpoint.load_checkpoint(path))
        except (checkpoint.InvalidCheckpoint, InvalidProof) as exc:
            raise type(exc)(f"checkpoint {path}: {exc}") from None
    for path in proofs:
        try:
            prs.append(checkpoint.load_proof(path))
        except InvalidProof as exc:
            raise InvalidProof(f"proof {path}: {exc}") from None
    return cps, prs


def _check_against_file(file: Path, paths: list[Path], loaded: _Loaded) -> list[str]:
    cps, proofs = loaded
    lines = []
    for path, signed in zip(paths, cps):
        try:
            checkpoint.check_file(file, signed)
        except checkpoint.InvalidCheckpoint as exc:
            raise checkpoint.InvalidCheckpoint(f"checkpoint {path}: {exc}") from None
        lines.append(f"checkpoint {path}: {signed.describe()}: matches the file's first {signed.checkpoint.count} rows")
    return lines + _check_proofs(cps, proofs)


def _check_proofs(cps: list[checkpoint.SignedCheckpoint], proofs: list[checkpoint.Proof]) -> list[str]:
    swarms = {cp.checkpoint.swarm for cp in cps}
    if len(swarms) > 1:
        raise checkpoint.InvalidCheckpoint("the checkpoints are of different swarms")
    return [f"proof: {line}" for line in checkpoint.check_proofs(cps, proofs)]


def _counted(loaded: _Loaded) -> str:
    cps, proofs = loaded
    inclusion = sum(isinstance(p, checkpoint.InclusionProof) for p in proofs)
    parts = [f"{len(cps)} checkpoint{'s' if len(cps) != 1 else ''}"]
    if inclusion:
        parts.append(f"{inclusion} inclusion proof{'s' if inclusion != 1 else ''}")
    if len(proofs) - inclusion:
        parts.append(f"{len(proofs) - inclusion} consistency proof{'s' if len(proofs) - inclusion != 1 else ''}")
    return ", ".join(parts)


def _verify(args: argparse.Namespace, out: TextIO) -> int:
    try:
        loaded = _load_proof_files(args.checkpoint, args.proof)
        for path, signed in zip(args.checkpoint, loaded[0]):
            print(f"checkpoint {path}: {signed.describe()}: signature verifies", file=out)
        lines = _check_proofs(*loaded)
    except (checkpoint.InvalidCheckpoint, InvalidProof) as exc:
        print(f"FAILED: {exc}", file=out)
        return EXIT_PROBLEM
    if lines:
        print("\n".join(lines), file=out)
    print(f"OK: {_counted(loaded)} verified", file=out)
    return EXIT_OK


def _write_new(path: Path | None, text: str, out: TextIO) -> None:
    if path is None:
        out.write(text)
        return
    try:
        with open(path, "x") as f:  # a checkpoint is evidence: never overwrite one
            f.write(text)
    except FileExistsError:
        raise UsageError(f"{path}: already exists") from None


def _checkpoint(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.count is not None and args.count < 0:
        raise UsageError("--count must not be negative")
    identity = Identity.load(args.key)
    signed = checkpoint.make_checkpoint(args.file, identity, time_ms=int(time.time() * 1000), count=args.count)
    _write_new(args.out, checkpoint.to_text(checkpoint.CHECKPOINT_LABEL, signed.wire), out)
    print(f"checkpoint: {signed.describe()}" + (f", written to {args.out}" if args.out else ""),
          file=out if args.out else err)
    return EXIT_OK


def _prove(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    size = None
    try:
        if args.checkpoint is not None:
            signed = checkpoint.load_checkpoint(args.checkpoint)
            checkpoint.check_file(args.file, signed)  # the proof must lead to this checkpoint's root
            size = signed.checkpoint.count
        proof: checkpoint.Proof
        if args.entry is not None:
            proof = checkpoint.prove_entry(args.file, _hex(args.entry, 32, "--entry"), size)
            what = f"inclusion of row {proof.index + 1} among {proof.size} entries"
        else:
            old = checkpoint.load_checkpoint(args.since)
            checkpoint.check_file(args.file, old)
            proof = checkpoint.prove_consistency(args.file, old.checkpoint.count, size)
            what = f"consistency from {proof.old_size} to {proof.new_size} entries"
    except (checkpoint.InvalidCheckpoint, InvalidProof) as exc:
        print(f"FAILED: {exc}", file=err)
        return EXIT_PROBLEM
    _write_new(args.out, checkpoint.to_text(checkpoint.PROOF_LABEL, proof.encode()), out)
    print(f"proof: {what}, {len(proof.path)} hashes" + (f", written to {args.out}" if args.out else ""),
          file=out if args.out else err)
    return EXIT_OK


def _print_report(report: audit.AuditReport, out: TextIO) -> None:
    lines = [f"ledger   {report.path}"]
    if report.swarm_id is not None:
        lines.append(f"swarm    {report.swarm_id.hex()}")
    lines.append(f"rows     {report.rows} from {report.authors} authors")
    if report.counts:
        lines.append("kinds    " + ", ".join(f"{k} {n}" for k, n in report.counts.items()))
    lines.append(f"time     {report.elapsed_s:.2f} s ({report.entries_per_s:,.0f} entries/s)")
    if not report.triggers_present:
        lines.append("note     the append-only triggers are missing: the file was edited outside the store")
    if report.invalid_count:
        lines.append(f"invalid  {report.invalid_count} signed entries refused by the credit rules"
                     + (" (failures: --strict)" if report.strict else " (kept, ignored by the fold)"))
        lines += [f"  {item}" for item in report.invalid[:_LISTED_PROBLEMS]]
    if report.problem_count:
        lines.append(f"problems {report.problem_count}")
        lines += [f"  {p}" for p in report.problems[:_LISTED_PROBLEMS]]
        if report.problem_count > _LISTED_PROBLEMS:
            lines.append(f"  ... and {report.problem_count - _LISTED_PROBLEMS} more")
    print("\n".join(lines), file=out)


def _show(args: argparse.Namespace, out: TextIO) -> int:
    where, params = [], []
    if args.author is not None:
        where.append("author = ?")
        params.append(_node_id(args.author, "--author"))
    if args.kind is not None:
        if args.kind not in KINDS:
            raise UsageError(f"--kind: unknown kind {args.kind!r} (one of {', '.join(sorted(KINDS))})")
        where.append("kind = ?")
        params.append(args.kind)
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must not be negative")
    sql = "SELECT row, wire FROM entries" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY row"
    if args.limit is not None:
        sql += f" LIMIT {int(args.limit)}"
    conn = audit.open_readonly(args.file)
    try:
        swarm_id = audit.read_spec(conn, args.file).swarm_id
        for row, wire in conn.execute(sql, params):
            try:
                # a viewer: signatures are the audit's business, decoding still validates every field
                view = jsonview.entry_view(decode_entry(wire, swarm=swarm_id, signature_checked=True), row)
            except InvalidEntry as exc:
                view = {"row": row, "error": str(exc)}
            print(json.dumps(view), file=out)
    except sqlite3.Error as exc:
        raise StoreError(f"{args.file}: cannot be read: {exc}") from None
    finally:
        conn.close()
    return EXIT_OK


def _stats(args: argparse.Namespace, out: TextIO) -> int:
    conn = audit.open_readonly(args.file)
    try:
        signed = audit.read_spec(conn, args.file)
        rows, authors = conn.execute("SELECT count(*), count(DISTINCT author) FROM entries").fetchone()
        kinds = conn.execute("SELECT kind, count(*) FROM entries GROUP BY kind ORDER BY kind").fetchall()
        total_ucr, holders = conn.execute("SELECT IFNULL(SUM(ucr), 0), count(*) FROM balances WHERE ucr != 0").fetchone()
        records = conn.execute(
            "SELECT platform_class, count(*), MIN(value) FROM records GROUP BY platform_class ORDER BY platform_class"
        ).fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"{args.file}: cannot be read: {exc}") from None
    finally:
        conn.close()
    size = sum(p.stat().st_size for p in (args.file, Path(f"{args.file}-wal")) if p.exists())
    lines = [
        f"swarm    {signed.swarm_id.hex()} ({signed.spec.name})",
        f"size     {size:,} bytes",
        f"rows     {rows}",
        f"authors  {authors}",
        "kinds    " + (", ".join(f"{k} {n}" for k, n in kinds) or "none"),
        f"credits  {total_ucr / UCR_PER_CREDIT:,.6f} held by {holders} authors ({total_ucr} ucr)",
        "records  " + (", ".join(f"{c} {n} (best {best:.4f})" for c, n, best in records) or "none"),
    ]
    print("\n".join(lines), file=out)
    return EXIT_OK


def _spec(args: argparse.Namespace, out: TextIO) -> int:
    conn = audit.open_readonly(args.file)
    try:
        signed = audit.read_spec(conn, args.file)
    finally:
        conn.close()
    print(json.dumps(jsonview.spec_view(signed), indent=2), file=out)
    return EXIT_OK


def _keygen(args: argparse.Namespace, out: TextIO) -> int:
    identity = Identity.generate()
    identity.save(args.path)
    print(node_id_text(identity.public_key), file=out)
    return EXIT_OK


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = _parser().parse_args(argv)
    try:
        if args.command == "audit":
            return _audit(args, out)
        if args.command == "show":
            return _show(args, out)
        if args.command == "stats":
            return _stats(args, out)
        if args.command == "spec":
            return _spec(args, out)
        if args.command == "keygen":
            return _keygen(args, out)
        if args.command == "checkpoint":
            return _checkpoint(args, out, err)
        if args.command == "prove":
            return _prove(args, out, err)
        if args.command == "verify":
            return _verify(args, out)
        return _new_swarm(_new_swarm_config(args), out, err)
    except BrokenPipeError:
        return EXIT_OK  # `show ... | head`: the reader has all it wanted
    except (LedgerError, UsageError, OSError) as exc:
        print(f"python -m ledger {args.command}: error: {exc}", file=err)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"python -m ledger {args.command}: interrupted", file=err)
        return 130
