"""Noise of val_bpb on one platform class, and the tolerance it calls for.

Pure: numbers in, an estimate out. Knows nothing of the ledger, the trainer or the clock; the
caller gathers the numbers (its own repeated baselines, the verify entries it folded) and decides
what to do with the tolerance (a spec's noise_bpb is fixed when the swarm is created).

Theory of operation. Every measurement of a program's val_bpb on a class is modelled as
x = mu + e with e ~ N(0, sigma^2), independent between measurements; mu belongs to the program,
sigma to the class (its evaluation size, its machines' arithmetic). Two kinds of input:

  repeats      groups of measurements of one program: the baseline run again, or the values the
               verifiers of one claim found. The group's mean is unknown, so a group of n values
               gives n - 1 degrees of freedom: SS_g = sum_i (x_i - mean_g)^2, E[SS_g] = (n-1) sigma^2.
  differences  a - b for two measurements of one program: verified minus claimed, or one
               verifier's value minus another's. Var(a - b) = 2 sigma^2, so d^2 / 2 estimates
               sigma^2 with one degree of freedom (exactly what a group {a, b} gives: SS = d^2/2).

The pooled estimate is s^2 = (sum_g SS_g + sum_j d_j^2 / 2) / nu, nu = sum_g (n_g - 1) + m.
Since nu s^2 / sigma^2 ~ chi^2(nu), an upper confidence bound is
sigma_up = s * sqrt(nu / chi2_q(nu)) with q = 1 - confidence (the small-sample correction: with
nu = 4 and confidence 0.9, sigma_up = 1.94 s; with nu = 100, 1.10 s). chi2_q is exact for
nu <= 2 and the Wilson-Hilferty approximation beyond, within 3 % of the tables there.
The tolerance is k * sigma_up, clamped to [floor_bpb, ceiling_bpb].

What k buys (sigma known): verifiers agree when each is within the tolerance of their median; for
two verifiers that is |a - b| <= 2 k sigma, and a - b has sd sqrt(2) sigma, so k = 3 fails honest
pairs with probability P(|Z| > 4.24) ~ 2e-5. A record must beat the best by more than the
tolerance; two equal programs differ by sd sqrt(2) sigma, so k = 3 makes a record of pure noise
P(Z > 2.12) ~ 1.7 % of such coin flips. For that use, sigma must include training noise (repeats
trained with different data seeds), not only evaluation noise (replays with another eval seed).

Input from peers is not trusted. Values that cannot be measurements are dropped and counted:
non-finite numbers, val_bpb outside [0, max_bpb], |d| > max_difference_bpb. Then, with at least
MIN_SCREEN_UNITS values, a robust screen drops values whose standardized deviation exceeds
outlier_z times a robust sigma, median(deviations) / 0.6745 (a fraudulent claim's residual is not
noise). A residual is standardized as |d| / sqrt(2), a repeat as |x - mean_g| * sqrt(n/(n-1)): each
is then |N(0, sigma^2)|, whose median is 0.6745 sigma. Dropped repeats shrink their
group (a group left with one value gives nothing). The screen is skipped when the median is 0
(bit-identical replays of one eval seed), so such input says nothing about eval noise: pass
values measured with independent eval seeds. Whatever comes in, the tolerance stays in
[floor_bpb, ceiling_bpb].
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist, median

from ledger.fold import State

from node.errors import NodeError

MIN_DOF = 2  # degrees of freedom below which there is no estimate
MIN_SCREEN_UNITS = 8  # fewer values give too rough a robust scale to drop anything on it
HALF_NORMAL_MEDIAN = NormalDist().inv_cdf(0.75)  # median of |Z|: 0.6745


class NoiseError(NodeError):
    """A noise policy that makes no sense (the caller's mistake)."""


class TooFewSamples(NoiseError):
    """Too few usable measurements for an estimate; `dof` says how many degrees of freedom were left."""

    def __init__(self, dof: int, dropped: int) -> None:
        super().__init__(f"noise: {dof} degrees of freedom left (need {MIN_DOF}; {dropped} values dropped)")
        self.dof = dof
        self.dropped = dropped


@dataclass(frozen=True, slots=True)
class NoisePolicy:
    k: float = 3.0  # tolerance in units of the upper bound on sigma
    confidence: float = 0.9  # of the upper bound on sigma
    floor_bpb: float = 0.001  # below this a tolerance only measures float rounding
    ceiling_bpb: float = 0.05  # above this the class cannot tell programs apart anyway
    outlier_z: float = 5.0  # robust screen: drop values beyond this many robust sigmas
    max_bpb: float = 100.0  # val_bpb above this is not a measurement
    max_difference_bpb: float = 1.0  # a residual this large is not noise

    def __post_init__(self) -> None:
        for name in ("k", "ceiling_bpb", "outlier_z", "max_bpb", "max_difference_bpb"):
            value = getattr(self, name)
            if not (value > 0 and not math.isnan(value)):
                raise NoiseError(f"noise policy: {name} must be positive, got {value!r}")
        if not 0.5 <= self.confidence < 1:
            raise NoiseError(f"noise policy: confidence must be in [0.5, 1), got {self.confidence!r}")
        if not 0 <= self.floor_bpb <= self.ceiling_bpb:
            raise NoiseError("noise policy: need 0 <= floor_bpb <= ceiling_bpb")


@dataclass(frozen=True, slots=True)
class NoiseEstimate:
    sigma_bpb: float  # pooled estimate of one measurement's standard deviation
    sigma_upper_bpb: float  # its upper confidence bound at the policy's confidence
    tolerance_bpb: float  # k * sigma_upper_bpb, clamped to [floor, ceiling]
    dof: int  # degrees of freedom it rests on: sum of (group size - 1) + differences
    samples: int  # values used: repeats kept + differences kept
    dropped: int  # values dropped as impossible or as outliers


def chi2_quantile(p: float, dof: int) -> float:
    """The p-quantile of chi^2(dof): exact for 1 and 2 degrees of freedom, else Wilson-Hilferty,
    chi^2_p(nu) ~ nu (1 - 2/(9 nu) + z_p sqrt(2/(9 nu)))^3."""
    if dof == 1:
        return NormalDist().inv_cdf((1.0 + p) / 2.0) ** 2
    if dof == 2:
        return -2.0 * math.log1p(-p)  # chi^2(2) is exponential with mean 2
    a = 2.0 / (9.0 * dof)
    return dof * max(1.0 - a + NormalDist().inv_cdf(p) * math.sqrt(a), 1e-6) ** 3


def estimate_noise(repeats: Sequence[Sequence[float]] = (), differences: Sequence[float] = (),
                   policy: NoisePolicy = NoisePolicy()) -> NoiseEstimate:
    """Pooled sigma of val_bpb and the tolerance it calls for; see the module doc.

    Raises TooFewSamples when fewer than MIN_DOF degrees of freedom survive the screens.
    """
    groups, diffs, dropped = _plausible(repeats, differences, policy)
    units = [u for g in groups for u in _group_units(g)] + [abs(d) / math.sqrt(2) for d in diffs]
    if len(units) >= MIN_SCREEN_UNITS:
        robust = median(units) / HALF_NORMAL_MEDIAN
        if robust > 0:
            limit = policy.outlier_z * robust
            kept_groups = [_screen_group(g, limit) for g in groups]
            kept_diffs = [d for d in diffs if abs(d) / math.sqrt(2) <= limit]
            dropped += sum(len(g) for g in groups) - sum(len(g) for g in kept_groups) + len(diffs) - len(kept_diffs)
            groups, diffs = kept_groups, kept_diffs
    groups = [g for g in groups if len(g) >= 2]
    dof = sum(len(g) - 1 for g in groups) + len(diffs)
    if dof < MIN_DOF:
        raise TooFewSamples(dof, dropped)
    ss = sum(_sum_squares(g) for g in groups) + sum(d * d for d in diffs) / 2
    sigma = math.sqrt(ss / dof)
    upper = sigma * math.sqrt(dof / chi2_quantile(1.0 - policy.confidence, dof))
    tolerance = min(max(policy.k * upper, policy.floor_bpb), policy.ceiling_bpb)
    return NoiseEstimate(sigma_bpb=sigma, sigma_upper_bpb=upper, tolerance_bpb=tolerance, dof=dof,
                         samples=sum(len(g) for g in groups) + len(diffs), dropped=dropped)


def _plausible(repeats: Sequence[Sequence[float]], differences: Sequence[float],
               policy: NoisePolicy) -> tuple[list[list[float]], list[float], int]:
    """Drops what cannot be a measurement: non-finite, out of range, or not a float at all."""
    groups: list[list[float]] = []
    dropped = 0
    for group in repeats:
        kept = [float(x) for x in group if _is_number(x) and 0.0 <= x <= policy.max_bpb]
        dropped += len(group) - len(kept)
        groups.append(kept)
    diffs = [float(d) for d in differences if _is_number(d) and abs(d) <= policy.max_difference_bpb]
    return groups, diffs, dropped + len(differences) - len(diffs)


def _is_number(x: object) -> bool:
    # bool is an int, and a peer's True is not a measurement
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _group_units(group: list[float]) -> list[float]:
    """|x - mean| scaled to sd sigma: Var(x_i - mean) = sigma^2 (n-1)/n."""
    n = len(group)
    if n < 2:
        return []
    mean = math.fsum(group) / n
    return [abs(x - mean) * math.sqrt(n / (n - 1)) for x in group]


def _screen_group(group: list[float], limit: float) -> list[float]:
    if len(group) < 2:
        return group
    return [x for x, u in zip(group, _group_units(group)) if u <= limit]


def _sum_squares(group: list[float]) -> float:
    mean = math.fsum(group) / len(group)
    return math.fsum((x - mean) ** 2 for x in group)


def replay_noise(state: State, platform_class: str, policy: NoisePolicy = NoisePolicy()) -> NoiseEstimate | None:
    """The class's replay noise as the ledger shows it: every claim's own value and its verifiers'
    re-runs are measurements of one program with the same training (same steps and seed), so their
    spread is the noise verifiers must tolerate (evaluation and hardware, not training seeds). None
    while the ledger holds too few re-runs."""
    groups = []
    for claim_id, claim in state.claims.items():
        if claim.platform_class != platform_class or claim.claimed is None:
            continue
        values = list(state.measured.get(claim_id, {}).values())
        if values:
            groups.append([claim.claimed, *values])
    try:
        return estimate_noise(repeats=groups, policy=policy)
    except TooFewSamples:
        return None


def run_to_run_noise(values: Sequence[float], policy: NoisePolicy = NoisePolicy()) -> NoiseEstimate | None:
    """The class's run-to-run noise from runs of one program with different data seeds (the creator's
    baseline and calibration runs): what a record's margin over the best must exceed. None with
    fewer than three runs."""
    try:
        return estimate_noise(repeats=[list(values)], policy=policy)
    except TooFewSamples:
        return None


def calibration_report(platform_class: str, values: Sequence[float], spec_noise_bpb: float, *, complete: bool,
                       policy: NoisePolicy = NoisePolicy()) -> str | None:
    """What the creator's node says about its calibration runs (runs of the genesis program with
    different data seeds): one line once they are complete (saying so if too few gave a value), None
    before.

    A warning only when it means something: when the point estimate of the tolerance, k x sigma,
    is above the spec's noise_bpb. The upper confidence bound is not used for it: over three runs it
    is about three times sigma (node/research/noise.py's chi-square bound with two degrees of
    freedom), so it would exceed almost any noise_bpb and warn on every new swarm."""
    if not complete:
        return None
    found = run_to_run_noise(values, policy)
    if found is None:  # runs that failed (killed on a busy machine) or were dropped as outliers
        return (f"run-to-run noise of {platform_class}: not measured: fewer than three usable values among "
                f"the {len(values)} its runs gave; the swarm's noise_bpb is {spec_noise_bpb}")
    central_bpb = policy.k * found.sigma_bpb
    text = (f"run-to-run noise of {platform_class}: sd {found.sigma_bpb:.4f} bpb over {found.samples} runs of the "
            f"genesis train.py; the swarm's noise_bpb is {spec_noise_bpb}")
    if central_bpb > spec_noise_bpb:
        return text + (f": below {policy.k:g} sd ({central_bpb:.4f}), so some records may be noise "
                       "(a new swarm with a larger [swarm] noise_bpb would avoid that)")
    return text + f": above {policy.k:g} sd ({central_bpb:.4f}), as it should be"
