"""HTML report of a compression run: one self-contained file (inline SVG, no scripts).

Sections: storage saved (bytes and percent), a table of every file (status, syntax, ratio,
speeds, QA numbers, the reason when a file was kept, refused or failed), bar charts of the
ratio per modality and codec and of encode/decode speed per codec, histograms of per-frame
PSNR and SSIM for lossy results, and the background analysis when it was asked for.
"""

from __future__ import annotations

import html
import math
import os
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_write
from ..units import format_bytes
from .background import BackgroundEstimate
from .results import TranscodeResult

__all__ = ["PSNR_LEGEND", "quality_line", "render_report", "speed_line", "storage_line", "summarise",
           "write_report"]

_COLOURS = ["#3b6ea5", "#e07b39", "#4a9c59", "#c44e52", "#8172b2", "#937860", "#da8bc3",
            "#8c8c8c", "#ccb974", "#64b5cd"]


def _all_results(results: Iterable[TranscodeResult]) -> list[TranscodeResult]:
    out = []
    for r in results:
        out.append(r)
        out.extend(r.companions)
    return out


def summarise(results: Sequence[TranscodeResult],
              wall_seconds: float | None = None) -> dict[str, Any]:
    """Totals over the main results (previews not counted as savings), and the run's
    speed: ``wall_mbps`` is raw pixel MB per second of the whole run (``wall_seconds``;
    the sum of the files' own times when not given), ``encode_mbps`` / ``decode_mbps`` the
    codecs' speed per core (raw MB per second of codec time summed over workers: with
    several jobs their sum exceeds the wall clock), ``encodes_per_frame`` what PSNR goals
    and ratio calibration cost."""
    written = [r for r in results if r.status == "written"]
    kept = [r for r in results if r.status == "kept-input"]
    considered = written + kept
    before = sum(r.input_bytes for r in considered)
    after = sum(r.output_bytes for r in written) + sum(r.input_bytes for r in kept)
    saved = before - after
    everything = _all_results(results)
    raw = sum(r.raw_bytes for r in everything)
    encoded = [r for r in everything if r.encodes]
    frames_encoded = sum(r.frames for r in encoded)
    wall = wall_seconds if wall_seconds is not None else sum(r.wall_seconds for r in results)
    return {
        "files": len(results),
        "written": len(written),
        "kept": len(kept),
        "refused": sum(r.status == "refused" for r in results),
        "skipped": sum(r.status == "skipped" for r in results),
        "failed": sum(r.status == "failed" for r in results),
        "input_bytes": before,
        "output_bytes": after,
        "saved_bytes": saved,
        "saved_percent": 100.0 * saved / before if before else 0.0,
        "frames": sum(r.frames for r in written),
        "raw_bytes": raw,
        "wall_seconds": wall,
        "wall_mbps": _mbps(raw, wall),
        # Codec speeds over what went through a codec (native targets write frames as is).
        "encode_mbps": _mbps(sum(r.raw_bytes for r in encoded),
                             sum(r.encode_seconds for r in encoded)),
        "decode_mbps": _mbps(sum(r.raw_bytes for r in encoded),
                             sum(r.decode_seconds for r in encoded)),
        "encodes_per_frame": sum(r.encodes for r in encoded) / frames_encoded
        if frames_encoded else None,
    }


def storage_line(summary: dict[str, Any]) -> str:
    """"saved 463.6 MiB (92.7 %): 500.3 MiB -> 36.7 MiB", or "grew by ..." when the
    outputs are bigger (decompressing to ``explicit``)."""
    saved = float(summary["saved_bytes"] or 0)
    before, after = summary["input_bytes"] or 0, summary["output_bytes"] or 0
    sizes = f"{format_bytes(before)} -> {format_bytes(after)}"
    if saved < 0:
        return f"grew by {format_bytes(-saved)} (+{-float(summary['saved_percent'] or 0):.1f} %): {sizes}"
    return f"saved {format_bytes(saved)} ({float(summary['saved_percent'] or 0):.1f} %): {sizes}"


def speed_line(summary: dict[str, Any], jobs: int = 1) -> str:
    """The run's throughput by the wall clock, then the codecs' speed per core."""
    if not summary["raw_bytes"]:
        return ""
    seconds = float(summary["wall_seconds"] or 0)
    parts = [(f"{float(summary['raw_bytes']) / 1e6:,.1f} MB of pixels in "
              f"{seconds:.{1 if seconds >= 10 else 2}f} s")]
    if summary["wall_mbps"]:
        parts.append(f"{summary['wall_mbps']:,.1f} MB/s wall clock"
                     + (f" ({jobs} jobs)" if jobs > 1 else ""))
    codec = [f"{name} {summary[key]:,.0f} MB/s" for name, key in
             (("encode", "encode_mbps"), ("decode", "decode_mbps")) if summary[key]]
    if codec:
        parts.append("codec per core: " + ", ".join(codec))
    if summary["encodes_per_frame"] and float(summary["encodes_per_frame"]) > 1.0005:
        parts.append(f"{summary['encodes_per_frame']:.2f} encodes per frame")
    return "; ".join(parts)


def quality_line(results: Sequence[TranscodeResult]) -> str:
    """The lowest per-frame quality of the lossy results, each number said what it is."""
    everything = _all_results(results)
    psnrs = [v for r in everything for v in r.psnr]
    if not psnrs:
        return ""
    parts = [f"lowest frame PSNR {min(psnrs):.2f} dB (over the stored range)"]
    windowed = [v for r in everything for v in r.window_psnr]
    if windowed:
        parts.append(f"{min(windowed):.2f} dB as displayed through the file's window "
                     "(a narrow window magnifies errors)")
    ssims = [v for r in everything for v in r.ssim]
    if ssims:
        parts.append(f"lowest SSIM {min(ssims):.4f}")
    return "; ".join(parts)


#: What the two PSNR numbers mean (report legend).
PSNR_LEGEND = (
    "PSNR is measured over the whole stored range (0..2^BitsStored-1, e.g. 0..4095 for "
    "12-bit CT); window PSNR on the image as displayed through the file's stored window "
    "(Modality LUT, then the VOI window onto 0..255). A window narrower than the stored "
    "range magnifies every error by range/width, so window PSNR is lower by about "
    "20*log10(range/width) dB: a 400-wide CT window on 12-bit data, ~20 dB.")


# ---------------------------------------------------------------------------------------------
# SVG
# ---------------------------------------------------------------------------------------------


def _bar_chart(title: str, groups: list[str], series: dict[str, list[float | None]],
               unit: str = "") -> str:
    """Grouped vertical bars: one group per ``groups`` entry, one bar per series."""
    if not groups or not series:
        return ""
    width, height, left, bottom, top = 760, 300, 56, 70, 30
    values = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    vmax = max(values, default=1.0) or 1.0
    plot_w, plot_h = width - left - 10, height - top - bottom
    group_w = plot_w / len(groups)
    bar_w = max(group_w * 0.8 / len(series), 1.0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{html.escape(title)}">',
             f'<text x="{width / 2}" y="18" text-anchor="middle" font-weight="bold">'
             f'{html.escape(title)}</text>']
    for k in range(5):
        y = top + plot_h - plot_h * k / 4
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" '
                     'stroke="#ddd"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" '
                     f'font-size="11">{vmax * k / 4:.3g}{unit}</text>')
    for g, group in enumerate(groups):
        x0 = left + g * group_w + group_w * 0.1
        for s, (name, vs) in enumerate(series.items()):
            v = vs[g]
            if v is None or not math.isfinite(v):
                continue
            h = plot_h * v / vmax
            x = x0 + s * bar_w
            parts.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 1:.1f}" '
                         f'height="{h:.1f}" fill="{_COLOURS[s % len(_COLOURS)]}">'
                         f'<title>{html.escape(group)} / {html.escape(name)}: {v:.3g}{unit}'
                         '</title></rect>')
        parts.append(f'<text x="{left + (g + 0.5) * group_w:.1f}" y="{top + plot_h + 14}" '
                     f'text-anchor="middle" font-size="11">{html.escape(group)}</text>')
    for s, name in enumerate(series):
        x = left + (s % 5) * 140
        y = height - 30 + (s // 5) * 14
        parts.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" '
                     f'fill="{_COLOURS[s % len(_COLOURS)]}"/>'
                     f'<text x="{x + 14}" y="{y}" font-size="11">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _histogram(title: str, values: list[float], unit: str, bins: int = 24) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    counts = [0] * bins
    for v in finite:
        counts[min(int((v - lo) / (hi - lo) * bins), bins - 1)] += 1
    width, height, left, bottom, top = 760, 220, 56, 40, 30
    plot_w, plot_h = width - left - 16, height - top - bottom
    cmax = max(counts) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{html.escape(title)}">',
             f'<text x="{width / 2}" y="18" text-anchor="middle" font-weight="bold">'
             f'{html.escape(title)} ({len(finite)} frames)</text>']
    bw = plot_w / bins
    for b, c in enumerate(counts):
        h = plot_h * c / cmax
        parts.append(f'<rect x="{left + b * bw:.1f}" y="{top + plot_h - h:.1f}" '
                     f'width="{bw - 1:.1f}" height="{h:.1f}" fill="{_COLOURS[0]}">'
                     f'<title>{lo + b * (hi - lo) / bins:.4g}..{lo + (b + 1) * (hi - lo) / bins:.4g}'
                     f'{unit}: {c}</title></rect>')
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        x = left + plot_w * k / 4
        anchor = "start" if k == 0 else "end" if k == 4 else "middle"  # inside the picture
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="{anchor}" '
                     f'font-size="11">{v:.4g}{unit}</text>')
    parts.append(f'<text x="{left - 4}" y="{top + 10}" text-anchor="end" font-size="11">'
                 f'{cmax}</text>'
                 f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" font-size="11">0</text>'
                 f'<text x="12" y="{top + plot_h / 2:.1f}" text-anchor="middle" font-size="11" '
                 f'transform="rotate(-90 12 {top + plot_h / 2:.1f})">frames</text></svg>')
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------


def _mbps(nbytes: int, seconds: float) -> float | None:
    return nbytes / seconds / 1e6 if seconds > 0 and nbytes else None


def _cell(value: object, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isinf(value):
            return "&infin;"
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def render_report(results: Sequence[TranscodeResult], *, title: str = "dcmstream compress",
                  background: Sequence[BackgroundEstimate] = (),
                  settings: dict[str, object] | None = None,
                  wall_seconds: float | None = None, jobs: int = 1) -> str:
    """The report as an HTML string (``wall_seconds``: the whole run, for its throughput)."""
    everything = _all_results(results)
    summary = summarise(results, wall_seconds)
    rows = []
    labelled = [(r, False) for main in results for r in (main, *main.companions)]
    for r, _ in labelled:
        is_preview = any(r is c for main in results for c in main.companions)
        name = html.escape(os.path.basename(r.source)) + (" &rarr; preview" if is_preview else "")
        psnr_min = min(r.psnr) if r.psnr else None
        ssim_min = min(r.ssim) if r.ssim else None
        wpsnr_min = min(r.window_psnr) if r.window_psnr else None
        rows.append(
            "<tr>" + "".join(f"<td>{c}</td>" for c in (
                name,
                f'<span class="s-{r.status}">{r.status}</span>', _cell(r.modality),
                _cell(r.target), _cell(r.frames),
                f"{r.rows}&times;{r.columns}&times;{r.samples}" if r.rows else "",
                _cell(r.bits_stored or None), format_bytes(r.input_bytes),
                format_bytes(r.output_bytes) if r.output_bytes else "",
                _cell(r.ratio), _cell(_mbps(r.raw_bytes, r.wall_seconds), 1),
                _cell(_mbps(r.raw_bytes, r.encode_seconds), 1),
                _cell(_mbps(r.raw_bytes, r.decode_seconds), 1), _cell(r.encodes_per_frame),
                _cell(psnr_min),
                _cell(ssim_min, 4), _cell(wpsnr_min), _cell(r.max_error),
                _cell(r.offset_table), "yes" if r.verified else "",
                _cell(r.message))) + "</tr>")
    head = ("file", "status", "modality", "target", "frames", "size", "bits", "input",
            "output", "ratio", "MB/s (wall clock)", "encode MB/s per core",
            "decode MB/s per core", "encodes per frame", "min PSNR dB", "min SSIM",
            "min window PSNR dB", "max error", "offsets", "verified", "note")
    tips = {
        "MB/s (wall clock)": "raw pixel MB over this file's elapsed time, everything included",
        "encode MB/s per core": "raw pixel MB per second of encoder time, summed over workers",
        "decode MB/s per core": "raw pixel MB per second of decoding the result back (QA or "
                                "verification), summed over workers",
        "encodes per frame": "encoder calls per frame: more than 1 when a PSNR goal was "
                             "searched or a ratio calibrated",
        "min PSNR dB": "lowest per-frame PSNR over the stored range (0..2^BitsStored-1)",
        "min window PSNR dB": "lowest per-frame PSNR of the image as displayed through the "
                              "file's window (0..255): lower, see the note below",
        "min SSIM": "lowest per-frame structural similarity (1 = identical)",
    }

    # Ratio per modality and codec (written results only: a kept input has no codec ratio).
    ratios: dict[tuple[str, str], list[float]] = defaultdict(list)
    speeds: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for r in everything:
        if r.status == "written" and r.ratio:
            ratios[(r.modality or "?", r.target)].append(r.ratio)
            speeds[r.target].append((r.raw_bytes, r.encode_seconds, r.decode_seconds))
    modalities = sorted({m for m, _ in ratios})
    targets = sorted({t for _, t in ratios})
    ratio_chart = _bar_chart("Compression ratio (mean) per modality and codec", modalities,
                             {t: [statistics.fmean(ratios[(m, t)]) if ratios.get((m, t)) else None
                                  for m in modalities] for t in targets})
    speed_targets = sorted(speeds)

    def rate(t: str, which: int) -> float | None:
        total = sum(b for b, *_ in speeds[t])
        seconds = sum(s[which] for s in speeds[t])
        return _mbps(total, seconds)

    speed_chart = _bar_chart("Codec speed per core (raw MB per second inside the codec)",
                             speed_targets,
                             {"encode": [rate(t, 1) for t in speed_targets],
                              "decode (verify/QA)": [rate(t, 2) for t in speed_targets]})
    psnrs = [v for r in everything for v in r.psnr]
    ssims = [v for r in everything for v in r.ssim]
    plots = [ratio_chart, speed_chart, _histogram("PSNR per lossy frame", psnrs, " dB"),
             _histogram("SSIM per lossy frame", ssims, "")]

    bg_rows = "".join(
        "<tr>" + "".join(f"<td>{c}</td>" for c in (
            html.escape(os.path.basename(b.source)), b.frames_analysed,
            f"{100 * b.background_fraction:.1f} %", b.near, format_bytes(b.lossless_bytes),
            format_bytes(b.background_near_bytes), f"{100 * b.saving:.1f} %")) + "</tr>"
        for b in background)
    bg_section = "" if not background else (
        "<h2>Background (content-aware analysis, nothing written)</h2>"
        "<p>Share of each frame outside the body / ultrasound sector, and the JPEG-LS size "
        "if only the background were coded near-lossless (&plusmn;NEAR) and the body "
        "losslessly, measured on sample frames.</p><table><tr><th>file</th><th>frames "
        "analysed</th><th>background</th><th>NEAR</th><th>lossless</th><th>background "
        "near-lossless</th><th>saving</th></tr>" + bg_rows + "</table>")
    settings_html = "" if not settings else "<p>" + ", ".join(
        f"<b>{html.escape(str(k))}</b>: {html.escape(str(v))}" for k, v in settings.items()) + "</p>"
    s = summary
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; font-size: 12px; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; }}
td:first-child, td:last-child {{ text-align: left; }}
th {{ background: #f0f0f0; }}
.s-written {{ color: #2a7a2a; }} .s-kept-input {{ color: #806000; }}
.s-refused, .s-failed {{ color: #b00020; font-weight: bold; }} .s-skipped {{ color: #666; }}
.summary {{ font-size: 15px; }}
svg {{ display: block; margin: 1em 0; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{settings_html}
<p class="summary">Storage: {format_bytes(s['input_bytes'])} &rarr; {format_bytes(s['output_bytes'])},
{'saved' if s['saved_bytes'] >= 0 else 'grew by'} <b>{format_bytes(abs(s['saved_bytes']))}</b>
({abs(s['saved_bytes']):,} bytes, <b>{abs(s['saved_percent']):.1f} %</b>). Files: {s['files']} &mdash; written {s['written']},
input kept {s['kept']}, refused {s['refused']}, skipped {s['skipped']}, failed {s['failed']}.</p>
{f'<p class="summary">Speed: {html.escape(speed_line(s, jobs))}.</p>' if speed_line(s, jobs) else ""}
{''.join(p for p in plots if p)}
<h2>Files</h2>
<table><tr>{''.join(f'<th title="{html.escape(tips[h])}">{h}</th>' if h in tips else f'<th>{h}</th>' for h in head)}</tr>
{''.join(rows)}
</table>
{bg_section}
<p>Lossless results were decoded back and compared bit-exact with the source before they
were committed. Ratio = raw pixel bytes / encoded pixel bytes. "MB/s (wall clock)" is what a
user waits for: raw pixel MB over elapsed time, reading, checking and writing included; the
per-core codec speeds count only the time inside the encoder and the decoder, summed over
workers (hover over a column title for its definition).</p>
{f'<p>{html.escape(PSNR_LEGEND)}</p>' if any(r.psnr for r in everything) else ''}
</body></html>
"""


def write_report(path: str | os.PathLike[str], results: Sequence[TranscodeResult],
                 **kwargs: object) -> Path:
    """Write :func:`render_report` to ``path`` (atomically) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, render_report(results, **kwargs))  # type: ignore[arg-type]
