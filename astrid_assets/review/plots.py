"""Small inline SVG plots for the scanning page: a light curve and a completeness curve.

Built from numbers only (no text from the database enters the markup), so they need no escaping
and no JavaScript; ``Markup`` marks them safe for Jinja.
"""

from __future__ import annotations

import math

from markupsafe import Markup

__all__ = ["completeness_svg", "light_curve_svg"]

WIDTH, HEIGHT, MARGIN = 420, 200, 36


def _scale(values: list[float], low_px: float, high_px: float, invert: bool = False):
    low, high = min(values), max(values)
    if high - low < 1e-12:
        low, high = low - 1, high + 1
    pad = 0.05 * (high - low)
    low, high = low - pad, high + pad

    def to_px(value: float) -> float:
        fraction = (value - low) / (high - low)
        return high_px - fraction * (high_px - low_px) if invert else low_px + fraction * (high_px - low_px)

    return to_px, low, high


def _frame(x_label: str, y_label: str, x_range: tuple[float, float], y_range: tuple[float, float]) -> list[str]:
    left, right, top, bottom = MARGIN + 10, WIDTH - 8, 8, HEIGHT - MARGIN
    return [
        f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#888"/>',
        f'<text x="{(left + right) / 2:.0f}" y="{HEIGHT - 4}" font-size="11" text-anchor="middle">{x_label}</text>',
        f'<text x="12" y="{(top + bottom) / 2:.0f}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {(top + bottom) / 2:.0f})">{y_label}</text>',
        f'<text x="{left}" y="{bottom + 13}" font-size="10">{x_range[0]:.5g}</text>',
        f'<text x="{right}" y="{bottom + 13}" font-size="10" text-anchor="end">{x_range[1]:.5g}</text>',
        f'<text x="{left - 3}" y="{bottom}" font-size="10" text-anchor="end">{y_range[0]:.3g}</text>',
        f'<text x="{left - 3}" y="{top + 9}" font-size="10" text-anchor="end">{y_range[1]:.3g}</text>',
    ]


def _finite(*values) -> bool:
    return all(value is not None and math.isfinite(value) for value in values)


def light_curve_svg(points: list[dict]) -> Markup | None:
    """Difference flux (e⁻) against MJD: detections (S/N ≥ 5) as dots with 1σ bars, others as 5σ upper limits.

    ``points`` are rows of ``forced_photometry`` (``mjd_obs``, ``flux``, ``flux_err``, ``snr``,
    ``flux_limit_5sigma``); None when fewer than one point has a time and a flux.
    """
    usable = [p for p in points if _finite(p.get("mjd_obs"), p.get("flux"), p.get("flux_err"))]
    if not usable:
        return None
    left, right, top, bottom = MARGIN + 10, WIDTH - 8, 8, HEIGHT - MARGIN
    x, x_low, x_high = _scale([p["mjd_obs"] for p in usable], left, right)
    extent = [p["flux"] + p["flux_err"] for p in usable] + [p["flux"] - p["flux_err"] for p in usable]
    extent += [p["flux_limit_5sigma"] for p in usable if _finite(p.get("flux_limit_5sigma"))] + [0.0]
    y, y_low, y_high = _scale(extent, top, bottom, invert=True)
    parts = _frame("MJD", "flux (e-)", (x_low, x_high), (y_low, y_high))
    parts.append(f'<line x1="{left}" x2="{right}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#bbb" '
                 f'stroke-dasharray="3 3"/>')
    for p in usable:
        px = x(p["mjd_obs"])
        detected = _finite(p.get("snr")) and p["snr"] >= 5
        if detected or not _finite(p.get("flux_limit_5sigma")):
            parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{y(p["flux"] - p["flux_err"]):.1f}" '
                         f'y2="{y(p["flux"] + p["flux_err"]):.1f}" stroke="#1f5fa8"/>')
            parts.append(f'<circle cx="{px:.1f}" cy="{y(p["flux"]):.1f}" r="3.5" '
                         f'fill="{"#1f5fa8" if detected else "#fff"}" stroke="#1f5fa8"/>')
        else:
            limit = y(p["flux_limit_5sigma"])
            parts.append(f'<path d="M{px - 4:.1f},{limit:.1f} L{px + 4:.1f},{limit:.1f} M{px:.1f},{limit:.1f} '
                         f'L{px:.1f},{limit + 9:.1f}" stroke="#999" fill="none"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


def completeness_svg(bin_centres: list[float], fraction: list[float]) -> Markup | None:
    """Fraction of injected fakes recovered against their S/N (bins with fakes only)."""
    curve = [(c, f) for c, f in zip(bin_centres, fraction, strict=True) if _finite(c, f) and f >= 0]
    if not curve:
        return None
    left, right, top, bottom = MARGIN + 10, WIDTH - 8, 8, HEIGHT - MARGIN
    x, x_low, x_high = _scale([c for c, _ in curve], left, right)
    y, _, _ = _scale([0.0, 1.0], top, bottom, invert=True)
    parts = _frame("injected S/N", "recovered", (x_low, x_high), (-0.05, 1.05))
    parts.append(f'<line x1="{left}" x2="{right}" y1="{y(0.5):.1f}" y2="{y(0.5):.1f}" stroke="#bbb" '
                 f'stroke-dasharray="3 3"/>')
    path = " ".join(f"{'M' if i == 0 else 'L'}{x(c):.1f},{y(f):.1f}" for i, (c, f) in enumerate(curve))
    parts.append(f'<path d="{path}" stroke="#1f5fa8" fill="none" stroke-width="2"/>')
    parts += [f'<circle cx="{x(c):.1f}" cy="{y(f):.1f}" r="3" fill="#1f5fa8"/>' for c, f in curve]
    parts.append("</svg>")
    return Markup("".join(parts))
