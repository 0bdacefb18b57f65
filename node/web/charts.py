"""Server-side SVG charts for the dashboard: pure functions from numbers to SVG text.

Knows nothing about the ledger, HTTP or the page: callers hand in plain numbers and labels and
get back a complete, standalone SVG document (served as `image/svg+xml` and shown through
`<img>`, where no script in it could ever run). Every piece of text that reaches the output goes
through `_esc`, so a label taken from a peer cannot add markup.

Each chart carries its own small stylesheet with a `prefers-color-scheme: dark` variant, since an
SVG shown as an image does not see the page's CSS. Many points are drawn as one `<path>` of
zero-length round-capped segments ("M x y h0"), about 15 bytes a point, so 10,000 experiments
stay a small document that renders in milliseconds.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

WIDTH_PX = 640
HEIGHT_PX = 260
MAX_POINTS = 20_000          # drawn at most per chart; the newest are kept
MAX_BINS = 60
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 58, 12, 26, 34  # plot margins, px

_STYLE = (
    "text{font:12px system-ui,sans-serif;fill:#555}"
    ".t{font-weight:600;font-size:13px;fill:#222}.ax{stroke:#999;stroke-width:1}.g{stroke:#ddd;stroke-width:1}"
    ".pt{stroke:#7a8fb0;stroke-width:5;stroke-linecap:round;opacity:.55}"
    ".rec{stroke:#1a7f37;stroke-width:8;stroke-linecap:round}"
    ".best{fill:none;stroke:#1a7f37;stroke-width:2}.bar{fill:#7a8fb0}"
    ".band{fill:#e8a33d;opacity:.22}.med{stroke:#c4432b;stroke-width:2}.zero{stroke:#222;stroke-dasharray:3 3}"
    ".loss{fill:none;stroke:#2f6fdf;stroke-width:2}"
    "@media (prefers-color-scheme:dark){text{fill:#aaa}.t{fill:#eee}.ax{stroke:#777}.g{stroke:#333}"
    ".pt{stroke:#8ea6cc}.rec{stroke:#3fb950}.best{stroke:#3fb950}.bar{fill:#8ea6cc}.zero{stroke:#ddd}"
    ".loss{stroke:#79a6ff}}"
)


def _esc(text: str) -> str:
    return escape(text, quote=True)


def _num(value: float) -> str:
    """A coordinate with one decimal: enough for a 640 px chart, and short."""
    return f"{value:.1f}"


def fmt_value(value: float) -> str:
    return f"{value:.4f}" if abs(value) >= 0.001 or value == 0 else f"{value:.2e}"


def _open(title: str, width_px: int, height_px: int) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width_px} {height_px}" '
        f'width="{width_px}" height="{height_px}" role="img" aria-label="{_esc(title)}">',
        f"<style>{_STYLE}</style>",
        f'<text class="t" x="{_PAD_L}" y="16">{_esc(title)}</text>',
    ]


def _empty(title: str, note: str, width_px: int, height_px: int) -> str:
    parts = _open(title, width_px, height_px)
    parts.append(f'<text x="{width_px // 2}" y="{height_px // 2}" text-anchor="middle">{_esc(note)}</text></svg>')
    return "".join(parts)


def _span(lo: float, hi: float) -> tuple[float, float]:
    """A non-empty range around [lo, hi] with 5% air on both sides."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    if hi - lo < 1e-12:
        pad = abs(lo) * 0.01 or 1.0
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def _y_axis(parts: list[str], lo: float, hi: float, y_of: Callable[[float], float], width_px: int,
            ticks: int = 4, fmt: Callable[[float], str] = fmt_value) -> None:
    for i in range(ticks + 1):
        value = lo + (hi - lo) * i / ticks
        y = y_of(value)
        parts.append(f'<line class="g" x1="{_PAD_L}" x2="{width_px - _PAD_R}" y1="{_num(y)}" y2="{_num(y)}"/>')
        parts.append(f'<text x="{_PAD_L - 4}" y="{_num(y + 4)}" text-anchor="end">{_esc(fmt(value))}</text>')


def progress_svg(title: str, points: Sequence[tuple[int, float]], best: Sequence[tuple[int, float]], *,
                 records: Sequence[tuple[int, float]] = (), x_labels: tuple[str, str] = ("", ""),
                 width_px: int = WIDTH_PX, height_px: int = HEIGHT_PX) -> str:
    """Every experiment as a dot and the running best as a step line, left to right in experiment order.

    `points`: (experiment number, val_bpb) of each finished experiment; `best`: (number, value)
    where the running best changed, in order; `records`: drawn as larger dots on the step line;
    `x_labels`: the texts under the left and right ends of the axis.
    """
    shown = list(points)[-MAX_POINTS:]
    if not shown and not best:
        return _empty(title, "no finished experiments yet", width_px, height_px)
    everything = shown + list(best) + list(records)
    t_lo, t_hi = min(t for t, _ in everything), max(t for t, _ in everything)
    if t_hi - t_lo < 1:
        t_lo, t_hi = t_lo - 1, t_hi + 1
    v_lo, v_hi = _span(min(v for _, v in everything), max(v for _, v in everything))
    plot_w, plot_h = width_px - _PAD_L - _PAD_R, height_px - _PAD_T - _PAD_B

    def x_of(t: float) -> float:
        return _PAD_L + (t - t_lo) / (t_hi - t_lo) * plot_w

    def y_of(v: float) -> float:
        return _PAD_T + (v_hi - v) / (v_hi - v_lo) * plot_h  # lower val_bpb is lower on the chart

    parts = _open(title, width_px, height_px)
    _y_axis(parts, v_lo, v_hi, y_of, width_px)
    bottom = height_px - _PAD_B
    parts.append(f'<line class="ax" x1="{_PAD_L}" x2="{width_px - _PAD_R}" y1="{bottom}" y2="{bottom}"/>')
    parts.append(f'<text x="{_PAD_L}" y="{bottom + 16}">{_esc(x_labels[0])}</text>')
    parts.append(f'<text x="{width_px - _PAD_R}" y="{bottom + 16}" text-anchor="end">{_esc(x_labels[1])}</text>')
    if shown:
        dots = "".join(f"M{_num(x_of(t))} {_num(y_of(v))}h0" for t, v in shown)
        parts.append(f'<path class="pt" d="{dots}"/>')
    if best:
        steps = [f"M{_num(x_of(best[0][0]))} {_num(y_of(best[0][1]))}"]
        for t, v in best[1:]:
            steps.append(f"H{_num(x_of(t))}V{_num(y_of(v))}")
        steps.append(f"H{_num(x_of(t_hi))}")
        parts.append(f'<path class="best" d="{"".join(steps)}"/>')
    if records:
        marks = "".join(f"M{_num(x_of(t))} {_num(y_of(v))}h0" for t, v in records)
        parts.append(f'<path class="rec" d="{marks}"/>')
    note = f"{len(points)} experiments" + (f" (newest {len(shown)} drawn)" if len(shown) < len(points) else "")
    parts.append(f'<text x="{width_px - _PAD_R}" y="16" text-anchor="end">{_esc(note)}</text></svg>')
    return "".join(parts)


def quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of an already sorted, non-empty sequence."""
    if not ordered:
        raise ValueError("quantile of no values")
    pos = (len(ordered) - 1) * min(1.0, max(0.0, q))
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def histogram(values: Sequence[float], bins: int) -> tuple[float, float, list[int]]:
    """Counts of `values` in `bins` equal bins over their range: (lo, hi, counts)."""
    lo, hi = _span(min(values), max(values))
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int((v - lo) / (hi - lo) * bins)))] += 1
    return lo, hi, counts


def residual_svg(title: str, residuals: Sequence[float], *, bins: int = 24, width_px: int = WIDTH_PX,
                 height_px: int = HEIGHT_PX) -> str:
    """Histogram of verification residuals (verifier minus claimant), with the median and the 5-95% range."""
    if not residuals:
        return _empty(title, "no verifications yet", width_px, height_px)
    ordered = sorted(residuals)
    bins = max(1, min(bins, MAX_BINS))
    lo, hi, counts = histogram(ordered, bins)
    median, p5, p95 = quantile(ordered, 0.5), quantile(ordered, 0.05), quantile(ordered, 0.95)
    plot_w, plot_h = width_px - _PAD_L - _PAD_R, height_px - _PAD_T - _PAD_B
    top = max(counts)

    def x_of(v: float) -> float:
        return _PAD_L + (v - lo) / (hi - lo) * plot_w

    def y_of(c: float) -> float:
        return _PAD_T + (1 - c / top) * plot_h

    parts = _open(title, width_px, height_px)
    _y_axis(parts, 0.0, float(top), y_of, width_px, ticks=2, fmt=lambda c: f"{c:g}")
    bottom = height_px - _PAD_B
    parts.append(f'<rect class="band" x="{_num(x_of(p5))}" y="{_PAD_T}" '
                 f'width="{_num(max(1.0, x_of(p95) - x_of(p5)))}" height="{plot_h}"/>')
    bar_w = plot_w / bins
    for i, count in enumerate(counts):
        if count:
            y = y_of(count)
            parts.append(f'<rect class="bar" x="{_num(_PAD_L + i * bar_w + 0.5)}" y="{_num(y)}" '
                         f'width="{_num(max(0.5, bar_w - 1))}" height="{_num(bottom - y)}"/>')
    if lo < 0 < hi:
        parts.append(f'<line class="zero" x1="{_num(x_of(0))}" x2="{_num(x_of(0))}" y1="{_PAD_T}" y2="{bottom}"/>')
    parts.append(f'<line class="med" x1="{_num(x_of(median))}" x2="{_num(x_of(median))}" y1="{_PAD_T}" y2="{bottom}"/>')
    parts.append(f'<line class="ax" x1="{_PAD_L}" x2="{width_px - _PAD_R}" y1="{bottom}" y2="{bottom}"/>')
    parts.append(f'<text x="{_PAD_L}" y="{bottom + 16}">{_esc(fmt_value(lo))}</text>')
    parts.append(f'<text x="{width_px - _PAD_R}" y="{bottom + 16}" text-anchor="end">{_esc(fmt_value(hi))}</text>')
    legend = f"n {len(ordered)} · median {fmt_value(median)} · 5–95% [{fmt_value(p5)}, {fmt_value(p95)}]"
    parts.append(f'<text x="{width_px - _PAD_R}" y="16" text-anchor="end">{_esc(legend)}</text></svg>')
    return "".join(parts)


def loss_svg(title: str, losses: Sequence[float], *, width_px: int = WIDTH_PX, height_px: int = HEIGHT_PX) -> str:
    """A claim's training loss curve, as reported by its author (evenly spaced samples)."""
    finite = [v for v in losses if math.isfinite(v)]
    if len(finite) < 2:
        return _empty(title, "no loss curve in this claim", width_px, height_px)
    lo, hi = _span(min(finite), max(finite))
    plot_w, plot_h = width_px - _PAD_L - _PAD_R, height_px - _PAD_T - _PAD_B

    def y_of(v: float) -> float:
        return _PAD_T + (hi - v) / (hi - lo) * plot_h

    parts = _open(title, width_px, height_px)
    _y_axis(parts, lo, hi, y_of, width_px)
    step = plot_w / (len(finite) - 1)
    line = "".join(f"{'M' if i == 0 else 'L'}{_num(_PAD_L + i * step)} {_num(y_of(v))}" for i, v in enumerate(finite))
    parts.append(f'<path class="loss" d="{line}"/>')
    bottom = height_px - _PAD_B
    parts.append(f'<text x="{_PAD_L}" y="{bottom + 16}">start</text>')
    parts.append(f'<text x="{width_px - _PAD_R}" y="{bottom + 16}" text-anchor="end">'
                 f'{_esc(f"{len(finite)} samples")}</text></svg>')
    return "".join(parts)
