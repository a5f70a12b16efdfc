"""Load any supported image as 8-bit RGB, turn it into a tensor, fit it to a bucket, vary its colours."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_WHITE = (255, 255, 255)


def _sixteen_bit_to_l(img: Image.Image) -> Image.Image:
    # PIL's convert("L") clips 16-bit values at 255 (mid-gray becomes white): scale 0..65535 to 0..255 instead.
    # Mode "I" is what 16-bit grayscale PNG/TIFF open as in some PIL versions, so it gets the 16-bit range too.
    values = np.asarray(img).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), mode="L")


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)


def _on_white(img: Image.Image) -> Image.Image:
    # Transparent areas are usually "no background": white matches how viewers show them; black would teach
    # the model dark halos.
    background = Image.new("RGBA", img.size, _WHITE + (255,))
    return Image.alpha_composite(background, img.convert("RGBA")).convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (alpha on white, 16-bit scaled, CMYK/palette/gray converted)."""
    if img.mode in _SIXTEEN_BIT_MODES:
        img = _sixteen_bit_to_l(img)
    if _has_alpha(img):
        return _on_white(img)
    return img if img.mode == "RGB" else img.convert("RGB")


def load_image_rgb(path: Path) -> Image.Image:
    """Open an image upright (EXIF orientation applied) as 8-bit RGB."""
    with Image.open(path) as img:
        upright = ImageOps.exif_transpose(img)
        return to_rgb(upright)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB image -> float32 CHW tensor in [-1, 1] (the VAE's input range)."""
    array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def resize_and_crop(img: Image.Image, bucket: tuple[int, int], random_crop: bool = False,
                    rng: random.Random | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Scale to cover the bucket (w, h) keeping aspect, then crop to it. Returns (image, (top, left))."""
    bucket_w, bucket_h = bucket
    original = img.size
    size = cover_size(original, bucket)
    if size != img.size:
        resample = Image.Resampling.LANCZOS if size[0] < img.size[0] else Image.Resampling.BICUBIC
        img = img.resize(size, resample=resample)
    spare_w, spare_h = size[0] - bucket_w, size[1] - bucket_h
    if random_crop:
        rng = rng or random.Random()
        top, left = rng.randint(0, spare_h), rng.randint(0, spare_w)
    else:
        top, left = center_crop_offset(original, bucket)
    return img.crop((left, top, left + bucket_w, top + bucket_h)), (top, left)


def cover_size(size: tuple[int, int], bucket: tuple[int, int]) -> tuple[int, int]:
    """The (w, h) an image of `size` is resized to so it covers the bucket, keeping its aspect."""
    (width, height), (bucket_w, bucket_h) = size, bucket
    scale = max(bucket_w / width, bucket_h / height)
    return max(bucket_w, int(width * scale + 0.5)), max(bucket_h, int(height * scale + 0.5))


def center_crop_offset(size: tuple[int, int], bucket: tuple[int, int]) -> tuple[int, int]:
    """(top, left) of the centred bucket crop of an image of `size` (w, h), after cover_size."""
    width, height = cover_size(size, bucket)
    return (height - bucket[1]) // 2, (width - bucket[0]) // 2


# sd-scripts' color_aug: a third of the samples change colour, half of those by hue, half by gamma.
COLOR_AUG_CHANCE = 0.33
HUE_SHIFT_DEGREES = 16.0  # sd-scripts shifts by up to 8 on OpenCV's 0-180 hue scale
GAMMA_RANGE = (0.95, 1.05)


def color_aug(img: Image.Image, rng: random.Random) -> Image.Image:
    """A small random colour change of some samples (sd-scripts' AugHelper.color_aug)."""
    if rng.random() > COLOR_AUG_CHANCE:
        return img
    if rng.random() > 0.5:
        return shift_hue(img, rng.uniform(-HUE_SHIFT_DEGREES, HUE_SHIFT_DEGREES))
    return apply_gamma(img, rng.uniform(*GAMMA_RANGE))


def shift_hue(img: Image.Image, degrees: float) -> Image.Image:
    """Rotate the hue; saturation and brightness stay (up to 8-bit HSV rounding)."""
    steps = round(degrees / 360 * 256)  # PIL's HSV hue runs 0..255 for a full turn
    hue, saturation, value = img.convert("HSV").split()
    hue = hue.point([(h + steps) % 256 for h in range(256)])
    return Image.merge("HSV", (hue, saturation, value)).convert("RGB")


def apply_gamma(img: Image.Image, gamma: float) -> Image.Image:
    # On 0..1 values, so black and white stay put; sd-scripts raises 0..255 values to the power, which
    # brightens far more than a gamma near 1 suggests.
    table = [round(255 * (v / 255) ** gamma) for v in range(256)]
    return img.point(table * 3)
