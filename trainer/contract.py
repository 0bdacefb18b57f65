"""The text contract: the last lines train.py prints, `---` then `key: value` lines.

The parser is strict because its input is written by untrusted code: the text is bounded, every
known key has a type, a duplicate key is an error, and unknown keys are kept (bounded) as strings.
Nothing here is trusted for the metric: the runner measures val_bpb itself; these figures are
reported beside it (steps, seconds, memory) and checked where they can be (device, steps, seed).

Knows nothing of processes or sandboxes: text in, a frozen Contract out.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields

from trainer.errors import TrainerError

MAX_CONTRACT_BYTES = 16 << 10  # everything after the `---` line
MAX_CONTRACT_LINES = 128
MAX_VALUE_CHARS = 4096
MAX_EXTRA_KEYS = 32
MAX_CURVE_POINTS = 512
SEPARATOR = "---"

_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]{0,63}):[ \t]*(.*)")
_TOKEN = re.compile(r"[A-Za-z0-9_.:+-]{1,64}")  # a device or profile name


class ContractError(TrainerError, ValueError):
    """The candidate's output does not hold a well-formed contract."""


def _parse_float(key: str, text: str, *, finite: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ContractError(f"{key}: not a number: {text[:40]!r}") from None
    if finite and not math.isfinite(value):
        raise ContractError(f"{key}: must be finite, got {text[:40]!r}")
    return value


def _parse_int(key: str, text: str) -> int:
    if not re.fullmatch(r"-?[0-9]{1,18}", text):
        raise ContractError(f"{key}: not an integer: {text[:40]!r}")
    return int(text)


def _parse_token(key: str, text: str) -> str:
    if not _TOKEN.fullmatch(text):
        raise ContractError(f"{key}: not a short name: {text[:40]!r}")
    return text


def _parse_curve(key: str, text: str) -> tuple[tuple[int, float], ...]:
    if not text:
        return ()
    points = text.split(",")
    if len(points) > MAX_CURVE_POINTS:
        raise ContractError(f"{key}: more than {MAX_CURVE_POINTS} points")
    curve = []
    for point in points:
        step, sep, loss = point.partition(":")
        if not sep:
            raise ContractError(f"{key}: point {point[:40]!r} is not step:loss")
        curve.append((_parse_int(key, step.strip()), _parse_float(key, loss.strip(), finite=False)))
    return tuple(curve)


# float key -> must it be finite? (a diverged run's losses are legitimately nan or inf)
_FLOAT_KEYS = {
    "val_bpb": False, "final_train_loss": False,
    "training_seconds": True, "warmup_seconds": True, "total_seconds": True, "peak_vram_mb": True,
    "mfu_percent": True, "total_tokens_M": True, "num_params_M": True, "tokens_per_second": True,
}
_INT_KEYS = ("num_steps", "planned_steps", "depth", "seed")
_TOKEN_KEYS = ("device", "profile")
_CURVE_KEYS = ("loss_curve",)


@dataclass(frozen=True, slots=True)
class Contract:
    val_bpb: float | None = None  # what the candidate says; never used as the metric
    final_train_loss: float | None = None
    training_seconds: float | None = None
    warmup_seconds: float | None = None  # the untimed first steps (torch.compile lives here)
    total_seconds: float | None = None
    peak_vram_mb: float | None = None
    mfu_percent: float | None = None
    total_tokens_M: float | None = None
    num_params_M: float | None = None
    tokens_per_second: float | None = None
    num_steps: int | None = None
    planned_steps: int | None = None
    depth: int | None = None
    seed: int | None = None
    device: str | None = None
    profile: str | None = None
    loss_curve: tuple[tuple[int, float], ...] = ()
    extra: tuple[tuple[str, str], ...] = field(default=())  # unknown keys, in order, as text

    def __post_init__(self) -> None:
        if len(self.extra) > MAX_EXTRA_KEYS:
            raise ContractError(f"more than {MAX_EXTRA_KEYS} unknown keys")
        if self.num_steps is not None and self.num_steps < 0:
            raise ContractError("num_steps must not be negative")
        if len(self.loss_curve) > MAX_CURVE_POINTS:
            raise ContractError(f"loss_curve: more than {MAX_CURVE_POINTS} points")

    def require(self, *keys: str) -> None:
        missing = [k for k in keys if getattr(self, k) is None]
        if missing:
            raise ContractError(f"contract lacks {', '.join(missing)}")


def parse_contract(text: str) -> Contract:
    """Parses the contract that ends `text` (a process's stdout)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.rstrip() == SEPARATOR]
    if not starts:
        raise ContractError("no contract: the output has no '---' line")
    body = lines[starts[-1] + 1:]
    if sum(len(line) + 1 for line in body) > MAX_CONTRACT_BYTES:
        raise ContractError(f"contract longer than {MAX_CONTRACT_BYTES} bytes")
    if len(body) > MAX_CONTRACT_LINES:
        raise ContractError(f"contract has more than {MAX_CONTRACT_LINES} lines")
    values: dict[str, object] = {}
    extra: list[tuple[str, str]] = []
    seen: set[str] = set()
    for line in body:
        if not line.strip():
            continue
        match = _LINE.fullmatch(line.rstrip())
        if match is None:
            raise ContractError(f"not a 'key: value' line: {line[:60]!r}")
        key, raw = match.group(1), match.group(2).strip()
        if key in seen:
            raise ContractError(f"duplicate key {key!r}")
        seen.add(key)
        if len(raw) > MAX_VALUE_CHARS:
            raise ContractError(f"{key}: value longer than {MAX_VALUE_CHARS} characters")
        if key in _FLOAT_KEYS:
            values[key] = _parse_float(key, raw, finite=_FLOAT_KEYS[key])
        elif key in _INT_KEYS:
            values[key] = _parse_int(key, raw)
        elif key in _TOKEN_KEYS:
            values[key] = _parse_token(key, raw)
        elif key in _CURVE_KEYS:
            values[key] = _parse_curve(key, raw)
        else:
            extra.append((key, raw))
    return Contract(**values, extra=tuple(extra))  # type: ignore[arg-type]


def format_contract(contract: Contract) -> str:
    """The text train.py would print for `contract`; parse_contract(format_contract(c)) == c."""
    out = [SEPARATOR]
    for f in fields(contract):
        value = getattr(contract, f.name)
        if f.name == "extra":
            out.extend(f"{k}: {v}" for k, v in value)
        elif f.name in _CURVE_KEYS:
            if value:
                out.append(f"{f.name}: " + ",".join(f"{s}:{loss!r}" for s, loss in value))
        elif value is not None:
            out.append(f"{f.name}: {value!r}" if isinstance(value, float) else f"{f.name}: {value}")
    return "\n".join(out) + "\n"
