"""The trainer: fixed harness (data, tokenizer, evaluation), the mutable train.py, and the runner.

Imports nothing from the rest of autoswarm; the node runs it as a subprocess and reads its text
contract (`---`, then `key: value` lines, then one JSON result line).
"""
