"""The report's drawing: ``write_report`` writes ``OUT/report.png`` and a self-contained ``OUT/report.html``
(rendered by ``pipelines.evaluate.report_html``).

With per-image scores in ``OUT/evaluation.json`` the rows are the worst images first (lowest per-image mIoU), then
a few of the best, each labelled with its mIoU and pixel accuracy; the metrics and the confusion matrix lead both
files. Without them the rows are the first images by name, and the page says so. ``pipelines.evaluate.report`` is
the command line; this module loads PIL and numpy, so the command imports it only to draw.
"""

from __future__ import annotations

import io
import json
from typing import Any, Optional, Sequence

import numpy as np
from apache_beam.io.filesystems import FileSystems
from PIL import Image, ImageDraw

from pipelines import datasets
from pipelines.common import storage
from pipelines.datasets.base import Dataset
from pipelines.datasets.discovery import BeamFiles
from pipelines.evaluate import report_figures as figures, report_html as html_page
from pipelines.evaluate.inputs import example_id, find_ground_truth, unique_names
from pipelines.evaluate.transforms import to_train_ids
from pipelines.infer import outputs
from schemas import errors
from schemas.labels import LabelSpec, colorize, spec_from_table
from schemas.model_contract import MODEL_INFO_FILE, ModelInfo

TITLES = ("Input Image", "True Mask", "Predicted Mask", "Instances")
PANEL_HEIGHT = 160
BEST_ROWS = 3  # the best images shown after the worst: what the model gets right, for contrast


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


def panel_image(array: Optional[np.ndarray], height: int = PANEL_HEIGHT) -> Image.Image:
    if array is None:
        blank = Image.new("RGB", (height, height), (235, 235, 235))
        ImageDraw.Draw(blank).text((8, height // 2 - 6), "n/a", fill=(120, 120, 120))
        return blank
    image = Image.fromarray(array.astype(np.uint8)).convert("RGB")
    width = max(1, round(image.width * height / image.height))
    return image.resize((width, height), Image.NEAREST)


def _ground_truth_colours(path: str, dataset: Dataset, spec: LabelSpec) -> Optional[np.ndarray]:
    """A ground-truth mask in its classes' colours, read as evaluate reads it (``Dataset.read_mask``: palette
    indices, 16-bit values, colour-coded masks); None (a blank panel) when it cannot be read."""
    try:
        native = dataset.read_mask(storage.read_bytes(path), "ground truth")
        return colorize(to_train_ids(native, dataset, spec.mode), spec)
    except Exception:  # noqa: BLE001 - a missing panel is drawn blank, never fatal
        return None


def _model_spec(output_dir: str, dataset: str) -> Optional[LabelSpec]:
    """The label table of the model that made the predictions (summary.json's ``model_dir``, its
    ``segflow_model.json``), or None when it cannot be read or predates ``label_table``."""
    try:
        summary = json.loads(storage.read_bytes(FileSystems.join(output_dir, "summary.json")).decode("utf-8"))
        info = ModelInfo.from_json(
            storage.read_bytes(FileSystems.join(summary["model_dir"], MODEL_INFO_FILE)).decode("utf-8")
        )
    except Exception:  # noqa: BLE001 - the model moved or is older: the dataset's own table is used
        return None
    if info.label_table is None or info.dataset != dataset:
        return None
    return spec_from_table(info.dataset, info.label_mode, info.class_names, info.ignore_label, info.label_table)


def _ground_truth_index(root: Optional[str], source: Dataset) -> dict[str, str]:
    """id -> ground-truth mask, by the ids evaluate pairs by (``pipelines.evaluate.inputs.pairing_ids``)."""
    if not root:
        return {}
    index: dict[str, str] = {}
    _, found = find_ground_truth(root, source, None)  # the folder is literal: listed, never globbed
    for listed in found:
        if listed.error is None:
            key = source.literal_id(listed.path, root.rstrip("/"), "mask") or example_id(listed.path, source.name)
            if key:
                index.setdefault(key, listed.path)
    return index


def _image_ids(summary: dict[str, Any], source: Dataset, gt_ids: set[str]) -> dict[str, str]:
    """infer's input path -> the id evaluate scored it under, by evaluate's rule (``inputs.pairing_ids``)."""
    input_dir = summary.get("input_dir") if summary.get("input_dataset") == source.name else None
    by_name = unique_names(gt_ids)
    ids = {}
    for path in summary["outputs"]:
        found = source.literal_id(path, input_dir, "image") if input_dir else None
        if found is None:
            found = example_id(path, source.name) or ""
            found = by_name.get(found, found)
        ids[path] = found
    return ids


def _plural(count: int, noun: str = "image") -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def choose_images(
    written: dict[str, str],
    evaluation: Optional[dict[str, Any]],
    dataset: str,
    max_images: int,
    ids: Optional[dict[str, str]] = None,
) -> tuple[list[dict[str, Any]], str]:
    """(the images to show: ``path``, ``stem``, ``section`` ("worst", "best" or "first") and ``scores`` (the image's
    ``per_image`` entry, or None); a note saying how they were chosen).

    ``written``: infer's summary.json ``outputs`` (input path → output stem). With per-image scores: the
    ``max_images`` lowest per-image mIoUs, lowest first (an image with no mIoU, nothing labelled on either side,
    ranks last), then up to ``BEST_ROWS`` of the highest, highest first. Without: the first ``max_images`` by
    output name. ``ids``: input path → the id evaluate scored it under (default: its file name's id)."""
    per_image = (evaluation or {}).get("per_image")
    if per_image is None:
        why = (
            "OUT/evaluation.json not found"
            if evaluation is None
            else "OUT/evaluation.json has no per-image scores (an earlier segflow wrote it)"
        )
        chosen = sorted(written.items(), key=lambda kv: kv[1])[:max_images]
        note = f"{why}: these are the first images by name; run pipelines.evaluate to show the worst ones first"
        return [{"path": p, "stem": s, "section": "first", "scores": None} for p, s in chosen], note
    by_id = {(ids or {}).get(path) or example_id(path, dataset): (path, stem) for path, stem in written.items()}
    scored = [(entry, *by_id[entry["id"]]) for entry in per_image if entry.get("id") in by_id]
    scored.sort(key=lambda e: (e[0]["miou"] is None, e[0]["miou"] or 0.0, e[0]["id"]))
    worst, rest = scored[:max_images], scored[max_images:]
    best = [e for e in reversed(rest) if e[0]["miou"] is not None][: min(BEST_ROWS, max_images)]
    rows = [{"path": p, "stem": s, "section": "worst", "scores": e} for e, p, s in worst]
    rows += [{"path": p, "stem": s, "section": "best", "scores": e} for e, p, s in best]
    note = f"images ranked by per-image mIoU: {_plural(len(scored))} scored"
    if len(scored) < len(written):
        note += f", {len(written) - len(scored)} written by inference without a per-image score"
    return rows, note


def section_title(section: str, count: int) -> str:
    return {
        "worst": f"Worst {_plural(count)} by per-image mIoU (lowest first)",
        "best": f"Best {_plural(count)} (highest first)",
        "first": f"First {_plural(count)} by name",
    }[section]


def collect_rows(
    output_dir: str,
    spec: LabelSpec,
    ground_truth: Optional[str],
    max_images: int,
    evaluation: Optional[dict[str, Any]] = None,
    dataset: Optional[Dataset] = None,
) -> tuple[list[dict[str, Any]], int, str]:
    """(per image shown: ``choose_images``' fields and its four panels as arrays, None where unavailable; how many
    images inference wrote; how the shown ones were chosen). ``dataset`` reads the ground-truth masks (bound to
    ``ground_truth``'s own label table, ``Dataset.with_source``; default: ``spec.dataset``'s)."""
    summary = json.loads(storage.read_bytes(FileSystems.join(output_dir, "summary.json")).decode("utf-8"))
    source = dataset or datasets.get(spec.dataset)
    gt_index = _ground_truth_index(ground_truth, source)
    image_ids = _image_ids(summary, source, set(gt_index))
    chosen, note = choose_images(summary["outputs"], evaluation, spec.dataset, max_images, image_ids)
    rows = []
    for row in chosen:
        path, stem = row["path"], row["stem"]
        image = _read_image(path)
        gt = None
        gt_path = gt_index.get(image_ids.get(path) or "")
        if gt_path:
            gt = _ground_truth_colours(gt_path, source, spec)
        prediction = _read_image(FileSystems.join(output_dir, outputs.COLOR_DIR, f"{stem}.png"))
        ids = _read_image(FileSystems.join(output_dir, outputs.INSTANCES_DIR, f"{stem}_instanceIds.png"))
        instances = None
        if ids is not None:
            instances = instance_colours(ids, image if image is not None and image.shape[:2] == ids.shape else None)
        row["panels"] = [image, gt, prediction, instances]
        row["instances"] = None if ids is None else int(len([v for v in np.unique(ids) if v >= 1000]))
        rows.append(row)
    return rows, len(summary["outputs"]), note


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


def shown_line(rows: Sequence[dict[str, Any]], total: int) -> str:
    """``showing_line`` for the rows drawn, which after the --max_images worst may hold a few of the best."""
    best = sum(1 for row in rows if row.get("section") == "best")
    if not best:
        return showing_line(len(rows), total)
    worst = len(rows) - best
    return f"showing {len(rows)} of {_plural(total)}: the {worst} worst (--max_images {worst}) and the {best} best"


def instances_caption(count: Optional[int]) -> str:
    return "" if count is None else f" ({count} instance{'' if count == 1 else 's'})"


def caption(row: dict[str, Any]) -> str:
    """ "img03: mIoU 0.4123, pixel accuracy 0.8120 (2 instances)": the image's name, its scores when evaluated."""
    scored = row.get("scores")
    figures_text = ""
    if scored is not None:
        miou, accuracy = scored["miou"], scored["pixel_accuracy"]
        figures_text = (
            f": mIoU {'n/a' if miou is None else f'{miou:.4f}'}, "
            f"pixel accuracy {'n/a' if accuracy is None else f'{accuracy:.4f}'}"
        )
    return row["stem"] + figures_text + instances_caption(row.get("instances"))


def grouped_sections(rows: Sequence[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The rows grouped by section, in order."""
    grouped: list[tuple[str, list[dict[str, Any]]]] = []
    for row in rows:
        section = row.get("section", "first")
        if not grouped or grouped[-1][0] != section:
            grouped.append((section, []))
        grouped[-1][1].append(row)
    return grouped


def grid_png(
    rows: Sequence[dict[str, Any]],
    spec: Optional[LabelSpec] = None,
    total: Optional[int] = None,
    evaluation: Optional[dict[str, Any]] = None,
    note: Optional[str] = None,
) -> bytes:
    """The picture: how many images are shown (and how they were chosen), the colour legend (with ``spec``), the
    metrics and the confusion matrix (with ``evaluation``), a title row, then per section (worst, best) a heading
    and one row of four panels per image."""
    panels = [[panel_image(a) for a in row["panels"]] for row in rows]
    col_widths = [max([p[c].width for p in panels] + [PANEL_HEIGHT]) for c in range(len(TITLES))]
    pad, title_h, line_h = 6, 20, 16
    legend = legend_entries(spec) if spec is not None else []
    matrix = None
    if evaluation and evaluation.get("confusion_matrix"):
        matrix = figures.confusion_image(evaluation["confusion_matrix"], evaluation.get("class_names", []))
    width = max(sum(col_widths) + pad * (len(TITLES) + 1), (matrix.width + 2 * pad) if matrix else 0)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    top_lines = [shown_line(rows, len(rows) if total is None else total)] + ([note] if note else [])
    metrics = figures.metrics_lines(evaluation, width - 2 * pad, measure) if evaluation else []
    per_line = max(1, (width - pad) // 170)  # legend entries per line, ~170 px each
    legend_h = -(-len(legend) // per_line) * line_h
    header_h = (len(top_lines) + len(metrics)) * line_h + legend_h + ((matrix.height + pad) if matrix else 0) + pad
    sections = grouped_sections(rows)
    height = header_h + title_h + len(sections) * line_h + len(rows) * (PANEL_HEIGHT + pad + 14) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = 4
    for line in top_lines:
        draw.text((pad, y), line, fill=(0, 0, 0))
        y += line_h
    for i, (name, colour) in enumerate(legend):
        x, ly = pad + (i % per_line) * 170, y + (i // per_line) * line_h - 2
        draw.rectangle((x, ly, x + 11, ly + 11), fill=colour, outline=(120, 120, 120))
        draw.text((x + 16, ly), name, fill=(0, 0, 0))
    y += legend_h
    for line in metrics:
        draw.text((pad, y), line, fill=(0, 0, 0))
        y += line_h
    if matrix:
        canvas.paste(matrix, (pad, y))
    x = pad
    for c, title in enumerate(TITLES):
        draw.text((x, header_h + 4), title, fill=(0, 0, 0))
        x += col_widths[c] + pad
    y = header_h + title_h
    by_row = {id(row): row_panels for row, row_panels in zip(rows, panels)}
    for section, section_rows in sections:
        draw.text((pad, y), section_title(section, len(section_rows)), fill=(0, 0, 0))
        y += line_h
        for row in section_rows:
            draw.text((pad, y), caption(row), fill=(60, 60, 60))
            x = pad
            for c, panel in enumerate(by_row[id(row)]):
                canvas.paste(panel, (x, y + 14))
                x += col_widths[c] + pad
            y += PANEL_HEIGHT + pad + 14
    return figures.png_bytes(canvas)


def report_html(
    rows: Sequence[dict[str, Any]],
    evaluation: Optional[dict[str, Any]],
    title: str,
    spec: Optional[LabelSpec] = None,
    total: Optional[int] = None,
    note: Optional[str] = None,
) -> str:
    """The self-contained page (``report_html.page``) of the rows ``grid_png`` draws, in the same words."""
    sections = [
        (
            section_title(section, len(section_rows)),
            [
                (caption(row), row["stem"], [(t, panel_image(a), a is not None) for a, t in zip(row["panels"], TITLES)])
                for row in section_rows
            ],
        )
        for section, section_rows in grouped_sections(rows)
    ]
    shown = shown_line(rows, len(rows) if total is None else total)
    legend = legend_entries(spec) if spec is not None else []
    return html_page.page(title, evaluation, shown, note, legend, sections)


def read_evaluation(output_dir: str) -> Optional[dict[str, Any]]:
    """``OUT/evaluation.json`` (None when absent); ``DataError`` when it is not a JSON object."""
    path = FileSystems.join(output_dir, "evaluation.json")
    if not FileSystems.exists(path):
        return None
    try:
        doc = json.loads(storage.read_bytes(path).decode("utf-8"))
    except ValueError as err:
        raise errors.DataError(f"{path} is not JSON ({err}): run pipelines.evaluate again") from None
    if not isinstance(doc, dict):
        raise errors.DataError(f"{path} is not an evaluation (a JSON object): run pipelines.evaluate again")
    return doc


def write_report(
    output_dir: str,
    dataset: str,
    ground_truth: Optional[str] = None,
    max_images: int = 8,
    label_mode: Optional[str] = None,
) -> dict[str, str]:
    """Writes ``OUT/report.png`` and ``OUT/report.html``; returns their paths. The colours and class names are
    the model's (its ``segflow_model.json``) where it can be read, else the dataset's: a ``folder`` dataset's
    ``classes.json`` from ``ground_truth``."""
    source = datasets.get(dataset)
    if ground_truth:
        try:
            source = source.with_source(ground_truth, BeamFiles())
        except ValueError as err:
            raise errors.DataError(str(err)) from None
    spec = _model_spec(output_dir, dataset)
    if spec is None:
        try:
            spec = source.label_spec(label_mode)
        except ValueError as err:
            raise errors.DataError(f"{err}: give --ground_truth SRC") from None
    evaluation = read_evaluation(output_dir)
    rows, total, note = collect_rows(output_dir, spec, ground_truth, max_images, evaluation, source)
    png_path = FileSystems.join(output_dir, "report.png")
    html_path = FileSystems.join(output_dir, "report.html")
    storage.write_bytes(png_path, grid_png(rows, spec, total, evaluation, note), "image/png")
    page = report_html(rows, evaluation, f"segflow: {dataset} predictions", spec, total, note)
    storage.write_bytes(html_path, page.encode("utf-8"), "text/html")
    return {"png": png_path, "html": html_path}
