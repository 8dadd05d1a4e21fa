import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from sgmft.data.images import ImageError, ImagePreprocess, decode_image, load_image


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_rgb_jpeg_roundtrip():
    image = decode_image(encode(Image.new("RGB", (40, 30), (10, 200, 30)), "JPEG"))
    assert image.mode == "RGB" and image.size == (40, 30)


def test_exif_orientation_applied():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode_image(encode(image, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (20, 40)


@pytest.mark.parametrize("mode, color", [("L", 128), ("LA", (128, 255)), ("CMYK", (0, 255, 255, 0)),
                                         ("I;16", 40000), ("1", 1)])
def test_modes_converted_to_rgb(mode, color):
    fmt = {"CMYK": "JPEG", "I;16": "PNG"}.get(mode, "PNG")
    decoded = decode_image(encode(Image.new(mode, (8, 8), color), fmt))
    assert decoded.mode == "RGB"


def test_rgba_transparency_composited_on_white():
    decoded = decode_image(encode(Image.new("RGBA", (4, 4), (255, 0, 0, 0)), "PNG"))
    assert decoded.getpixel((0, 0)) == (255, 255, 255)
    opaque = decode_image(encode(Image.new("RGBA", (4, 4), (255, 0, 0, 255)), "PNG"))
    assert opaque.getpixel((0, 0)) == (255, 0, 0)


def test_palette_image_converted():
    decoded = decode_image(encode(Image.new("RGB", (4, 4), (0, 0, 255)).convert("P"), "PNG"))
    assert decoded.getpixel((1, 1)) == (0, 0, 255)


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    decoded = decode_image(buffer.getvalue())
    red, green, blue = decoded.getpixel((4, 4))
    assert red > 200 and green < 50 and blue < 50


def test_truncated_file_rejected():
    data = encode(Image.effect_noise((256, 256), 50).convert("RGB"), "JPEG")
    with pytest.raises(ImageError, match="truncated"):
        decode_image(data[: len(data) // 2])


def test_not_an_image_rejected():
    with pytest.raises(ImageError, match="not an image"):
        decode_image(b"this is a text file, not a picture")


def test_decompression_bomb_refused_before_decoding():
    data = encode(Image.new("L", (3000, 3000)), "PNG")
    with pytest.raises(ImageError, match="decompression bomb"):
        decode_image(data, max_pixels=1_000_000)


def test_load_image_missing_and_empty(tmp_path):
    with pytest.raises(ImageError, match="missing image"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "empty.jpg")


def test_preprocess_resizes_straight_to_square_and_normalises():
    prep = ImagePreprocess(size=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    out = prep(Image.new("RGB", (10, 3), (255, 0, 127)))
    assert out.shape == (3, 4, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(out[1], -1.0, atol=1e-6)
    np.testing.assert_allclose(out[2], 127 / 255 * 2 - 1, atol=1e-2)
    assert prep.batch([Image.new("RGB", (5, 5))] * 3).shape == (3, 3, 4, 4)


def test_only_regular_files_are_read(tmp_path):
    import os
    import threading

    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    (tmp_path / "folder.jpg").mkdir()
    done = threading.Event()

    def attempt():   # a FIFO must be refused without opening it (opening would block forever)
        for name, fragment in (("pipe.jpg", "FIFO"), ("zero.jpg", "device"), ("folder.jpg", "directory")):
            with pytest.raises(ImageError, match=fragment):
                load_image(tmp_path / name)
        done.set()

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(5)
    assert done.is_set()
    with pytest.raises(ImageError, match="null byte"):
        load_image(str(tmp_path / "a\x00b.jpg"))


def test_size_cap_is_read_before_the_file(tmp_path, monkeypatch):
    from sgmft.data import images
    from sgmft.limits import LIMITS

    path = tmp_path / "big.png"
    path.write_bytes(encode(Image.new("RGB", (64, 64)), "PNG"))
    monkeypatch.setattr(images, "LIMITS", replace(LIMITS, image_bytes=10))
    with pytest.raises(ImageError, match="exceeds the limit of 10 bytes"):
        load_image(path)


def test_a_webp_with_corrupt_exif_decodes_as_stored():
    """Once ``SyntaxError: not a TIFF file`` from the EXIF transpose, outside any try."""
    data = encode(Image.new("RGB", (16, 12), (10, 200, 30)), "WEBP", exif=b"Exif\x00\x00garbage-not-tiff")
    decoded = decode_image(data)
    assert decoded.size == (16, 12) and decoded.mode == "RGB"


def test_corrupt_avif_files_are_image_errors():
    """Once ``RuntimeError: Failed to decode image`` ended the command: every corruption of an
    AVIF's tail is either decoded or an `ImageError`, nothing else."""
    pytest.importorskip("PIL.AvifImagePlugin")
    valid = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "AVIF")
    kinds = set()
    for start in range(len(valid) - 60, len(valid)):
        corrupt = bytearray(valid)
        for i in range(start, len(valid)):
            corrupt[i] ^= 0xFF
        try:
            decode_image(bytes(corrupt))
            kinds.add("decoded")
        except ImageError as exc:
            kinds.add(str(exc).split(":")[0])
    assert kinds & {"unreadable image"}                   # the decoder's own failure among them


def test_a_path_too_long_for_the_file_system_is_an_image_error(tmp_path):
    from sgmft.data.images import read_image_bytes

    with pytest.raises(ImageError, match="unreadable image"):
        read_image_bytes(tmp_path / ("x" * 5000 + ".jpg"))


@pytest.mark.parametrize("where", ["header", "pixels"])
def test_a_corrupt_avif_is_an_image_error_not_a_crash(tmp_path, where):
    from sgmft.data.images import header_pixels
    from tests.serving.test_app_hostile import corrupt_avif

    path = tmp_path / "x.avif"
    path.write_bytes(corrupt_avif(where))
    assert header_pixels(path) in (0, 256)            # 0 when the header itself fails
    with pytest.raises(ImageError, match=r"corrupt|not an image"):
        load_image(path)


def test_image_errors_name_no_python_exception_and_quote_sgmfts_own_pixel_limit():
    from PIL import Image

    from sgmft.data.images import ImageError, decode_image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, "PNG")
    for data, words, limit in ((buffer.getvalue()[:90], "truncated", 10_000),
                               (b"plain text, no image", "not an image", 10_000),
                               (buffer.getvalue(), "limit of 1,000", 1000)):
        with pytest.raises(ImageError) as caught:
            decode_image(data, max_pixels=limit)
        message = str(caught.value)
        assert words in message and "Error" not in message and "not processed" not in message, message
