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
