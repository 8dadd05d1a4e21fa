"""The server under hostile input: bounded memory, an event loop that never blocks on images,
and a server that stays healthy after any error; plus a fuzz of the upload endpoint."""

import io
import threading
import time

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from sgmft.limits import LIMITS
from sgmft.serving.app import create_app
from tests.data.test_manifest_fuzz import AWKWARD


def png(size, color=0) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, color).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor=predictor)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    return png((8000, 8000))            # 64 megapixels, a few dozen KB on the wire


def test_a_pixel_bomb_batch_is_refused_from_headers_and_the_server_stays_well(client, huge_png):
    files = [("image", (f"{i}.png", huge_png, "image/png")) for i in range(40)]
    response = client.post("/predict/batch", data={"text": ["x"] * 40}, files=files)
    assert response.status_code == 413 and "pixels together" in response.json()["detail"]
    assert client.post("/predict", data={"text": "在家"},
                       files={"image": ("a.png", png((40, 30), 128), "image/png")}).status_code == 200
    assert client.get("/health").json()["status"] == "ok"


def corrupt_avif(where: str) -> bytes:
    """A 16 x 16 AVIF whose decoder fails with a RuntimeError, at open ("header") or at decoding."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buffer, format="AVIF")
    data = bytearray(buffer.getvalue())
    if where == "header":
        data[81] = 0                                   # "Missing or empty image item"
        return bytes(data)
    return bytes(data[:289]) + bytes(len(data) - 289)


@pytest.mark.parametrize("where", ["header", "pixels"])
def test_a_corrupt_avif_is_that_posts_4xx(client, where):
    bad = corrupt_avif(where)
    with pytest.raises(RuntimeError):
        Image.open(io.BytesIO(bad)).load()             # what Pillow does with it
    one = client.post("/predict", files={"image": ("x.avif", bad, "image/avif")})
    assert one.status_code == 400 and "Traceback" not in one.text
    good = png((40, 30), 128)
    files = [("image", ("a.png", good, "image/png")), ("image", ("x.avif", bad, "image/avif")),
             ("image", ("b.png", good, "image/png"))]
    batch = client.post("/predict/batch", data={"text": ["在家", "上班", "吃饭"]}, files=files)
    assert batch.status_code == 200, batch.text
    answers = batch.json()["predictions"]
    assert [("error" in a) for a in answers] == [False, True, False] and answers[1]["status"] == 400
    assert client.get("/health").json()["status"] == "ok"


def test_large_images_decode_off_the_event_loop(client, huge_png):
    """While a 64-megapixel image decodes, /health still answers at once."""
    done = threading.Event()

    def upload():
        client.post("/predict", files={"image": ("big.png", huge_png, "image/png")})
        done.set()

    worker = threading.Thread(target=upload)
    worker.start()
    time.sleep(0.05)
    started = time.perf_counter()
    assert client.get("/health").status_code == 200
    waited = time.perf_counter() - started
    worker.join(60)
    assert done.is_set() and waited < 0.5


def test_limits_on_rows_and_text(client):
    rows = LIMITS.batch_rows + 1
    assert client.post("/predict/batch", data={"text": ["a"] * rows}).status_code == 413
    long_text = "字" * (LIMITS.text_chars + 1)
    response = client.post("/predict", data={"text": long_text})
    assert response.status_code == 413 and "characters exceeds" in response.json()["detail"]
    batch = client.post("/predict/batch", data={"text": ["在家", long_text]}).json()["predictions"]
    assert "label" in batch[0] and batch[1]["status"] == 413


def test_health_reveals_no_paths(client, predictor):
    body = client.get("/health").text
    assert str(predictor.run.folder) not in body and "/" not in body.replace("/predict", "")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048), content_type=st.sampled_from(["image/png", "image/jpeg", "text/plain",
                                                                   "application/octet-stream", ""]),
       text=st.one_of(st.none(), st.lists(st.one_of(st.text(max_size=20), AWKWARD), max_size=5).map("".join)))
def test_uploads_of_anything_get_an_answer_never_a_server_error(client, data, content_type, text):
    sendable = None if text is None else text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    form = {} if sendable is None else {"text": sendable}
    response = client.post("/predict", data=form, files={"image": ("x", data, content_type)})
    assert response.status_code in (200, 400, 413, 415), response.text


def post_streamed(client, pieces: int):
    """POST /predict an image part of ``pieces`` x 10 kB, streamed without a Content-Length."""
    def chunks():
        yield (b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
               b"Content-Type: image/png\r\n\r\n")
        for _ in range(pieces):
            yield b"\0" * 10_000

    return client.post("/predict", content=chunks(),
                       headers={"content-type": "multipart/form-data; boundary=x"})


def test_a_body_over_the_limit_is_refused_before_it_is_stored(predictor, monkeypatch):
    """Once a 1 GiB upload filled the temp folder before its 413: the body limit answers from
    the Content-Length before the form parser runs, or, for a body streamed without one, as
    soon as the bytes received pass the limit."""
    from starlette import formparsers

    stored = []
    real = formparsers.SpooledTemporaryFile

    def spooled(*args, **kwargs):
        stored.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(formparsers, "SpooledTemporaryFile", spooled)
    with TestClient(create_app(predictor=predictor, max_request_bytes=100_000)) as client:
        big = ("x.png", b"\x89PNG" + b"\0" * 300_000, "image/png")
        refused = client.post("/predict", files={"image": big})
        assert refused.status_code == 413 and "request body exceeds" in refused.json()["detail"]
        assert stored == []

        streamed = post_streamed(client, 50)
        assert streamed.status_code == 413
        assert client.post("/predict", data={"text": "在家"}).status_code == 200


def test_corrupt_images_in_a_batch_fail_alone(client):
    """A WebP with corrupt EXIF (once a 500 from the EXIF transpose) and a corrupt AVIF (once a
    500 from its decoder) among good posts: the good posts are answered."""
    webp = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 90, 200)).save(webp, "WEBP", exif=b"Exif\0\0garbage-not-tiff")
    files = [("image", ("a.webp", webp.getvalue(), "image/webp"))]
    try:
        avif = io.BytesIO()
        Image.new("RGB", (64, 64), (1, 2, 3)).save(avif, "AVIF")
        corrupt = bytearray(avif.getvalue())
        for i in range(len(corrupt) - 48, len(corrupt)):
            corrupt[i] ^= 0xFF
        files.append(("image", ("b.avif", bytes(corrupt), "image/avif")))
    except (KeyError, OSError):   # a Pillow without AVIF
        pass
    files.append(("image", ("c.png", png((32, 32), 90), "image/png")))
    response = client.post("/predict/batch", data={"text": ["在家"] * len(files)}, files=files)
    assert response.status_code == 200, response.text
    results = response.json()["predictions"]
    assert "label" in results[0] and "label" in results[-1]
    assert all("label" in r or r["status"] in (400, 413) for r in results)


def test_small_requests_go_before_the_rest_of_a_big_one():
    """The queue serves posts by their request's size: a single post that arrives while a batch
    of 64 is being predicted goes into the very next pass, not after the rest of the batch."""
    import asyncio

    from sgmft.serving.app import MicroBatcher
    from sgmft.serving.predictor import PostInput

    order, first_pass, release = [], threading.Event(), threading.Event()

    class Recorder:
        def predict(self, posts):
            order.append([p.text for p in posts])
            if len(order) == 1:
                first_pass.set()
                release.wait(10)          # the first pass holds until the single post is queued
            return [p.text for p in posts]

    async def scenario():
        batcher = MicroBatcher(Recorder(), max_batch=8)
        await batcher.start()
        big = [asyncio.create_task(batcher.predict(PostInput(f"big{i}"), 64)) for i in range(64)]
        while not first_pass.is_set():
            await asyncio.sleep(0.001)
        single = asyncio.create_task(batcher.predict(PostInput("single"), 1))
        await asyncio.sleep(0.01)        # queued behind the running pass
        release.set()
        results = await asyncio.gather(single, *big)
        await batcher.stop()
        return results

    assert asyncio.run(scenario())[0] == "single"
    assert len(order[0]) == 8 and order[1][0] == "single"       # the very next pass, first


def test_the_body_limit_of_one_post_follows_the_upload_limit(predictor, monkeypatch):
    """An upload between --max-upload-mb and the request limit (64 MiB) was spooled to disk in
    full before its 413: /predict's body limit is the upload limit (and a text's room)."""
    from starlette import formparsers

    stored = []
    real = formparsers.SpooledTemporaryFile
    monkeypatch.setattr(formparsers, "SpooledTemporaryFile",
                        lambda *args, **kwargs: stored.append(1) or real(*args, **kwargs))
    with TestClient(create_app(predictor=predictor, max_upload_bytes=50_000)) as client:
        big = ("x.png", b"\x89PNG" + b"\0" * 400_000, "image/png")
        refused = client.post("/predict", files={"image": big})
        assert refused.status_code == 413 and "--max-upload-mb" in refused.json()["detail"]

        streamed = post_streamed(client, 60)
        assert streamed.status_code == 413 and stored == []


def test_an_unexpected_error_is_a_clean_500_that_closes_its_connection(predictor, monkeypatch):
    with TestClient(create_app(predictor=predictor), raise_server_exceptions=False) as client:
        def broken(*args, **kwargs):
            raise RuntimeError("a bug")

        monkeypatch.setattr(predictor, "predict_features", broken)
        response = client.post("/predict", data={"text": "在家"})
        assert response.status_code == 500 and response.headers["connection"] == "close"
        assert "Traceback" not in response.text and "unexpected error" in response.json()["detail"]
        monkeypatch.undo()
        assert client.get("/health").json()["status"] == "ok"


def test_a_batch_of_large_images_does_not_hold_every_decoding_thread(predictor, monkeypatch):
    """A batch of 8 slow images decodes on at most half the pool: a lone request that comes
    while they decode starts decoding at once, not after them."""
    from sgmft.serving import app as app_module

    started, real = [], app_module._decode_and_resize

    def slow(data, max_pixels, predictor_):
        started.append(len(data))
        time.sleep(0.5)
        return real(data, max_pixels, predictor_)

    monkeypatch.setattr(app_module, "_decode_and_resize", slow)
    lone_png, batch_png = png((40, 30), 1), png((41, 30), 2)
    with TestClient(create_app(predictor=predictor, decode_workers=2)) as client:
        files = [("image", (f"{i}.png", batch_png, "image/png")) for i in range(8)]
        worker = threading.Thread(target=lambda: client.post("/predict/batch", files=files))
        worker.start()
        while len(started) < 1:
            time.sleep(0.01)
        assert client.post("/predict", files={"image": ("a.png", lone_png, "image/png")}).status_code == 200
        worker.join(60)
    lone = started.index(len(lone_png))
    assert lone <= 2 and len(started) == 9        # started beside the batch's first or second image


def test_predict_takes_one_image_and_a_bad_form_is_said_in_words(client):
    small = png((20, 20), 90)
    two = client.post("/predict", files=[("image", ("a.png", small, "image/png")),
                                         ("image", ("b.png", small, "image/png"))])
    assert two.status_code == 400 and "/predict/batch" in two.json()["detail"]
    long_name = client.post("/predict", files={"image": ("x" * 5000 + ".png", small, "image/png")})
    assert long_name.status_code == 400 and "header is longer" in long_name.json()["detail"]
    bomb = client.post("/predict", files={"image": ("b.png", png((9000, 9000)), "image/png")})
    assert bomb.status_code == 413 and "sgmft's limit of 64,000,000" in bomb.json()["detail"]
    damaged = client.post("/predict", files={"image": ("d.png", small[:40], "image/png")})
    assert damaged.status_code == 400 and "Error" not in damaged.json()["detail"]
    assert client.get("/health").json()["status"] == "ok"
