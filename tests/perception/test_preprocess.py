"""The one preprocessing function: encodings, centre crop, area-averaging resize, errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from perception.preprocess import to_model_image


def camera(h=480, w=640, seed=0):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return cv2.GaussianBlur(img, (0, 0), 2)


def test_model_size_input_is_returned_unchanged():
    img = camera(64, 64)
    out = to_model_image(img, 64)
    np.testing.assert_array_equal(out, img)
    assert out.flags.c_contiguous


@pytest.mark.parametrize("size", [64, 84, 128])
def test_downscale_matches_area_averaging_of_the_centre_square(size):
    img = camera()
    out = to_model_image(img, size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    ref = cv2.resize(img[:, 80:560], (size, size), interpolation=cv2.INTER_AREA).astype(int)
    diff = np.abs(out.astype(int) - ref)
    assert diff.mean() < 0.5 and diff.max() <= 2


def test_encodings_become_rgb():
    rgb = camera(96, 96)
    bgr = rgb[:, :, ::-1].copy()
    np.testing.assert_array_equal(to_model_image(bgr, 48, "bgr8"), to_model_image(rgb, 48, "rgb8"))
    mono = rgb[:, :, 0].copy()
    out = to_model_image(mono, 48, "mono8")
    assert out.shape == (48, 48, 3) and np.array_equal(out[..., 0], out[..., 2])
    rgba = np.concatenate([rgb, np.full((96, 96, 1), 255, np.uint8)], -1)
    np.testing.assert_array_equal(to_model_image(rgba, 48, "rgba8"), to_model_image(rgb, 48))


def test_centre_crop_keeps_the_middle():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 50:150] = 200  # the centred square is bright, the sides dark
    assert to_model_image(img, 32).min() == 200
    assert to_model_image(img, 32, crop="none").min() == 0


def test_upscale():
    assert to_model_image(camera(32, 32), 64).shape == (64, 64, 3)


@pytest.mark.parametrize("image,encoding,match", [
    (np.zeros((8, 8, 3), np.float32), "rgb8", "uint8"),
    (np.zeros((8, 8), np.uint8), "rgb8", "does not match encoding"),
    (np.zeros((8, 8, 3), np.uint8), "mono8", "does not match encoding"),
    (np.zeros((0, 8, 3), np.uint8), "rgb8", "zero size"),
    (np.zeros((8, 8, 3), np.uint8), "yuv422", "unsupported image encoding"),
])
def test_bad_images_raise_one_line_errors(image, encoding, match):
    with pytest.raises(ValueError, match=match):
        to_model_image(image, 16, encoding)
