"""A picture of the results: input | ground truth | prediction | instances, one row per image, with a colour legend.

    python -m pipelines.evaluate.report --output_dir OUT --dataset pet [--ground_truth SRC] [--max_images 8]

Reads what ``pipelines.infer`` wrote (``OUT/summary.json`` names every input and its output stem) and, when
present, ``OUT/evaluation.json``; writes ``OUT/report.png`` (the grid, like the seeds' ``display()``) and a
self-contained ``OUT/report.html`` (images embedded, metrics table). Local paths or gs://.
"""

from __future__ import annotations

import base64
import html
import io
import json
import sys
from typing import Any, Optional, Sequence

import numpy as np
from apache_beam.io.filesystems import FileSystems
from PIL import Image, ImageDraw

from pipelines import datasets
from pipelines.common import storage
from pipelines.evaluate.inputs import example_id, find_ground_truth
from pipelines.evaluate.transforms import to_train_ids
from pipelines.infer import outputs
from pipelines.shared import cli, flag_parser
from schemas import errors
from schemas.labels import LabelSpec, colorize

TITLES = ("Input Image", "True Mask", "Predicted Mask", "Instances")
PANEL_HEIGHT = 160


def instance_colours(ids: np.ndarray, image: Optional[np.ndarray] = None) -> np.ndarray:
    """uint8 [H, W, 3]: each instance (id >= 1000) in its own stable colour over a dimmed image (or black)."""
    base = (image.astype(np.float32) * 0.35) if image is not None else np.zeros(ids.shape + (3,), np.float32)
    out = base.copy()
    for value in np.unique(ids):
        if value < 1000:
            continue
        rng = np.random.default_rng(int(value))  # colour is a function of the id: stable across runs
        out[ids == value] = rng.integers(60, 256, size=3)
    return np.clip(out, 0, 255).astype(np.uint8)


def _read_image(path: str) -> Optional[np.ndarray]:
    try:
        with Image.open(io.BytesIO(storage.read_bytes(path))) as image:
            return np.asarray(image.convert("RGB") if image.mode not in ("L", "I;16", "I") else image)
    except Exception:  # noqa: BLE001 - a missing panel is drawn blank, never fatal
        return None


def _panel(array: Optional[np.ndarray], height: int = PANEL_HEIGHT) -> Image.Image:
    if array is None:
        blank = Image.new("RGB", (height, height), (235, 235, 235))
        ImageDraw.Draw(blank).text((8, height // 2 - 6), "n/a", fill=(120, 120, 120))
        return blank
    image = Image.fromarray(array.astype(np.uint8)).convert("RGB")
    width = max(1, round(image.width * height / image.height))
    return image.resize((width, height), Image.NEAREST)


def _ground_truth_index(root: Optional[str], dataset: str) -> dict[str, str]:
    if not root:
        return {}
    index: dict[str, str] = {}
    _, found = find_ground_truth(root, dataset, None)  # the folder is literal: listed, never globbed
    for listed in found:
        key = example_id(listed.path, dataset) if listed.error is None else None
        if key:
            index.setdefault(key, listed.path)
    return index


def collect_rows(
    output_dir: str, spec: LabelSpec, ground_truth: Optional[str], max_images: int
) -> tuple[list[dict[str, Any]], int]:
    """(per image shown: name and the four panels as arrays, None where unavailable; how many images inference
    wrote, of which the first ``max_images`` by name are shown)."""
    summary = json.loads(storage.read_bytes(FileSystems.join(output_dir, "summary.json")).decode("utf-8"))
    gt_index = _ground_truth_index(ground_truth, spec.dataset)
    rows = []
    for path, stem in sorted(summary["outputs"].items(), key=lambda kv: kv[1])[:max_images]:
        image = _read_image(path)
        gt = None
        gt_path = gt_index.get(example_id(path, spec.dataset) or "")
        if gt_path:
            native = _read_image(gt_path)
            if native is not None and native.ndim == 2:
                gt = colorize(to_train_ids(native, spec.dataset, spec.mode), spec)
        prediction = _read_image(FileSystems.join(output_dir, outputs.COLOR_DIR, f"{stem}.png"))
        ids = _read_image(FileSystems.join(output_dir, outputs.INSTANCES_DIR, f"{stem}_instanceIds.png"))
        instances = None
        if ids is not None:
            instances = instance_colours(ids, image if image is not None and image.shape[:2] == ids.shape else None)
        rows.append(
            {
                "stem": stem,
                "path": path,
                "panels": [image, gt, prediction, instances],
                "instances": None if ids is None else int(len([v for v in np.unique(ids) if v >= 1000])),
            }
        )
    return rows, len(summary["outputs"])


IGNORED_COLOUR = (0, 0, 0)  # what ``colorize`` paints the ignore label


def legend_entries(spec: LabelSpec) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, RGB) of every colour a mask panel uses, in class-id order, then the ignore label's black; where a
    class is black itself (Pet's background) its entry says so instead ("background / ignored")."""
    entries = [(name, tuple(int(v) for v in colour)) for name, colour in zip(spec.class_names, spec.palette)]
    shared = [i for i, (_, colour) in enumerate(entries) if colour == IGNORED_COLOUR]
    if shared:
        name, colour = entries[shared[0]]
        entries[shared[0]] = (f"{name} / ignored", colour)
        return entries
    return entries + [("ignored / not evaluated", IGNORED_COLOUR)]


def showing_line(shown: int, total: int) -> str:
    """ "showing 8 of 12 images" (the grid is cut at --max_images), or "12 images"."""
    noun = "image" if total == 1 else "images"
    return f"showing {shown} of {total} {noun} (--max_images {shown})" if shown < total else f"{total} {noun}"


def instances_caption(count: Optional[int]) -> str:
    return "" if count is None else f" ({count} instance{'' if count == 1 else 's'})"


def grid_png(rows: Sequence[dict[str, Any]], spec: Optional[LabelSpec] = None, total: Optional[int] = None) -> bytes:
    """The grid: a line saying how many images are shown, the colour legend (with ``spec``), a title row, then
    one row of four panels per image."""
    panels = [[_panel(a) for a in row["panels"]] for row in rows]
    col_widths = [max([p[c].width for p in panels] + [PANEL_HEIGHT]) for c in range(len(TITLES))]
    pad, title_h, line_h = 6, 20, 16
    legend = legend_entries(spec) if spec is not None else []
    width = sum(col_widths) + pad * (len(TITLES) + 1)
    per_line = max(1, (width - pad) // 170)  # legend entries per line, ~170 px each
    header_h = line_h + -(-len(legend) // per_line) * line_h
    height = header_h + title_h + len(rows) * (PANEL_HEIGHT + pad + 14) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 4), showing_line(len(rows), len(rows) if total is None else total), fill=(0, 0, 0))
    for i, (name, colour) in enumerate(legend):
        x, y = pad + (i % per_line) * 170, line_h + (i // per_line) * line_h + 2
        draw.rectangle((x, y, x + 11, y + 11), fill=colour, outline=(120, 120, 120))
        draw.text((x + 16, y), name, fill=(0, 0, 0))
    x = pad
    for c, title in enumerate(TITLES):
        draw.text((x, header_h + 4), title, fill=(0, 0, 0))
        x += col_widths[c] + pad
    y = header_h + title_h
    for row, row_panels in zip(rows, panels):
        draw.text((pad, y), row["stem"] + instances_caption(row["instances"]), fill=(60, 60, 60))
        x = pad
        for c, panel in enumerate(row_panels):
            canvas.paste(panel, (x, y + 14))
            x += col_widths[c] + pad
        y += PANEL_HEIGHT + pad + 14
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def _data_uri(array: Optional[np.ndarray]) -> str:
    buf = io.BytesIO()
    _panel(array).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def report_html(
    rows: Sequence[dict[str, Any]],
    evaluation: Optional[dict[str, Any]],
    title: str,
    spec: Optional[LabelSpec] = None,
    total: Optional[int] = None,
) -> str:
    """The self-contained page: metrics (classes in class-id order, as the CLI prints them), how many images are
    shown, the colour legend, then the grid."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em} td,th{padding:4px 8px;text-align:left}"
        " img{height:%dpx;image-rendering:pixelated} table.m td:nth-child(2){text-align:right}"
        " .swatch{display:inline-block;width:1em;height:1em;border:1px solid #888;vertical-align:middle;"
        "margin:0 .3em 0 1em}</style>" % PANEL_HEIGHT,
        f"</head><body><h1>{html.escape(title)}</h1>",
    ]
    if evaluation:
        miou, acc = evaluation.get("mean_iou"), evaluation.get("pixel_accuracy")
        parts.append(
            f"<p><b>mIoU</b> {miou:.4f} &nbsp; <b>pixel accuracy</b> {acc:.4f} &nbsp; over "
            f"{evaluation.get('images')} images</p>"
            if miou is not None
            else "<p>no scored images</p>"
        )
        parts.append("<table class='m'><tr><th>class</th><th>IoU</th></tr>")
        per_class = evaluation.get("per_class_iou", {})
        # evaluation.json's objects are written with sorted keys: its class_names list keeps the class-id order.
        names = [n for n in evaluation.get("class_names", []) if n in per_class]
        for name in names + sorted(set(per_class) - set(names)):
            iou = per_class[name]
            parts.append(f"<tr><td>{html.escape(name)}</td><td>{'n/a' if iou is None else f'{iou:.4f}'}</td></tr>")
        parts.append("</table>")
    parts.append(f"<p>{html.escape(showing_line(len(rows), len(rows) if total is None else total))}</p>")
    if spec is not None:
        parts.append(
            "<p class='legend'>"
            + "".join(
                f"<span class='swatch' style='background:rgb{colour}'></span>{html.escape(name)}"
                for name, colour in legend_entries(spec)
            )
            + "</p>"
        )
    parts.append("<table><tr>" + "".join(f"<th>{t}</th>" for t in TITLES) + "</tr>")
    for row in rows:
        caption = html.escape(row["stem"] + instances_caption(row["instances"]))
        parts.append(f"<tr><td colspan='4'><code>{caption}</code></td></tr><tr>")
        parts.extend(f"<td><img src='{_data_uri(a)}' alt='{t}'></td>" for a, t in zip(row["panels"], TITLES))
        parts.append("</tr>")
    parts.append("</table></body></html>\n")
    return "\n".join(parts)


def write_report(
    output_dir: str,
    dataset: str,
    ground_truth: Optional[str] = None,
    max_images: int = 8,
    label_mode: Optional[str] = None,
) -> dict[str, str]:
    """Writes ``OUT/report.png`` and ``OUT/report.html``; returns their paths."""
    spec = datasets.get(dataset).label_spec(label_mode)
    rows, total = collect_rows(output_dir, spec, ground_truth, max_images)
    evaluation = None
    eval_path = FileSystems.join(output_dir, "evaluation.json")
    if FileSystems.exists(eval_path):
        evaluation = json.loads(storage.read_bytes(eval_path).decode("utf-8"))
    png_path = FileSystems.join(output_dir, "report.png")
    html_path = FileSystems.join(output_dir, "report.html")
    storage.write_bytes(png_path, grid_png(rows, spec, total), "image/png")
    storage.write_bytes(
        html_path,
        report_html(rows, evaluation, f"segflow: {dataset} predictions", spec, total).encode("utf-8"),
        "text/html",
    )
    return {"png": png_path, "html": html_path}


NAME = "pipelines.evaluate.report"


def build_parser() -> flag_parser.Parser:
    parser = flag_parser.Parser(NAME, __doc__)
    parser.add_flag("--output_dir", required=True, help="OUT of pipelines.infer (holding its summary.json)")
    parser.add_flag("--dataset", required=True, choices=datasets.names(), help="the dataset predicted")
    parser.add_flag(
        "--ground_truth", help="raw dataset root (SRC) for the True Mask column", default_text="no True Mask column"
    )
    parser.add_flag("--max_images", type=int, default=8, minimum=1, help="rows of the report")
    parser.add_logging_flags()
    return parser


def run(argv: Sequence[str]) -> dict[str, str]:
    """Writes the report for command-line style ``argv``; returns its paths. Raises ``UsageError`` /
    ``DataError``."""
    args = build_parser().parse_args(list(argv))
    if not FileSystems.exists(FileSystems.join(args.output_dir, "summary.json")):
        raise errors.DataError(f"{args.output_dir}/summary.json not found: run pipelines.infer first")
    return write_report(args.output_dir, args.dataset, args.ground_truth, args.max_images)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.main(NAME, argv, run, summary=lambda paths, _: f"report: {paths['html']} and {paths['png']}")


if __name__ == "__main__":
    cli.exit_process(main(sys.argv[1:]))
