"""The node's names for the ledger's size limits (node/research/limits.py) are the ledger's: text
cut to one is accepted, one character more is refused."""
from __future__ import annotations

from collections.abc import Callable

import pytest

from ledger.bodies import Body, Claim, Receipt, Settle
from ledger.errors import LedgerError
from node.research.limits import MAX_CLAIM_MESSAGE, MAX_LOG_TAIL, MAX_SETTLE_REASON

H = b"h" * 32


def _claim(text: str) -> Body:
    return Claim(commit=b"c" * 20, parent=None, platform_class="cpu", status="crash", val_bpb=None, num_steps=0,
                 planned_steps=0, seed=0, training_s=0.0, wall_s=0.0, peak_vram_mb=0.0, loss_curve=[],
                 diff_summary="", message=text, bundle=None)


def _receipt(text: str) -> Body:
    return Receipt(job=H, offer=H, payment=H, status="ok", gpu_s=1.0, metrics={}, artifacts=[], log_tail=text)


def _settle(text: str) -> Body:
    return Settle(job=H, payment=H, receipt=H, outcome="paid", amount=1, reason=text)


@pytest.mark.parametrize(("make", "limit"), [(_claim, MAX_CLAIM_MESSAGE), (_receipt, MAX_LOG_TAIL),
                                             (_settle, MAX_SETTLE_REASON)])
def test_the_node_cuts_text_exactly_where_the_ledger_refuses(make: Callable[[str], Body], limit: int) -> None:
    make("x" * limit)
    with pytest.raises(LedgerError):
        make("x" * (limit + 1))
