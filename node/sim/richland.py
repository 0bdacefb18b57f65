"""A landscape worth beating (issue 16): train.py's constants with interactions, and code-level edits.

Pure: a program's constants in, its true val_bpb out (None: the run crashes). No randomness here:
the noise is the simulator's (node/sim/simwork.py's Tier: training-seed and evaluation noise).

Theory of operation. The separable bowl of node/sim/simwork.py (one quadratic per constant in log
space and a single interaction) is the easiest case for a proposer that moves one constant at a
time. This one is closer to the anchors' sweeps:
  - fourteen numeric constants, each a quadratic in the log of its distance from an optimum, with
    weights from 0.002 (barely matters) to 0.08 bpb per squared e-fold;
  - four interactions: the learning rate's optimum moves with the batch size and with Adam's
    beta2, depth and width trade against each other (a fixed time budget), and the warmdown's
    optimum moves with the final learning rate fraction;
  - three code-level edits, written as bools (a coding agent's change stands in as a switch):
    QK_NORM helps a little and lets the matrix learning rate go 1.6x higher (without it, a rate
    3x past its optimum diverges); SWIGLU helps, more for deep models; VALUE_EMBEDS helps only
    from DEPTH 8 up and hurts shallower models;
  - a run crashes when a constant is more than CRASH_RATIO off its optimum.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

CRASH_RATIO = 6.0
DIVERGE_RATIO = 3.0      # MATRIX_LR this far above its optimum diverges unless QK_NORM is on
RICH_TRAIN_PY = '''"""A stand-in train.py for the simulator's rich landscape: only its constants mean anything."""
DEPTH = 8
ASPECT_RATIO = 64
HEAD_DIM = 128
MATRIX_LR = 0.04
EMBEDDING_LR = 0.6
UNEMBEDDING_LR = 0.004
SCALAR_LR = 0.5
WEIGHT_DECAY = 0.2
ADAM_BETA1 = 0.8
ADAM_BETA2 = 0.95
WARMUP_RATIO = 0.02
WARMDOWN_RATIO = 0.5
FINAL_LR_FRAC = 0.1
TOTAL_BATCH_SIZE = 2**19
QK_NORM = False
SWIGLU = False
VALUE_EMBEDS = False
'''
# constant -> (genesis value, optimum / genesis value, weight in bpb per squared natural-log distance)
SHAPE: dict[str, tuple[float, float, float]] = {
    "DEPTH": (8, 1.5, 0.03), "ASPECT_RATIO": (64, 1.25, 0.02), "HEAD_DIM": (128, 1.0, 0.004),
    "MATRIX_LR": (0.04, 1.6, 0.05), "EMBEDDING_LR": (0.6, 0.7, 0.02), "UNEMBEDDING_LR": (0.004, 2.0, 0.01),
    "SCALAR_LR": (0.5, 0.8, 0.002), "WEIGHT_DECAY": (0.2, 0.5, 0.008), "ADAM_BETA1": (0.8, 1.1, 0.08),
    "ADAM_BETA2": (0.95, 1.03, 0.06), "WARMUP_RATIO": (0.02, 0.5, 0.002), "WARMDOWN_RATIO": (0.5, 1.4, 0.03),
    "FINAL_LR_FRAC": (0.1, 0.5, 0.006), "TOTAL_BATCH_SIZE": (2**19, 0.5, 0.02),
}
# (a, b, bpb): + bpb x ln(a/opt_a) x ln(b/opt_b); small enough that the Hessian stays positive definite
INTERACTIONS: tuple[tuple[str, str, float], ...] = (
    ("MATRIX_LR", "TOTAL_BATCH_SIZE", 0.03), ("MATRIX_LR", "ADAM_BETA2", -0.03),
    ("DEPTH", "ASPECT_RATIO", 0.035), ("WARMDOWN_RATIO", "FINAL_LR_FRAC", 0.008),
)
QK_NORM_GAIN_BPB, QK_NORM_LR_SHIFT = 0.004, 1.6
SWIGLU_GAIN_BPB = 0.005                  # at DEPTH 8; x depth / 8
VALUE_EMBEDS_GAIN_BPB = 0.003            # from DEPTH 8 up; shallower models lose as much
LR_NAMES = ("MATRIX_LR", "EMBEDDING_LR", "UNEMBEDDING_LR", "SCALAR_LR")


def optimum(name: str, values: Mapping[str, float], lr_shift: float) -> float:
    genesis, ratio, _ = SHAPE[name]
    opt = genesis * ratio * (lr_shift if name in LR_NAMES else 1.0)
    if name == "MATRIX_LR" and values.get("QK_NORM", 0.0) >= 0.5:
        opt *= QK_NORM_LR_SHIFT
    return opt


def rich_bpb(values: Mapping[str, float], *, floor_bpb: float, offset_bpb: float = 0.0,
             lr_shift: float = 1.0) -> float | None:
    """The true val_bpb of a program with these constants (missing ones at genesis); None: crash."""
    total = floor_bpb + offset_bpb
    logs: dict[str, float] = {}
    for name, (genesis, _, weight) in SHAPE.items():
        value = values.get(name, genesis)
        if value <= 0:
            return None
        logs[name] = math.log(value / optimum(name, values, lr_shift))
        if abs(logs[name]) > math.log(CRASH_RATIO):
            return None
        total += weight * logs[name] ** 2
    if logs["MATRIX_LR"] > math.log(DIVERGE_RATIO) and values.get("QK_NORM", 0.0) < 0.5:
        return None
    total += sum(w * logs[a] * logs[b] for a, b, w in INTERACTIONS)
    depth = values.get("DEPTH", SHAPE["DEPTH"][0])
    if values.get("QK_NORM", 0.0) >= 0.5:
        total -= QK_NORM_GAIN_BPB
    if values.get("SWIGLU", 0.0) >= 0.5:
        total -= SWIGLU_GAIN_BPB * depth / 8
    if values.get("VALUE_EMBEDS", 0.0) >= 0.5:
        total += -VALUE_EMBEDS_GAIN_BPB if depth >= 8 else VALUE_EMBEDS_GAIN_BPB
    return total
