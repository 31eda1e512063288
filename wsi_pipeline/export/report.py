"""The batch report: a static ``report.html`` that opens from disk, so a cytologist looks rather than reads.

Slides come ranked as in ``summary.csv`` (high risk, review, negative, unsatisfactory, failed). Per slide: a
thumbnail with the lesions drawn in their class colours, the triage category and risk, counts per class
(and per mm^2 of cells), and a gallery of the top lesions per class (crops at the model's resolution,
each with its score and level-0 box). Images live in ``report/`` beside the page (relative links).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from wsi_pipeline.io import atomic_path, write_text_atomic
from wsi_pipeline.slide.reader import SlideReader
from wsi_pipeline.taxonomy import BY_CODE, LESION_CLASSES

THUMB_PX = 640  # longest side of the slide thumbnail
CROP_UM = 80.0  # lesion crops show at least this much tissue around the lesion's centre
CROP_PX = 160  # crops are stored this big
GALLERY_ORDER = ("HSIL", "AGC", "LSIL", "ASC-US")  # galleries: the most severe class first


def _save(image: Image.Image, path: Path, **kwargs: Any) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG" if path.suffix == ".png" else "JPEG", **kwargs)


def slide_visuals(
    reader: SlideReader,
    thumb: np.ndarray,
    thumb_mpp: float,
    overlay: Sequence[tuple[str, Sequence[float]]],
    summary: dict[str, Any],
    folder: Path,
    slide_id: str,
) -> dict[str, Any]:
    """Write the slide's thumbnail with ``overlay`` boxes (class code, level-0 xyxy) and the crops of the
    summary's top lesions into ``folder``; returns their names relative to the report's folder."""
    mpp = reader.require_mpp()
    image = Image.fromarray(thumb)
    factor = THUMB_PX / max(image.size)
    if factor < 1:
        image = image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))))
    to_thumb = mpp / thumb_mpp * image.width / thumb.shape[1]  # thumbnail pixels per level-0 pixel
    draw = ImageDraw.Draw(image)
    for code, box in overlay:
        x0, y0, x1, y1 = (v * to_thumb for v in box)
        draw.rectangle([x0 - 2, y0 - 2, max(x1, x0 + 1) + 2, max(y1, y0 + 1) + 2], outline=BY_CODE[code].color, width=2)
    thumb_name = f"{slide_id}.thumb.png"
    _save(image, folder / thumb_name)
    crops: dict[str, list[dict[str, Any]]] = {}
    side_l0 = CROP_UM / mpp
    for code, entry in summary["classes"].items():
        for k, lesion in enumerate(entry["top"]):
            x0, y0, x1, y1 = lesion["box"]
            side = max(side_l0, x1 - x0, y1 - y0) * 1.2
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            region = reader.read_region(cx - side / 2, cy - side / 2, CROP_PX, CROP_PX, mpp=side * mpp / CROP_PX)
            crop = Image.fromarray(region)
            scale = CROP_PX / side
            ImageDraw.Draw(crop).rectangle(
                [(x0 - cx + side / 2) * scale, (y0 - cy + side / 2) * scale, (x1 - cx + side / 2) * scale,
                 (y1 - cy + side / 2) * scale], outline=BY_CODE[code].color, width=2,
            )  # fmt: skip
            name = f"{slide_id}.{code}.{k}.jpg"
            _save(crop, folder / name, quality=88)
            crops.setdefault(code, []).append({"file": name, "score": lesion["score"], "box": lesion["box"]})
    return {"thumbnail": thumb_name, "crops": crops}


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1d2327;
background:#f6f7f8}
h1{font-size:22px;margin:0 0 4px}.sub{color:#5b6770;margin:0 0 16px;font-size:13px}
.slide{background:#fff;border:1px solid #dde1e4;border-radius:8px;padding:16px;margin:0 0 18px;display:grid;
grid-template-columns:minmax(220px,340px) 1fr;gap:18px}
.thumb img{width:100%;border:1px solid #ccd;border-radius:4px;image-rendering:auto}
.head{display:flex;align-items:baseline;gap:12px;flex-wrap:wrap}.head h2{font-size:18px;margin:0}
.badge{padding:2px 10px;border-radius:12px;font-weight:600;font-size:13px;color:#fff}
.high{background:#c62828}.review{background:#ef8f00}.negative{background:#2e7d32}.unsatisfactory{background:#6b7280}
.failed{background:#111}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{padding:3px 10px;border-bottom:1px solid #eee;
text-align:right}th:first-child,td:first-child{text-align:left}
.gallery{display:flex;flex-wrap:wrap;gap:8px;margin:6px 0 10px}.crop{font-size:11px;color:#444;width:120px}
.crop img{width:120px;height:120px;border-radius:3px;display:block}.cls{font-weight:600;margin:8px 0 2px;font-size:13px}
.dot{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.muted{color:#6b7280;font-size:12px}.index{background:#fff;border:1px solid #dde1e4;margin:0 0 18px}
.index td,.index th{text-align:left}.index a{color:#1d4ed8;text-decoration:none}
"""


def _badge(category: str) -> str:
    css = {"high risk": "high", "review": "review", "negative": "negative", "unsatisfactory": "unsatisfactory"}
    return f'<span class="badge {css.get(category, "failed")}">{html.escape(category or "failed")}</span>'


def _focus(summary: dict[str, Any]) -> str:
    share = (summary.get("focus") or {}).get("out_of_focus")
    return f", {100 * share:.0f}% of patches out of focus" if share else ""


def _slide_section(row: dict[str, Any]) -> str:
    e = html.escape
    sid = e(str(row["slide_id"]))
    if row.get("status") == "failed":
        return (
            f'<section class="slide"><div></div><div><div class="head"><h2>{sid}</h2>{_badge("")}</div>'
            f"<p>{e(str(row.get('reason', '')))}</p></div></section>"
        )
    summary, visuals = row["summary"], row.get("visuals") or {}

    def cells(entry: dict[str, Any]) -> str:
        shown = [str(entry["count"])]
        shown += [
            "-" if entry[k] is None else f"{entry[k]:{fmt}}" for k, fmt in (("per_mm2", ".1f"), ("mean_score", ".2f"))
        ]
        return "".join(f"<td>{v}</td>" for v in shown)

    counts = "".join(
        f'<tr><td><span class="dot" style="background:rgb{c.color}"></span>{e(c.code)}</td>'
        f"{cells(summary['classes'][c.code])}</tr>"
        for c in LESION_CLASSES
    )
    gallery = ""
    crops_by_class = visuals.get("crops") or {}
    for code in sorted(crops_by_class, key=GALLERY_ORDER.index):
        crops = crops_by_class[code]
        tiles = "".join(
            f'<div class="crop"><img src="report/{e(c["file"])}" alt="{e(code)} lesion, score {c["score"]:.2f}">'
            f'score {c["score"]:.2f}<br><span class="muted">x {c["box"][0]:.0f}, y {c["box"][1]:.0f}</span></div>'
            for c in crops
        )
        gallery += f'<div class="cls">{e(code)}: top {len(crops)}</div><div class="gallery">{tiles}</div>'
    thumb = visuals.get("thumbnail")
    image = f'<img src="report/{e(thumb)}" alt="{sid} with its lesions">' if thumb else ""
    return (
        f'<section class="slide" id="{sid}"><div class="thumb">{image}</div><div>'
        f'<div class="head"><h2>{sid}</h2>{_badge(summary["category"])}'
        f'<span>risk <b>{summary["risk"]:.2f}</b></span><span class="muted">{summary["cell_area_mm2"]:.2f} '
        f'mm&sup2; of cells, {summary["lesions"]} lesions{_focus(summary)}</span></div>'
        f"<table><tr><th>class</th><th>lesions</th><th>per mm&sup2;</th><th>mean score</th></tr>{counts}</table>"
        f"{gallery or '<p class=muted>no lesion detected</p>'}</div></section>"
    )  # fmt: skip


def _index(rows: Sequence[dict[str, Any]]) -> str:
    """The ranking at a glance: one line per slide, linked to its section."""
    lines = []
    for rank, row in enumerate(rows, 1):
        sid = html.escape(str(row["slide_id"]))
        summary = row.get("summary")
        if summary is None:
            cells = f"<td>{_badge('')}</td><td></td><td></td><td>{html.escape(str(row.get('reason', '')))}</td>"
        else:
            top = max(summary["classes"].items(), key=lambda kv: kv[1]["top"][0]["score"] if kv[1]["top"] else 0)
            best = f"{top[0]} {top[1]['top'][0]['score']:.2f}" if top[1]["top"] else "-"
            cells = (
                f"<td>{_badge(summary['category'])}</td><td>{summary['risk']:.2f}</td><td>{summary['lesions']}</td>"
                f"<td>{html.escape(best)}</td>"
            )
        lines.append(f'<tr><td>{rank}</td><td><a href="#{sid}">{sid}</a></td>{cells}</tr>')
    head = "<tr><th>#</th><th>slide</th><th>category</th><th>risk</th><th>lesions</th><th>best lesion</th></tr>"
    return f'<table class="index">{head}{"".join(lines)}</table>'


def write_report(path: Path, rows: Sequence[dict[str, Any]], title: str, note: str) -> None:
    """``report.html`` with the ranking, then one section per row (``slide_id``, ``status``, ``summary``,
    ``visuals`` or ``reason``), in the given order."""
    body = _index(rows) + "".join(_slide_section(r) for r in rows)
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f'<p class="sub">{html.escape(note)}</p>{body}</body></html>\n'
    )
    write_text_atomic(path, page)
