"""``pipelines.evaluate.report`` as a user reads it: the worst images first with their scores, the metrics and a
confusion matrix in the page and the picture, a colour legend, how many images are shown, singular counts, classes
in class-id order; and a --help that answers at once."""

import html.parser
import io
import json

import numpy as np
from PIL import Image

from pipelines.common import storage
from pipelines.evaluate import report_page as report  # the drawing; report.py is its command line
from pipelines.infer import outputs
from schemas.labels import spec_for
from tests.fixtures import probe

PET = spec_for("pet", "trimap")


def _inference_output(out, images: int, per_image=None) -> None:
    """What pipelines.infer leaves in OUT for ``images`` images: masks, colour masks, instance-id maps (image i
    has i instances), summary.json; and an evaluation.json as pipelines.evaluate writes it (sorted keys), with
    ``per_image`` entries when given (else as an earlier segflow wrote it, without)."""
    rows = {}
    for i in range(images):
        stem = f"img{i:02d}"
        ids = np.zeros((12, 16), np.uint8)
        ids[:, 8:] = 1
        ids[0, :] = 2
        outputs.write_prediction(str(out), stem, ids, PET, source_path=f"/in/{stem}.jpg")
        instance_ids = np.zeros((12, 16), np.uint16)
        for k in range(i):
            instance_ids[k, :4] = 24000 + 1000 + k  # ids >= 1000 are instances
        storage.write_bytes(
            str(out / outputs.INSTANCES_DIR / f"{stem}_instanceIds.png"), outputs.encode_png(instance_ids)
        )
        rows[f"/in/{stem}.jpg"] = stem
    storage.write_json(str(out / "summary.json"), {"outputs": rows})
    evaluation = {
        "class_names": list(PET.class_names),
        "images": images,
        "mean_iou": 0.5,
        "pixel_accuracy": 0.75,
        "per_class_iou": {"pet": 0.9, "background": 0.6, "border": None},
        # pet all right; background 3/4 right; no border pixel
        "confusion_matrix": [[40, 0, 0, 0], [10, 30, 0, 0], [0, 0, 0, 0]],
    }
    if per_image is not None:
        evaluation["per_image"] = per_image
    storage.write_json(str(out / "evaluation.json"), evaluation)


def test_report_says_what_it_shows_and_what_the_colours_mean(tmp_path):
    out = tmp_path / "out"
    _inference_output(out, 12)
    paths = report.write_report(str(out), "pet", max_images=8)
    page = (out / "report.html").read_text()
    assert "showing 8 of 12 images" in page
    assert "img01 (1 instance)</code>" in page and "img02 (2 instances)</code>" in page
    assert "(1 instances)" not in page and "img08" not in page
    # The metrics table in class-id order (the CLI's, the label table's), not evaluation.json's sorted keys.
    table = page[page.index("<table class='m'>") :]
    assert table.index(">pet<") < table.index(">background<") < table.index(">border<")
    # A legend: every class's colour, in class-id order; the ignore label's black is Pet's background colour.
    legend = page[page.index("class='legend'") : page.index("<h2>")]
    assert [name for name, _ in report.legend_entries(PET)] == ["pet", "background / ignored", "border"]
    for name, colour in zip(PET.class_names, PET.palette):
        assert f"rgb{tuple(colour)}'></span>{name}" in legend
    assert legend.index(">pet<") < legend.index(">background / ignored<") < legend.index(">border<")
    cityscapes = report.legend_entries(spec_for("cityscapes"))
    assert len(cityscapes) == 20 and cityscapes[-1] == ("ignored / not evaluated", (0, 0, 0))
    assert [name for name, _ in cityscapes[:-1]] == list(spec_for("cityscapes").class_names)
    png = Image.open(paths["png"])
    assert png.mode == "RGB" and png.height > 8 * report.PANEL_HEIGHT
    # The legend's swatches are drawn in the picture too.
    pixels = np.asarray(png).reshape(-1, 3)
    for _, colour in report.legend_entries(PET)[:-1]:
        assert (pixels == colour).all(axis=1).sum() >= 100, colour


def test_report_of_every_image_says_how_many():
    assert report.showing_line(3, 3) == "3 images" and report.showing_line(1, 1) == "1 image"
    assert report.showing_line(8, 12) == "showing 8 of 12 images (--max_images 8)"
    assert report.instances_caption(None) == "" and report.instances_caption(0) == " (0 instances)"


def test_demo_held_out_images_never_share_a_training_file_name(tmp_path):
    """The demo's second generated set is named for what it is (heldout_*): no name is a training file's."""
    from pipelines.tools import synthetic

    train = synthetic.write_pet_dataset(str(tmp_path / "pet"), 30, size=(24, 32), seed=0)
    heldout = synthetic.write_pet_dataset(
        str(tmp_path / "pet_heldout"), 12, size=(30, 40), seed=1000, id_prefix="heldout_"
    )
    assert all(name.startswith("heldout_") for name in heldout) and not set(train) & set(heldout)
    listed = json.dumps(sorted(p.name for p in (tmp_path / "pet_heldout" / "images").iterdir()))
    assert "heldout_" in listed


def _scores(i: int) -> dict:
    """A per_image entry of evaluation.json: img{i}'s mIoU is a scramble of i (img07 worst, img05 best)."""
    miou = ((i * 5) % 12) / 12
    return {
        "id": f"img{i:02d}",
        "miou": miou,
        "pixel_accuracy": 0.5 + miou / 2,
        "per_class_iou": {"pet": miou, "background": miou, "border": None},
    }


class _Structure(html.parser.HTMLParser):
    """Checks that every element is closed in order (void elements excepted) and collects the images' sources."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.open, self.problems, self.images = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.open[-1:]}")
        else:
            self.open.pop()


def _checked(page: str) -> _Structure:
    parser = _Structure()
    parser.feed(page)
    parser.close()
    assert page.startswith("<!doctype html>") and not parser.problems and parser.open == [], parser.problems
    for image in parser.images:
        assert image["src"].startswith("data:image/png;base64,") and image.get("alt"), image
    return parser


def test_report_leads_with_the_worst_images_then_the_best_each_with_its_scores(tmp_path):
    out = tmp_path / "out"
    _inference_output(out, 12, per_image=[_scores(i) for i in range(12)])
    report.write_report(str(out), "pet", max_images=3)
    page = (out / "report.html").read_text()
    parser = _checked(page)
    captions = [line.split("<code>")[1].split(":")[0] for line in page.splitlines() if "<code>" in line]
    by_score = sorted(range(12), key=lambda i: _scores(i)["miou"])
    assert captions == [f"img{i:02d}" for i in by_score[:3] + by_score[::-1][:3]], captions
    assert page.index("Worst 3 images by per-image mIoU (lowest first)") < page.index("Best 3 images")
    worst = _scores(by_score[0])
    assert f"img{by_score[0]:02d}: mIoU {worst['miou']:.4f}, pixel accuracy {worst['pixel_accuracy']:.4f}" in page
    assert "showing 6 of 12 images: the 3 worst (--max_images 3) and the 3 best" in page
    assert "12 images scored" in page
    # The confusion matrix is a table in the page (text a phone can read, not a picture's 10 px font): one row per
    # true class, one column per class and "not evaluated", each row's shares; a class with no pixel has dashes.
    matrix = page[page.index("<table class='cm'>") : page.index("</table></div></figure>")]
    assert "<figcaption>" + report.figures.MATRIX_TITLE in page and "alt='confusion matrix'" not in page
    true_rows = [row.split("</th>")[0] for row in matrix.split("<th scope='row'>")[1:]]
    assert true_rows == ["pet", "background", "border"] and ">not evaluated</th>" in matrix
    pet_row, background_row, border_row = matrix.split("<th scope='row'>")[1:]
    assert [cell.split(">")[-1] for cell in pet_row.split("</td>")[:-1]] == ["1.00", "0.00", "0.00", "0.00"]
    assert [cell.split(">")[-1] for cell in background_row.split("</td>")[:-1]] == ["0.25", "0.75", "0.00", "0.00"]
    assert "title='30 pixels'>0.75<" in background_row and border_row.count("<td class='none'>-</td>") == 4
    assert page.index("confusion matrix") < page.index("Worst 3 images")
    # Readable on a phone: the page sets its width to the device's, an image's panels wrap (no grid table wider
    # than the screen), and every panel is a figure naming its column, since no header row stays in sight.
    assert "<meta name='viewport' content='width=device-width, initial-scale=1'>" in page
    assert "<table>" not in page and page.count("<div class='panels'>") == 6
    for title in report.TITLES:
        assert page.count(f"<figcaption>{title}") == 6, title
    assert "<figcaption>True Mask (not available)</figcaption>" in page  # no --ground_truth given
    assert all(image["alt"].startswith("img") for image in parser.images), parser.images


def test_report_png_carries_the_metrics_and_the_confusion_matrix(tmp_path):
    out = tmp_path / "out"
    _inference_output(out, 4, per_image=[_scores(i) for i in range(4)])
    evaluation = json.loads((out / "evaluation.json").read_text())
    rows, total, note = report.collect_rows(str(out), PET, None, 2, evaluation)
    bare = Image.open(io.BytesIO(report.grid_png(rows, PET, total)))
    full = Image.open(io.BytesIO(report.grid_png(rows, PET, total, evaluation, note)))
    assert full.height > bare.height + 3 * report.figures.CELL
    pixels = np.asarray(full.convert("RGB"))
    # The matrix's pet row is all pet (share 1.0: the darkest cell colour), its background row 3/4 background.
    for share in (1.0, 0.75):
        colour = report.figures._colour(share)
        assert (pixels.reshape(-1, 3) == colour).all(axis=1).sum() >= 400, share
    # Text above the title row that the bare picture does not have: the metrics lines.
    header = pixels[: full.height - bare.height]
    assert (header < 128).all(axis=2).any(axis=1).sum() > 3 * 8


def test_report_without_evaluation_shows_the_first_images_by_name_and_says_so(tmp_path):
    out = tmp_path / "out"
    _inference_output(out, 5)
    (out / "evaluation.json").unlink()
    report.write_report(str(out), "pet", max_images=2)
    page = (out / "report.html").read_text()
    _checked(page)
    assert "img00 (0 instances)</code>" in page and "img01 (1 instance)</code>" in page and "img02" not in page
    assert "First 2 images by name" in page and "OUT/evaluation.json not found" in page
    assert "confusion matrix" not in page and "mIoU" not in page.split("<h2>")[0].split("</style>")[1]


def test_report_help_answers_in_under_a_second_without_numpy_pil_or_beam():
    found = probe.run_module(
        "pipelines.evaluate.report", ["--help"], watched=("numpy", "PIL", "apache_beam", "tensorflow")
    )
    assert found.stdout.startswith("usage: python -m pipelines.evaluate.report "), found.stdout[:300]
    assert found.loaded == "[]" and found.seconds < 1.0, found
