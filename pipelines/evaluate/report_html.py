"""The report's self-contained page, ``OUT/report.html``: the metrics, the confusion matrix as a table, how the
images shown were chosen, the colour legend, then one figure per image with its caption and its named panels, the
images embedded as PNG data. It renders what ``report_page.report_html`` gives it (the wording, the legend and the
panels of ``report.png``'s rows), so the two files say the same."""

from __future__ import annotations

import base64
import html
from typing import Any, Optional, Sequence

from PIL import Image

from pipelines.evaluate import report_figures as figures

# One image's row: its caption, its name, and its panels as (column title, picture, whether there was data).
ImageRow = tuple[str, str, Sequence[tuple[str, Image.Image, bool]]]


def _data_uri(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(figures.png_bytes(image)).decode("ascii")


# Readable from a phone to a desktop: an image's panels wrap onto the next line (two a line at most on a phone,
# the true mask beside the predicted) rather than widen the page; each panel names its column (a table's header
# row scrolls out of sight); a wide confusion matrix (Cityscapes' 19 classes) scrolls on its own.
STYLE = (
    "body{font-family:sans-serif;margin:1em;max-width:80em} h2{font-size:1.1em;margin:1.2em 0 .3em}"
    " td,th{padding:3px 8px;text-align:left} .note{color:#555}"
    " table.m td:nth-child(2){text-align:right} .metrics{display:flex;flex-wrap:wrap;gap:1em 3em;align-items:start}"
    " .scroll{overflow-x:auto;max-width:100%} table.cm{border-collapse:collapse;font-size:.9em}"
    " figure.cm{min-width:0;max-width:100%} figure.cm>figcaption{padding-bottom:.3em}"
    " table.cm td{text-align:center;border:1px solid #ccc}"
    " table.cm td.none{background:#e1e1e1} table.cm th.v{writing-mode:vertical-rl;transform:rotate(180deg);"
    "vertical-align:bottom;padding:8px 3px}"
    " .legend span.entry{white-space:nowrap;margin-right:1.2em}"
    " .swatch{display:inline-block;width:1em;height:1em;border:1px solid #888;vertical-align:middle;margin-right:.3em}"
    " figure{margin:0} figure.image{margin:0 0 1.2em} figure.image>figcaption{margin-bottom:.3em}"
    " figure.image>figcaption code{overflow-wrap:anywhere}"
    " .panels{display:flex;flex-wrap:wrap;gap:8px} .panels>figure{max-width:calc(50% - 4px)}"
    " .panels figcaption{font-size:.85em;color:#555}"
    " img.panel{height:auto;max-width:100%;image-rendering:pixelated}"
)


def page(
    title: str,
    evaluation: Optional[dict[str, Any]],
    shown: str,
    note: Optional[str],
    legend: Sequence[tuple[str, tuple[int, int, int]]],
    sections: Sequence[tuple[str, Sequence[ImageRow]]],
) -> str:
    """The page: metrics (classes in class-id order, as the CLI prints them) and the confusion matrix as a table
    (with ``evaluation``), ``shown`` (how many images are shown) and ``note`` (how they were chosen), the colour
    ``legend`` ((name, RGB) pairs), then per section (its heading, its rows) one figure per image: its caption and
    its panels, each named."""
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<style>{STYLE}</style>",
        f"</head><body><h1>{html.escape(title)}</h1>",
    ]
    if evaluation:
        parts.append(f"<p><b>{html.escape(figures.headline(evaluation)).replace('   ', ' &nbsp; ')}</b></p>")
        parts.append("<div class='metrics'><table class='m'><tr><th>class</th><th>IoU</th></tr>")
        per_class = evaluation.get("per_class_iou", {})
        for name in figures.class_order(evaluation):
            iou = per_class[name]
            parts.append(f"<tr><td>{html.escape(name)}</td><td>{'n/a' if iou is None else f'{iou:.4f}'}</td></tr>")
        parts.append("</table>")
        if evaluation.get("confusion_matrix"):
            parts.append(figures.confusion_html(evaluation["confusion_matrix"], evaluation.get("class_names", [])))
        parts.append("</div>")
    parts.append(f"<p>{html.escape(shown)}</p>")
    if note:
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    if legend:
        parts.append(
            "<p class='legend'>Mask colours: "
            + "".join(
                f"<span class='entry'><span class='swatch' style='background:rgb{colour}'></span>"
                f"{html.escape(name)}</span>"
                for name, colour in legend
            )
            + "</p>"
        )
    for heading, rows in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        for caption, stem, panels in rows:
            parts.append("<figure class='image'>")
            parts.append(f"<figcaption><code>{html.escape(caption)}</code></figcaption>")
            parts.append("<div class='panels'>")
            parts.extend(
                f"<figure><img class='panel' src='{_data_uri(image)}' alt='{html.escape(stem)}: {column}'>"
                f"<figcaption>{column}{'' if available else ' (not available)'}</figcaption></figure>"
                for column, image, available in panels
            )
            parts.append("</div></figure>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
