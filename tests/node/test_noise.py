"""The noise estimator: recovers a known sigma, scales with the data, stays bounded on junk."""
from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.research.noise import (
    MIN_DOF,
    NoiseError,
    NoisePolicy,
    TooFewSamples,
    calibration_report,
    chi2_quantile,
    estimate_noise,
    run_to_run_noise,
)

OPEN = NoisePolicy(floor_bpb=0.0, ceiling_bpb=math.inf, max_bpb=math.inf, max_difference_bpb=math.inf)


def normal_differences(rng: random.Random, sigma: float, n: int) -> list[float]:
    """Verified minus claimed: two independent measurements of one program."""
    return [rng.gauss(0.0, sigma) - rng.gauss(0.0, sigma) for _ in range(n)]


def normal_groups(rng: random.Random, sigma: float, sizes: list[int]) -> list[list[float]]:
    """Repeats of programs with different true values (1 to 3 bpb), the same noise."""
    return [[mu + rng.gauss(0.0, sigma) for _ in range(size)] for size in sizes for mu in (rng.uniform(1, 3),)]


def test_known_answer() -> None:
    # SS = (0.01^2 + 0.01^2 + 0.02^2) / 2 = 3e-4 over 3 dof: sigma 0.01
    est = estimate_noise(differences=[0.01, -0.01, 0.02], policy=OPEN)
    assert est.dof == 3 and est.samples == 3 and est.dropped == 0
    assert est.sigma_bpb == pytest.approx(0.01)
    # a group {a, b} carries exactly what the difference a - b carries
    pair = estimate_noise(repeats=[[1.50, 1.51], [2.0, 1.99], [1.7, 1.72]], policy=OPEN)
    assert pair.sigma_bpb == pytest.approx(est.sigma_bpb) and pair.dof == 3 and pair.samples == 6
    assert est.sigma_upper_bpb > est.sigma_bpb and est.tolerance_bpb == pytest.approx(3 * est.sigma_upper_bpb)


@pytest.mark.parametrize("p, dof, exact", [(0.1, 1, 0.01579), (0.9, 1, 2.7055), (0.1, 2, 0.2107), (0.1, 3, 0.5844),
                                           (0.1, 4, 1.0636), (0.1, 10, 4.8652),
                                           (0.1, 100, 82.358), (0.9, 2, 4.6052), (0.05, 30, 18.493)])
def test_chi2_quantile_is_close_to_the_tables(p: float, dof: int, exact: float) -> None:
    assert chi2_quantile(p, dof) == pytest.approx(exact, rel=0.03)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), sigma=st.floats(1e-4, 0.1), n=st.sampled_from([40, 400, 4000]))
def test_recovers_sigma_from_differences_within_bounds_that_shrink_with_n(seed: int, sigma: float, n: int) -> None:
    est = estimate_noise(differences=normal_differences(random.Random(seed), sigma, n), policy=OPEN)
    # s^2 has relative sd sqrt(2/nu), so s has about 1/sqrt(2 nu): allow 6 of those
    assert abs(est.sigma_bpb / sigma - 1) <= 6 / math.sqrt(2 * est.dof)
    assert est.dof >= n - 2 and est.sigma_upper_bpb >= est.sigma_bpb


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), sigma=st.floats(1e-4, 0.1),
       sizes=st.lists(st.integers(2, 6), min_size=30, max_size=300).map(lambda s: [1, *s]))
def test_recovers_sigma_from_groups_of_any_size(seed: int, sigma: float, sizes: list[int]) -> None:
    groups = normal_groups(random.Random(seed), sigma, sizes)
    est = estimate_noise(repeats=groups, policy=OPEN)
    assert est.dof == sum(s - 1 for s in sizes if s >= 2) or est.dropped > 0  # the screen may drop a value
    assert abs(est.sigma_bpb / sigma - 1) <= 6 / math.sqrt(2 * est.dof)


def test_upper_bound_covers_sigma_at_its_confidence() -> None:
    rng = random.Random(7)
    trials = 1000
    covered = sum(estimate_noise(differences=normal_differences(rng, 0.01, 5), policy=OPEN).sigma_upper_bpb >= 0.01
                  for _ in range(trials))
    assert 0.86 <= covered / trials <= 0.94  # confidence 0.9; binomial sd 0.0095


# zero or far from underflow: squares of the scaled values stay normal floats
finite = st.floats(-0.5, 0.5).filter(lambda x: x == 0 or abs(x) > 1e-100)


@settings(max_examples=80, deadline=None)
@given(diffs=st.lists(finite, min_size=MIN_DOF, max_size=60), power=st.integers(-20, 20))
def test_scaling_the_data_scales_sigma_and_tolerance(diffs: list[float], power: int) -> None:
    c = 2.0**power  # a power of two scales every float exactly, so the screen decides the same way
    try:
        est = estimate_noise(differences=diffs, policy=OPEN)
    except TooFewSamples:
        with pytest.raises(TooFewSamples):
            estimate_noise(differences=[c * d for d in diffs], policy=OPEN)
        return
    scaled = estimate_noise(differences=[c * d for d in diffs], policy=OPEN)
    assert (scaled.dof, scaled.samples, scaled.dropped) == (est.dof, est.samples, est.dropped)
    assert scaled.sigma_bpb == pytest.approx(c * est.sigma_bpb, rel=1e-12, abs=1e-300)
    assert scaled.tolerance_bpb == pytest.approx(c * est.tolerance_bpb, rel=1e-12, abs=1e-300)


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 4096)), min_size=MIN_DOF, max_size=40),
       shift=st.integers(0, 4096))
def test_shifting_a_programs_values_changes_nothing(pairs: list[tuple[int, int]], shift: int) -> None:
    # values on a grid of 2^-10: sums, means of two and shifts are exact
    groups = [[a / 1024, b / 1024] for a, b in pairs]
    moved = [[x + shift / 1024 for x in g] for g in groups]
    try:
        est = estimate_noise(repeats=groups, policy=OPEN)
    except TooFewSamples:
        with pytest.raises(TooFewSamples):
            estimate_noise(repeats=moved, policy=OPEN)
        return
    assert estimate_noise(repeats=moved, policy=OPEN) == est


junk = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, 1e308]),
                 st.floats(-0.05, 0.05))


@settings(max_examples=200, deadline=None)
@given(diffs=st.lists(junk, max_size=50), groups=st.lists(st.lists(junk, max_size=6), max_size=10))
def test_any_input_gives_a_bounded_tolerance_or_a_typed_error(diffs: list[float], groups: list[list[float]]) -> None:
    policy = NoisePolicy()
    total = len(diffs) + sum(len(g) for g in groups)
    impossible = sum(1 for d in diffs if not (math.isfinite(d) and abs(d) <= policy.max_difference_bpb)) + sum(
        1 for g in groups for x in g if not (math.isfinite(x) and 0 <= x <= policy.max_bpb))
    try:
        est = estimate_noise(repeats=groups, differences=diffs, policy=policy)
    except TooFewSamples as exc:
        assert exc.dof < MIN_DOF and exc.dropped >= impossible
        return
    assert policy.floor_bpb <= est.tolerance_bpb <= policy.ceiling_bpb
    assert math.isfinite(est.sigma_bpb) and math.isfinite(est.sigma_upper_bpb) and est.sigma_bpb >= 0
    assert est.dropped >= impossible and est.samples + est.dropped <= total and est.dof >= MIN_DOF


def test_a_fraudulent_residual_is_screened_out() -> None:
    diffs = normal_differences(random.Random(3), 0.01, 60)
    clean = estimate_noise(differences=diffs)
    dirty = estimate_noise(differences=diffs + [0.9, -0.4])  # two claims that lied by a lot
    assert dirty.dropped == clean.dropped + 2 and dirty.sigma_bpb == pytest.approx(clean.sigma_bpb)
    # values that cannot be measurements never count, whatever the screen says
    junked = estimate_noise(differences=diffs + [math.nan, math.inf, 5.0], repeats=[[1.2, -1.0, math.inf]])
    assert junked.dropped == clean.dropped + 5 and junked.sigma_bpb == pytest.approx(clean.sigma_bpb)


def test_bit_identical_replays_give_the_floor() -> None:
    est = estimate_noise(differences=[0.0] * 10)
    assert est.sigma_bpb == 0.0 and est.tolerance_bpb == NoisePolicy().floor_bpb


def test_too_few_samples_is_a_typed_error() -> None:
    with pytest.raises(TooFewSamples) as caught:
        estimate_noise(differences=[0.01], repeats=[[1.3], []])
    assert caught.value.dof == 1
    with pytest.raises(TooFewSamples):
        estimate_noise()


@pytest.mark.parametrize("bad", [{"k": math.nan}, {"k": 0.0}, {"confidence": 1.0}, {"confidence": 0.2},
                                 {"floor_bpb": 0.1, "ceiling_bpb": 0.05}, {"floor_bpb": -1.0},
                                 {"outlier_z": -1.0}, {"max_bpb": math.nan}])
def test_a_senseless_policy_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(NoiseError):
        NoisePolicy(**bad)


def test_replay_noise_reads_the_ledger_re_runs() -> None:
    import random as _random

    from ledger import fold
    from node.research.noise import replay_noise
    from tests.ledger.factory import CLASS, Feeds, claim, identity, make_spec, seal, verify

    verifiers = [identity(801), identity(802), identity(803)]
    signed = make_spec(identity(800), verifiers, quorum=3)
    feeds, state, rng = Feeds(signed.swarm_id), fold.initial(signed.spec), _random.Random(7)
    assert replay_noise(state, CLASS) is None  # nothing re-run yet
    for n in range(40):
        c = feeds.sign(identity(810), claim(n, round(1.5 + rng.gauss(0, 0.002), 6)))
        fold.apply(state, c)
        fold.apply(state, feeds.sign(verifiers[0], seal(c)))  # an anchor's seal: then the replays count
        for v in verifiers:
            fold.apply(state, feeds.sign(v, verify(c, 1.5 + rng.gauss(0, 0.002))))
    found = replay_noise(state, CLASS)
    assert found is not None and 0.0015 < found.sigma_bpb < 0.0025 and found.dof == 40 * 3
    assert replay_noise(state, "h100") is None


def test_the_calibration_report_waits_for_every_run_and_warns_only_on_the_point_estimate() -> None:
    assert calibration_report("cpu", [1.50, 1.51], 0.01, complete=False) is None
    quiet = calibration_report("cpu", [1.500, 1.501, 1.502], 0.01, complete=True)   # sd 0.001: 3 sd = 0.003
    assert quiet is not None and quiet.startswith("run-to-run noise of cpu: sd 0.0010") and "may be noise" not in quiet
    # the upper bound over three runs is about three times sd, so the old rule warned here as well
    assert estimate_noise(repeats=[[1.500, 1.501, 1.502]]).tolerance_bpb > 0.003 * 2
    loud = calibration_report("cpu", [1.50, 1.52, 1.54], 0.01, complete=True)       # sd 0.02: 3 sd = 0.06
    assert loud is not None and "some records may be noise" in loud
    # a calibration run killed on a busy machine has no value: the report says the noise is unmeasured
    short = calibration_report("cpu", [1.50, 1.51], 0.01, complete=True)
    assert short == ("run-to-run noise of cpu: not measured: fewer than three usable values among the 2 its runs "
                     "gave; the swarm's noise_bpb is 0.01")


@given(st.lists(st.floats(0.5, 3.0), min_size=3, max_size=6), st.floats(0.0001, 0.1))
def test_the_calibration_report_warns_exactly_when_three_sd_exceed_the_spec(values: list[float], spec: float) -> None:
    text = calibration_report("cpu", values, spec, complete=True)
    found = run_to_run_noise(values)
    if found is None:
        assert text is not None and text.startswith("run-to-run noise of cpu: not measured")
    else:
        assert text is not None and ("may be noise" in text) == (3.0 * found.sigma_bpb > spec)
