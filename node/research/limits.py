"""The ledger's entry size limits, as the node truncates its own text to them: one place.

ledger/bodies.py names some (imported here); others it checks against literals, so they are
named here once, with where the ledger checks them, until it names them itself. A node that cut
its text to a longer length would sign entries the ledger refuses.
"""
from __future__ import annotations

from ledger.bodies import MAX_SHORT_TEXT, MAX_TEXT, UCR_PER_CREDIT

MAX_CLAIM_MESSAGE = 1024    # Claim.message: ledger/bodies.py Claim.__post_init__
MAX_LOG_TAIL = 4096         # Receipt.log_tail: ledger/bodies.py Receipt.__post_init__
MAX_SETTLE_REASON = 1024    # Settle.reason: ledger/bodies.py Settle.__post_init__

__all__ = ["MAX_CLAIM_MESSAGE", "MAX_LOG_TAIL", "MAX_SETTLE_REASON", "MAX_SHORT_TEXT", "MAX_TEXT", "UCR_PER_CREDIT"]
