"""Both networks build at any valid size, train a step, and refuse sizes their stride cannot take."""
import numpy as np
import pytest
import tf_keras as keras

from trainer import losses, models
from trainer.models import fcn8s


@pytest.mark.parametrize("name,size,kw", [
    ("unet", (32, 48), dict(base_filters=4, depth=2)),
    ("fcn8s", (32, 64), dict(base_filters=2)),
])
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
    assert model.get_layer("bottleneck_conv2").filters == 4 * 2 ** 3


@pytest.mark.parametrize("name,size,kw,stride", [("unet", (30, 32), dict(depth=2), 4), ("fcn8s", (48, 64), {}, 32)])
def test_rejects_sizes_off_the_stride(name, size, kw, stride):
    with pytest.raises(ValueError, match=f"multiples of {stride}"):
        models.build_model(name, (*size, 3), 3, base_filters=2, **kw)


def test_fcn8s_upsampling_starts_bilinear():
    kernel = fcn8s.bilinear_kernel(4, 1)[:, :, 0, 0]
    np.testing.assert_allclose(kernel[1:3, 1:3], [[0.5625, 0.5625], [0.5625, 0.5625]])
    layer = keras.layers.Conv2DTranspose(2, 4, strides=2, padding="same", use_bias=False,
                                         kernel_initializer=fcn8s.BilinearInitializer())
    ramp = np.tile(np.arange(8, dtype=np.float32), (8, 1))[None, :, :, None].repeat(2, -1)
    up = layer(ramp).numpy()[0, :, :, 0]
    # Interior of a linear ramp stays linear after bilinear 2x upsampling: constant steps of 0.5.
    np.testing.assert_allclose(np.diff(up[4, 2:-3]), 0.5, atol=1e-5)
    model = models.build_model("fcn8s", (32, 32, 3), 3, base_filters=2)
    assert not model.get_layer("score_pool4").get_weights()[0].any()


def test_backbone_weights_only_for_fcn8s():
    with pytest.raises(ValueError, match="fcn8s"):
        models.build_model("unet", (32, 32, 3), 3, base_filters=2, depth=2, backbone_weights="vgg.h5")
