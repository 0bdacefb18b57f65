"""The text contract parser: strict, bounded, typed; property tests for round trips and garbage."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.contract import (MAX_CONTRACT_LINES, MAX_EXTRA_KEYS, Contract, ContractError, format_contract,
                              parse_contract)

GOOD = """step 00010 | loss 4.2
some: progress line before the contract
---
val_bpb: 0.997900
training_seconds: 300.1
total_seconds: 325.9
peak_vram_mb: 45060.2
mfu_percent: 39.80
total_tokens_M: 499.6
num_steps: 953
num_params_M: 50.3
depth: 8
seed: 7
device: cuda
loss_curve: 0:9.01,100:4.5,200:nan
flash: fa3
"""


def test_parses_the_last_block_with_types() -> None:
    c = parse_contract(GOOD)
    assert c.val_bpb == 0.9979 and c.num_steps == 953 and c.seed == 7 and c.device == "cuda"
    assert c.peak_vram_mb == 45060.2 and c.depth == 8
    assert c.loss_curve[:2] == ((0, 9.01), (100, 4.5)) and math.isnan(c.loss_curve[2][1])
    assert c.extra == (("flash", "fa3"),)


def test_only_the_last_separator_counts() -> None:
    c = parse_contract("---\nnum_steps: 1\n---\nnum_steps: 2\ndevice: cpu\n")
    assert c.num_steps == 2


@pytest.mark.parametrize("text, message", [
    ("no separator here\nnum_steps: 3\n", "no '---' line"),
    ("---\nnum_steps: 3\nnum_steps: 4\n", "duplicate key 'num_steps'"),
    ("---\nnum_steps: three\n", "num_steps: not an integer"),
    ("---\nnum_steps: 1.5\n", "num_steps: not an integer"),
    ("---\ntraining_seconds: inf\n", "must be finite"),
    ("---\npeak_vram_mb: nan\n", "must be finite"),
    ("---\nthis is not a pair\n", "not a 'key: value' line"),
    ("---\ndevice: cuda; rm -rf /\n", "device: not a short name"),
    ("---\nloss_curve: 1-2\n", "not step:loss"),
    ("---\nnum_steps: -1\n", "num_steps must not be negative"),
    ("---\n" + "x: " + "a" * 5000 + "\n", "longer than 4096"),
    ("---\n" + "".join(f"k{i}: v\n" for i in range(MAX_EXTRA_KEYS + 1)), "unknown keys"),
    ("---\n" + "\n" * (MAX_CONTRACT_LINES + 1), "more than"),
])
def test_rejects_malformed_contracts(text: str, message: str) -> None:
    with pytest.raises(ContractError, match=message.replace("(", r"\(")):
        parse_contract(text)


def test_require_names_missing_keys() -> None:
    with pytest.raises(ContractError, match="lacks num_steps, device"):
        parse_contract("---\nseed: 1\n").require("num_steps", "device")


def test_val_bpb_may_be_nan_but_is_only_a_claim() -> None:
    assert math.isnan(parse_contract("---\nval_bpb: nan\n").val_bpb or 0.0)


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
names = st.from_regex(r"[a-z][a-z0-9_.:+-]{0,20}", fullmatch=True)
extra_keys = st.from_regex(r"x_[a-z0-9_]{1,10}", fullmatch=True)
extra_values = st.from_regex(r"[!-~]([ -~]{0,30}[!-~])?", fullmatch=True)
contracts = st.builds(
    Contract,
    val_bpb=st.none() | st.floats(width=64),
    training_seconds=st.none() | finite, total_seconds=st.none() | finite, peak_vram_mb=st.none() | finite,
    mfu_percent=st.none() | finite, total_tokens_M=st.none() | finite, num_params_M=st.none() | finite,
    num_steps=st.none() | st.integers(0, 10**12), planned_steps=st.none() | st.integers(0, 10**12),
    depth=st.none() | st.integers(-100, 100), seed=st.none() | st.integers(0, 2**59),
    device=st.none() | names, profile=st.none() | names,
    loss_curve=st.lists(st.tuples(st.integers(0, 10**9), finite), max_size=20).map(tuple),
    extra=st.dictionaries(extra_keys, extra_values, max_size=5).map(lambda d: tuple(d.items())),
)


def _same(a: Contract, b: Contract) -> bool:
    # nan != nan, so compare the printed forms
    return format_contract(a) == format_contract(b)


@settings(max_examples=200, deadline=None)
@given(contracts, st.text(max_size=200))
@pytest.mark.slow
def test_round_trip_after_any_log(contract: Contract, log: str) -> None:
    parsed = parse_contract(log + "\n" + format_contract(contract))
    assert _same(parsed, contract)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=2000))
def test_garbage_raises_only_contract_error(text: str) -> None:
    try:
        parse_contract(text)
    except ContractError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["num_steps", "seed", "device", "val_bpb", "depth", "x"]),
                          st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)), max_size=12))
def test_key_value_soup_parses_or_raises_contract_error(pairs: list[tuple[str, str]]) -> None:
    text = "---\n" + "\n".join(f"{k}: {v}" for k, v in pairs)
    try:
        c = parse_contract(text)
    except ContractError:
        return
    assert len({k for k, _ in pairs}) == len(pairs) or not pairs  # duplicates never parse
    assert isinstance(c, Contract)
