"""The report's figures drawn from ``evaluation.json``: the headline metrics as lines of text and the confusion
matrix (row-normalised, class names on both axes) as a picture for ``report.png`` and as an HTML table for
``report.html``, where a picture's small text would be unreadable on a phone and cannot be copied. Drawn with PIL
alone, so the report needs no plotting library; ``pipelines.evaluate.report_page`` puts them in the two files."""

from __future__ import annotations

import html
import io
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

CELL = 30  # px per matrix cell: room for "0.93" in PIL's default font
NOT_EVALUATED = "not evaluated"  # the matrix's last column: predictions of no evaluated class
TEXT = (0, 0, 0)
MATRIX_TITLE = "confusion matrix: share of each true class (row) predicted as each class (column)"


def _figure(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def class_order(evaluation: dict[str, Any]) -> list[str]:
    """The classes of ``per_class_iou`` in class-id order: evaluation.json's objects are written with sorted keys,
    its ``class_names`` list keeps the order the CLI prints."""
    per_class = evaluation.get("per_class_iou", {})
    names = [n for n in evaluation.get("class_names", []) if n in per_class]
    return names + sorted(set(per_class) - set(names))


def headline(evaluation: dict[str, Any]) -> str:
    """ "mIoU 0.5000   pixel accuracy 0.7500   over 12 images" ("no scored images" when there is no mIoU)."""
    if evaluation.get("mean_iou") is None:
        return "no scored images"
    images = evaluation.get("images")
    return (
        f"mIoU {_figure(evaluation['mean_iou'])}   pixel accuracy {_figure(evaluation.get('pixel_accuracy'))}   "
        f"over {images} image{'' if images == 1 else 's'}"
    )


def metrics_lines(evaluation: dict[str, Any], width: int, draw: ImageDraw.ImageDraw) -> list[str]:
    """The headline, then "per-class IoU: pet 0.9000 · background 0.6000 · ..." wrapped to ``width`` px."""
    per_class = evaluation.get("per_class_iou", {})
    lines, line = [headline(evaluation)], "per-class IoU:"
    for name in class_order(evaluation):
        item = f" {name} {_figure(per_class[name])}"
        if draw.textlength(line + item) > width and not line.endswith(":"):
            lines.append(line)
            line = "   "
        line += item + "  "
    return lines + [line.rstrip()]


def _colour(share: float) -> tuple[int, int, int]:
    """White (0) to dark blue (1)."""
    return (int(255 - 225 * share), int(255 - 180 * share), int(255 - 100 * share))


def confusion_shares(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str]
) -> tuple[list[str], list[str], list[Optional[list[float]]]]:
    """(row names, column names, rows of shares) of the confusion matrix ``[C, C + 1]`` (rows ground truth,
    columns prediction, the last column predictions of no evaluated class), each row divided by its total: the
    share of a true class's pixels predicted as each class. A class with no ground-truth pixel has None."""
    counts = np.asarray(matrix, dtype=np.float64)
    rows, columns = counts.shape
    row_names = list(class_names)[:rows]
    column_names = row_names + [NOT_EVALUATED] * (columns - rows)
    totals = counts.sum(axis=1)
    shares = [None if totals[r] == 0 else [float(v) for v in counts[r] / totals[r]] for r in range(rows)]
    return row_names, column_names, shares


def confusion_html(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> str:
    """The confusion matrix as an HTML figure: the title as its caption, then a table (class ``cm``) that scrolls
    sideways on its own where it is wider than the page, true classes as row headers, predicted classes as column
    headers, each cell its share (two decimals, "-" for a class with no ground-truth pixel) on the picture's
    colour, with the pixel count in its tooltip."""
    row_names, column_names, shares = confusion_shares(matrix, class_names)
    counts = [[int(v) for v in row] for row in matrix]
    parts = [
        f"<figure class='cm'><figcaption>{html.escape(MATRIX_TITLE)}</figcaption>",
        "<div class='scroll'><table class='cm'>",
        "<tr><th scope='col'>ground truth \\ predicted</th>"
        + "".join(f"<th scope='col' class='v'>{html.escape(n)}</th>" for n in column_names)
        + "</tr>",
    ]
    for r, name in enumerate(row_names):
        cells = []
        for c in range(len(column_names)):
            if shares[r] is None:
                cells.append("<td class='none'>-</td>")
                continue
            share = shares[r][c]
            ink = "#fff" if share > 0.5 else "#333"
            cells.append(
                f"<td style='background:rgb{_colour(share)};color:{ink}' title='{counts[r][c]} pixels'>{share:.2f}</td>"
            )
        parts.append(f"<tr><th scope='row'>{html.escape(name)}</th>{''.join(cells)}</tr>")
    parts.append("</table></div></figure>")
    return "\n".join(parts)


def confusion_image(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> Image.Image:
    """``confusion_shares`` as a picture: shaded cells with their shares, class names on both axes. A class with
    no ground-truth pixel has a grey row."""
    row_names, column_names, shares = confusion_shares(matrix, class_names)
    rows, columns = len(row_names), len(column_names)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = int(max(measure.textlength(n) for n in row_names + ["ground truth"])) + 12
    top = int(max(measure.textlength(n) for n in column_names)) + 12
    title_h = 18
    width = max(left + columns * CELL, int(measure.textlength(MATRIX_TITLE))) + 8
    height = title_h + top + rows * CELL + 8
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), MATRIX_TITLE, fill=TEXT)
    draw.text((4, title_h + top - 14), "ground truth", fill=(90, 90, 90))
    for c, name in enumerate(column_names):  # names upright along the top, read bottom to top
        label = Image.new("RGB", (int(measure.textlength(name)) + 4, 14), (255, 255, 255))
        ImageDraw.Draw(label).text((2, 1), name, fill=TEXT)
        label = label.rotate(90, expand=True)
        canvas.paste(label, (left + c * CELL + (CELL - label.width) // 2, title_h + top - 6 - label.height))
    for r, name in enumerate(row_names):
        y = title_h + top + r * CELL
        draw.text((4, y + CELL // 2 - 6), name, fill=TEXT)
        for c in range(columns):
            x = left + c * CELL
            row_shares = shares[r]
            if row_shares is None:
                draw.rectangle((x, y, x + CELL - 1, y + CELL - 1), fill=(225, 225, 225), outline=(200, 200, 200))
                continue
            share = row_shares[c]
            draw.rectangle((x, y, x + CELL - 1, y + CELL - 1), fill=_colour(share), outline=(200, 200, 200))
            text = f"{share:.2f}"
            draw.text(
                (x + (CELL - measure.textlength(text)) / 2, y + CELL // 2 - 6),
                text,
                fill=(255, 255, 255) if share > 0.5 else (60, 60, 60),
            )
    return canvas


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
