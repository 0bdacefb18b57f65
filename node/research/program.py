"""train.py as data: its top-level constants, edits of them, and the normalized key of a program.

Theory of operation. train.py is parsed with `ast`, never executed. A *constant* is a top-level
`NAME = <numeric or bool literal>` with an UPPER_CASE name; `2**19` and `-0.5` count (a tiny
evaluator folds + - * / // ** over numbers, with bounds). An edit replaces the text of a value
expression in place, so comments and formatting survive and the diff stays one line per change.

The *normalized key* names what a program computes, not how it is spelled: sha256 over the
module's AST with every constant's value masked, plus the sorted `NAME=value` list. Comments,
blank lines and `2**19` vs `524288` do not change it; a different value or any code change does.
It does not depend on the parent, so one configuration reached along two paths is one key.
Claims carry it in their diff summary (`key: k1-...`), which is how the whole swarm's history
says what was already tried.

Knows nothing of the ledger, git or the trainer.
"""
from __future__ import annotations

import ast
import hashlib
import math
import re
import threading
import typing
from collections.abc import Sequence
from dataclasses import dataclass

from node.errors import NodeError

Value = int | float | bool
KEY_PREFIX = "k1-"
MAX_SUMMARY_CHARS = 2000     # a claim body is 16 KiB in all; the loss curve needs room too
_UPPER = re.compile(r"[A-Z][A-Z0-9_]*")
_KEY_LINE = re.compile(r"^key: (k1-[0-9a-f]{32})$", re.MULTILINE)
_CHANGE_LINE = re.compile(r"^([A-Z][A-Z0-9_]*): (\S+) -> (\S+)$", re.MULTILINE)
_MAX_POW_EXPONENT = 64
_MAX_MAGNITUDE = 1e18
# CPython 3.11 keeps the AST constructor's recursion depth per interpreter, not per thread: two
# threads parsing at once (the node parses in worker threads too) can fail with "SystemError: AST
# constructor recursion depth mismatch" (CPython issue gh-106905). Every parse of ours takes turns.
_PARSE_LOCK = threading.Lock()


def parse_module(source: str, filename: str = "<unknown>") -> ast.Module:
    """`ast.parse`, one thread at a time (see _PARSE_LOCK); raises what ast.parse raises."""
    with _PARSE_LOCK:
        return ast.parse(source, filename=filename)


def parse_expression(text: str) -> ast.Expression:
    """`ast.parse(text, mode="eval")`, one thread at a time."""
    with _PARSE_LOCK:
        return ast.parse(text, mode="eval")


class BadProgram(NodeError):
    """Source that is not a Python module the proposer can read."""


@dataclass(frozen=True, slots=True)
class Constant:
    name: str
    value: Value
    start: int   # byte offsets of the value expression in the UTF-8 source
    end: int


@dataclass(frozen=True, slots=True)
class Program:
    source: str
    constants: tuple[Constant, ...]   # every top-level simple constant, in source order
    reassigned: frozenset[str]        # constant names assigned again elsewhere at module level
    profile_blocks: tuple[tuple[str | None, frozenset[str]], ...]  # (profile name or None, names set)
    skeleton: str                     # sha256 of the AST with constant values masked: the code itself
    key: str


def evaluate(node: ast.expr) -> Value | None:
    """The value of a numeric or bool literal expression, or None if it is not one."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
        value = typing.cast(Value, node.value)  # its type was just checked
        return value if not isinstance(value, float) or math.isfinite(value) else None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = evaluate(node.operand)
        if inner is None or isinstance(inner, bool):
            return None
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp):
        a, b = evaluate(node.left), evaluate(node.right)
        if a is None or b is None or isinstance(a, bool) or isinstance(b, bool):
            return None
        try:
            result: Value
            if isinstance(node.op, ast.Add):
                result = a + b
            elif isinstance(node.op, ast.Sub):
                result = a - b
            elif isinstance(node.op, ast.Mult):
                result = a * b
            elif isinstance(node.op, ast.Div):
                result = a / b
            elif isinstance(node.op, ast.FloorDiv):
                result = a // b
            elif isinstance(node.op, ast.Pow) and abs(b) <= _MAX_POW_EXPONENT and abs(a) <= 1 << 20:
                result = a**b
            else:
                return None
        except (ZeroDivisionError, OverflowError):
            return None
        if isinstance(result, complex) or abs(result) > _MAX_MAGNITUDE:
            return None
        return result if not isinstance(result, float) or math.isfinite(result) else None
    return None


def _offsets(source: str) -> list[int]:
    starts, total = [0], 0
    for line in source.encode().splitlines(keepends=True):
        total += len(line)
        starts.append(total)
    return starts


def _assigned_names(stmt: ast.stmt) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def _profile_of(test: ast.expr) -> str | None:
    """"cpu" for `if PROFILE.name == "cpu":`; None for any other condition."""
    if (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)
            and isinstance(test.left, ast.Attribute) and test.left.attr == "name"
            and isinstance(test.left.value, ast.Name) and test.left.value.id == "PROFILE"
            and isinstance(test.comparators[0], ast.Constant) and isinstance(test.comparators[0].value, str)):
        return test.comparators[0].value
    return None


def parse_program(source: str) -> Program:
    try:
        tree = parse_module(source)
    except (SyntaxError, ValueError) as exc:
        raise BadProgram(f"train.py does not parse: {exc}") from None
    offsets = _offsets(source)
    constants: list[Constant] = []
    simple: set[int] = set()
    for stmt in tree.body:
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                and _UPPER.fullmatch(stmt.targets[0].id)):
            value = evaluate(stmt.value)
            v = stmt.value
            if value is not None and v.end_lineno is not None and v.end_col_offset is not None:
                constants.append(Constant(stmt.targets[0].id, value, offsets[v.lineno - 1] + v.col_offset,
                                          offsets[v.end_lineno - 1] + v.end_col_offset))
                simple.add(id(stmt))
    names = {c.name for c in constants}
    counts: dict[str, int] = {}
    blocks: list[tuple[str | None, frozenset[str]]] = []
    for stmt in tree.body:
        assigned = _assigned_names(stmt) & names
        if id(stmt) in simple:
            counts[stmt.targets[0].id] = counts.get(stmt.targets[0].id, 0) + 1  # type: ignore[attr-defined]
            continue
        if isinstance(stmt, ast.If) and assigned:
            blocks.append((_profile_of(stmt.test), frozenset(assigned)))
        elif assigned:
            counts.update({n: counts.get(n, 0) + 2 for n in assigned})
    reassigned = frozenset(n for n, k in counts.items() if k > 1)
    skeleton = _skeleton(tree)
    return Program(source, tuple(constants), reassigned, tuple(blocks), skeleton,
                   _key(skeleton, {c.name: c.value for c in constants}, constants))


def _skeleton(tree: ast.Module) -> str:
    # Mask the values in place, dump, and put them back: copying the tree costs more than the dump.
    saved: list[tuple[ast.Assign, ast.expr]] = []
    for stmt in tree.body:
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                and _UPPER.fullmatch(stmt.targets[0].id) and evaluate(stmt.value) is not None):
            saved.append((stmt, stmt.value))
            stmt.value = ast.Name("_CONSTANT_", ast.Load())
    try:
        return hashlib.sha256(ast.dump(tree, annotate_fields=False, include_attributes=False).encode()).hexdigest()
    finally:
        for stmt, value in saved:
            stmt.value = value


def _key(skeleton: str, values: dict[str, Value], constants: Sequence[Constant]) -> str:
    # every occurrence counts: a name assigned twice at top level contributes both values
    items = sorted(f"{c.name}={format_value(values.get(c.name, c.value) if i == _last(constants, c.name) else c.value)}"
                   for i, c in enumerate(constants))
    return KEY_PREFIX + hashlib.sha256("\n".join([skeleton, *items]).encode()).hexdigest()[:32]


def _last(constants: Sequence[Constant], name: str) -> int:
    return max(i for i, c in enumerate(constants) if c.name == name)


def key_with(program: Program, changes: dict[str, Value]) -> str:
    """The key of `apply_changes(program, changes)`, without parsing it again."""
    return _key(program.skeleton, changes, program.constants)


def normalized_key(source: str) -> str:
    """The program's key; source that does not parse gets a key of its bytes."""
    try:
        return parse_program(source).key
    except BadProgram:
        return KEY_PREFIX + hashlib.sha256(b"raw\0" + source.encode()).hexdigest()[:32]


def editable(program: Program, profile: str, frozen: frozenset[str]) -> dict[str, Value]:
    """Constants an edit can change and still matter under `profile`.

    A name assigned again inside `if PROFILE.name == <this profile>:` (or under any condition we
    cannot read) is overridden at run time: editing its top-level value would change nothing.
    """
    shadowed = set(program.reassigned) | set(frozen)
    for block_profile, names in program.profile_blocks:
        if block_profile is None or block_profile == profile:
            shadowed |= names
    return {c.name: c.value for c in program.constants if c.name not in shadowed}


def format_value(value: Value) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def apply_changes(program: Program, changes: dict[str, Value]) -> str:
    """The source with each named constant's value expression replaced; everything else kept."""
    data = program.source.encode()
    by_name = {c.name: c for c in program.constants}
    for name in changes:
        if name not in by_name:
            raise BadProgram(f"{name} is not a top-level constant of train.py")
    for const in sorted((by_name[n] for n in changes), key=lambda c: c.start, reverse=True):
        data = data[:const.start] + format_value(changes[const.name]).encode() + data[const.end:]
    return data.decode()


def summarize(parent: str | None, child: str) -> str:
    """The claim's diff summary: one `NAME: old -> new` line per changed constant, then the key."""
    key = normalized_key(child)
    if parent is None:
        return f"baseline\nkey: {key}"
    try:
        before, after = parse_program(parent), parse_program(child)
    except BadProgram:
        return f"code: does not parse\nkey: {key}"
    old = {c.name: c.value for c in before.constants}
    new = {c.name: c.value for c in after.constants}
    lines = [f"{n}: {format_value(old[n]) if n in old else '-'} -> {format_value(new[n]) if n in new else '-'}"
             for n in sorted(old.keys() | new.keys()) if old.get(n) != new.get(n) or type(old.get(n)) is not type(new.get(n))]
    if before.skeleton != after.skeleton:
        lines.append("code: changed beyond constants")
    text = "\n".join(lines)
    if len(text) > MAX_SUMMARY_CHARS - 64:
        text = text[:MAX_SUMMARY_CHARS - 80] + "\n..."
    return f"{text}\nkey: {key}" if text else f"no change\nkey: {key}"


def parse_summary(text: str) -> tuple[dict[str, tuple[Value, Value]], str | None]:
    """The constant changes and the key a diff summary states; lines it cannot read are skipped."""
    changes: dict[str, tuple[Value, Value]] = {}
    for name, old, new in _CHANGE_LINE.findall(text):
        a, b = _literal(old), _literal(new)
        if a is not None and b is not None:
            changes[name] = (a, b)
    found = _KEY_LINE.search(text)
    return changes, found.group(1) if found else None


def _literal(text: str) -> Value | None:
    try:
        return evaluate(parse_expression(text).body)
    except (SyntaxError, ValueError):
        return None
