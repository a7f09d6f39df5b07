"""``pipelines.evaluate.report`` as a user reads it: a colour legend, how many images are shown, singular counts,
classes in class-id order."""

import json

import numpy as np
from PIL import Image

from pipelines.common import storage
from pipelines.evaluate import report
from pipelines.infer import outputs
from schemas.labels import spec_for

PET = spec_for("pet", "trimap")


def _inference_output(out, images: int) -> None:
    """What pipelines.infer leaves in OUT for ``images`` images: masks, colour masks, instance-id maps (image i
    has i instances), summary.json; and an evaluation.json as pipelines.evaluate writes it (sorted keys)."""
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
    storage.write_json(
        str(out / "evaluation.json"),
        {
            "class_names": list(PET.class_names),
            "images": images,
            "mean_iou": 0.5,
            "pixel_accuracy": 0.75,
            "per_class_iou": {"pet": 0.9, "background": 0.6, "border": None},
        },
    )


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
    legend = page[page.index("class='legend'") : page.index("<th>Input Image")]
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
