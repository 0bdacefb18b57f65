"""Append-only, hash-chained ledger of signed entries.

Knows nothing about networking or peers: entries arrive as bytes and leave as bytes.
"""
