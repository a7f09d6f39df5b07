"""The networks build at any valid size, train a step, and refuse sizes their stride cannot take; pretrained
encoder weights load from a local file or Keras' cache, and fail in one line (no network: nothing downloads)."""

import numpy as np
import pytest
import tf_keras as keras

from tests.fixtures.model import save_random_notop
from trainer import losses, models, normalization
from trainer.models import deeplabv3plus, fcn8s, mobilenetv2_unet


@pytest.mark.parametrize(
    "name,size,kw",
    [
        ("unet", (32, 48), dict(base_filters=4, depth=2)),
        ("fcn8s", (32, 64), dict(base_filters=2)),
        ("mobilenetv2_unet", (32, 64), dict(base_filters=4, alpha=0.35)),
        ("deeplabv3plus", (32, 48), dict(base_filters=4)),
    ],
)
@pytest.mark.slow
def test_builds_and_trains_one_step(name, size, kw):
    model = models.build_model(name, (*size, 3), 5, **kw)
    assert model.output_shape == (None, *size, 5)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=losses.SegmentationLoss("ce_dice"), jit_compile=False)
    x = np.random.default_rng(0).normal(size=(2, *size, 3)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 5, size=(2, *size))
    y[0, 0, :] = 255
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_unet_depth_and_width():
    assert models.build_model("unet", (16, 16, 3), 3, base_filters=2, depth=4).output_shape == (None, 16, 16, 3)
    model = models.build_model("unet", (32, 32, 3), 3, base_filters=4, depth=3)
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    ups = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2DTranspose)]
    assert len(pools) == len(ups) == 3
    assert model.get_layer("bottleneck_conv2").filters == 4 * 2**3


@pytest.mark.parametrize(
    "name,size,kw,stride",
    [("unet", (30, 32), dict(depth=2), 4), ("fcn8s", (48, 64), {}, 32), ("deeplabv3plus", (40, 48), {}, 16)],
)
def test_rejects_sizes_off_the_stride(name, size, kw, stride):
    with pytest.raises(ValueError, match=f"multiples of {stride}"):
        models.build_model(name, (*size, 3), 3, base_filters=2, **kw)


def test_fcn8s_upsampling_starts_bilinear():
    kernel = fcn8s.bilinear_kernel(4, 1)[:, :, 0, 0]
    np.testing.assert_allclose(kernel[1:3, 1:3], [[0.5625, 0.5625], [0.5625, 0.5625]])
    layer = keras.layers.Conv2DTranspose(
        2, 4, strides=2, padding="same", use_bias=False, kernel_initializer=fcn8s.BilinearInitializer()
    )
    ramp = np.tile(np.arange(8, dtype=np.float32), (8, 1))[None, :, :, None].repeat(2, -1)
    up = layer(ramp).numpy()[0, :, :, 0]
    # Interior of a linear ramp stays linear after bilinear 2x upsampling: constant steps of 0.5.
    np.testing.assert_allclose(np.diff(up[4, 2:-3]), 0.5, atol=1e-5)
    model = models.build_model("fcn8s", (32, 32, 3), 3, base_filters=2)
    assert not model.get_layer("score_pool4").get_weights()[0].any()


def test_backbone_weights_only_for_pretrainable_encoders():
    with pytest.raises(ValueError, match="fcn8s"):
        models.build_model("unet", (32, 32, 3), 3, base_filters=2, depth=2, backbone_weights="vgg.h5")


# ------------------------------------------------------------------------------------------------ DeepLabV3+
def test_deeplabv3plus_is_atrous_with_aspp_rates_for_its_feature_map():
    # The paper's rates at its own scale (33x33 features); scaled to a 128-pixel input's 8x8 ones.
    assert deeplabv3plus.aspp_rates(33) == (6, 12, 18)
    assert deeplabv3plus.aspp_rates(8) == (1, 3, 4)
    model = models.build_model("deeplabv3plus", (128, 128, 3), 3, base_filters=2)
    logits = model(np.zeros((2, 128, 128, 3), np.float32), training=False)
    assert logits.shape == (2, 128, 128, 3) and logits.dtype == "float32"
    atrous = [model.get_layer(f"aspp_atrous{i}_conv") for i in (1, 2, 3)]
    assert [(c.kernel_size, c.dilation_rate) for c in atrous] == [((3, 3), (r, r)) for r in (1, 3, 4)]
    assert model.get_layer("aspp_pool").output.shape[1:3] == (1, 1)  # the image-level branch
    assert model.get_layer("aspp_concat").output.shape[1:] == (8, 8, 5 * 16)  # output stride 16, 5 branches
    # The last stage dilates instead of striding: every conv in it keeps the 8x8 map.
    last = [
        layer for layer in model.layers if layer.name.startswith("stage4_") and isinstance(layer, keras.layers.Conv2D)
    ]
    assert last and all(c.strides == (1, 1) and c.dilation_rate == (2, 2) for c in last)
    assert all(c.output.shape[1:3] == (8, 8) for c in last)
    # The decoder joins the ASPP output upsampled x4 with the stride-4 features (1.5 x base_filters channels).
    assert model.get_layer("decoder_concat").output.shape[1:] == (32, 32, 16 + 3)
    assert models.output_stride("deeplabv3plus") == 2 * int(np.prod([s for _, s, _ in deeplabv3plus.ENCODER_STAGES]))
    assert (
        models.input_convention("deeplabv3plus", None) == "tft" and models.encoder_layers(model, "deeplabv3plus") == []
    )
    with pytest.raises(ValueError, match="deeplabv3plus trains from scratch"):
        models.build_model("deeplabv3plus", (32, 32, 3), 3, backbone_weights="imagenet")


# ------------------------------------------------------------------------------------------ MobileNetV2 U-Net
def test_mobilenetv2_unet_taps_the_tutorials_activations():
    model = models.build_model("mobilenetv2_unet", (64, 64, 3), 3, base_filters=4, alpha=0.35)
    encoder = model.get_layer(mobilenetv2_unet.ENCODER_NAME)
    # Strides 2, 4, 8, 16, 32 of a 64x64 input.
    assert [tuple(o.shape[1:3]) for o in encoder.outputs] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    assert [t.node.layer.name for t in encoder.outputs] == list(mobilenetv2_unet.ENCODER_TAPS)
    ups = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2DTranspose)]
    assert [u.filters for u in ups] == [32, 16, 8, 4, 3]  # base_filters x 8, 4, 2, 1; then the classes
    assert models.encoder_layers(model, "mobilenetv2_unet") == [encoder]
    # MobileNetV2's own 0.999 left short runs validating on their first steps' statistics (bench: 0.41 vs 0.78).
    assert {layer.momentum for layer in encoder.layers if isinstance(layer, keras.layers.BatchNormalization)} == {0.9}
    with pytest.raises(ValueError, match="multiples of 32"):
        models.build_model("mobilenetv2_unet", (48, 48, 3), 3, alpha=0.35)


# ---------------------------------------------------------------------------------------- pretrained weights
def _assert_encoder_is(network, source, names):
    compared = 0
    for layer in source.layers:
        if layer.weights and layer.name in names:
            for got, want in zip(network.get_layer(layer.name).get_weights(), layer.get_weights()):
                np.testing.assert_array_equal(got, want)
            compared += 1
    assert compared >= 5


def test_mobilenetv2_weights_load_from_a_path_and_from_the_keras_cache(tmp_path, monkeypatch):
    path, source = save_random_notop("mobilenetv2", tmp_path)
    assert path.name == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    network = models.build_model(
        "mobilenetv2_unet", (32, 32, 3), 3, base_filters=4, alpha=0.35, backbone_weights=str(path)
    )
    encoder = network.get_layer(mobilenetv2_unet.ENCODER_NAME)
    _assert_encoder_is(encoder, source, {layer.name for layer in encoder.layers})
    # imagenet: Keras' own cache lookup (~/.keras/models; MobileNetV2's entry has no hash to verify) finds it.
    home = tmp_path / "home"
    (home / ".keras" / "models").mkdir(parents=True)
    path.rename(home / ".keras" / "models" / path.name)
    monkeypatch.setenv("HOME", str(home))
    network = models.build_model(
        "mobilenetv2_unet", (32, 32, 3), 3, base_filters=4, alpha=0.35, backbone_weights="imagenet"
    )
    encoder = network.get_layer(mobilenetv2_unet.ENCODER_NAME)
    _assert_encoder_is(encoder, source, {layer.name for layer in encoder.layers})


def test_vgg16_weights_load_from_a_path(tmp_path):
    """PATH only: Keras verifies the ImageNet VGG16 file's hash, so a random file in the cache is not accepted
    (it would try to download the real one)."""
    path, source = save_random_notop("vgg16", tmp_path)
    assert path.name == "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    network = models.build_model("fcn8s", (32, 32, 3), 3, backbone_weights=str(path))
    _assert_encoder_is(network, source, {layer.name for layer in source.layers if layer.name.startswith("block")})
    assert {layer.name for layer in models.encoder_layers(network, "fcn8s")} == {
        layer.name for layer in source.layers if layer.name.startswith("block") and "pool" not in layer.name
    } | {f"block{b}_pool" for b in range(1, 6)}


def test_missing_or_foreign_weights_file_is_one_line(tmp_path):
    with pytest.raises(models.BackboneWeightsError) as e:
        models.build_model("mobilenetv2_unet", (32, 32, 3), 3, alpha=0.35, backbone_weights=str(tmp_path / "x.h5"))
    line = str(e.value)
    assert "\n" not in line and "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5" in line
    assert "--backbone_weights PATH" in line and "x.h5" in line
    path, _ = save_random_notop("mobilenetv2", tmp_path)  # alpha 0.35 weights into an alpha 0.5 network
    with pytest.raises(models.BackboneWeightsError) as e:
        models.build_model("mobilenetv2_unet", (32, 32, 3), 3, alpha=0.5, backbone_weights=str(path))
    assert "\n" not in str(e.value) and "0.5_224_no_top.h5" in str(e.value)


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    """Keras' download fails (origin: a closed loopback port, so the test never reaches the internet)."""
    from tf_keras.src.applications import mobilenet_v2

    home = tmp_path / "home"
    (home / ".keras").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(mobilenet_v2, "BASE_WEIGHT_PATH", "http://127.0.0.1:9/")
    with pytest.raises(models.BackboneWeightsError) as e:
        models.build_model(
            "mobilenetv2_unet", (128, 128, 3), 3, base_filters=4, alpha=0.35, backbone_weights="imagenet"
        )
    line = str(e.value)
    assert "\n" not in line and "could not get the ImageNet mobilenetv2 weights" in line
    assert (
        "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_128_no_top.h5" in line
    )
    assert "--backbone_weights PATH" in line


@pytest.mark.parametrize("convention,application", [("mobilenetv2", "mobilenet_v2"), ("vgg16", "vgg16")])
def test_encoder_input_convention_is_keras_preprocess_input(convention, application):
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype(np.uint8)
    want = getattr(keras.applications, application).preprocess_input(images.astype(np.float32))
    got = normalization.EncoderInputConvention(convention)(images).numpy()
    np.testing.assert_array_equal(got, want)
    assert models.input_convention("fcn8s", "imagenet") == "vgg16"
    assert models.input_convention("mobilenetv2_unet", "w.h5") == "mobilenetv2"
    assert models.input_convention("mobilenetv2_unet", "none") == models.input_convention("unet", None) == "tft"
