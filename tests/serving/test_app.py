"""The HTTP API through FastAPI's test client: every endpoint and every bad input."""

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from sgmft.serving.app import create_app


def png(size=(40, 30), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(predictor):
    app = create_app(predictor=predictor, max_upload_bytes=200_000, max_pixels=1_000_000)
    with TestClient(app) as test_client:
        yield test_client


def test_health_names_the_run_and_no_path(client, predictor):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["encoder"] == "use+effnet"
    run = health["run"]
    assert run["labels"] == predictor.labels and run["variant"] == "sg-mft" and len(run["id"]) == 12
    text = client.get("/health").text
    assert str(predictor.run.folder) not in text and "/tmp" not in text
    assert client.get("/labels").json() == predictor.labels
    about = client.get("/about").json()
    assert set(about["examples"]) == set(predictor.labels) and about["coverage"] is None   # no folds: no sets


def test_health_is_503_until_the_model_has_answered_a_warm_up_post(predictor, monkeypatch):
    seen = []
    real = predictor.predict

    def recording(posts, *args, **kwargs):
        seen.extend(p.text for p in posts)
        return real(posts, *args, **kwargs)

    monkeypatch.setattr(predictor, "predict", recording)
    app = create_app(predictor=predictor)
    assert TestClient(app).get("/health").status_code == 503       # no lifespan yet: not ready
    with TestClient(app) as ready:
        assert seen == ["warm up"]                                  # answered before serving
        assert ready.get("/health").status_code == 200


def test_openapi_and_page(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/predict/batch", "/health", "/labels"} <= set(paths)
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and 'id="answer"' in page.text and "/predict" in page.text
    assert "/about" in page.text and 'id="preview"' in page.text


def test_predict_text_and_image(client, predictor):
    response = client.post("/predict", data={"text": "今天在健身房跑步"},
                           files={"image": ("a.png", png(), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] in predictor.labels and set(body["probabilities"]) == set(predictor.labels)
    assert {"text_only", "image_only", "similarity_gate"} <= set(body["evidence"])


def test_predict_one_modality(client):
    text_only = client.post("/predict", data={"text": "在公司加班"})
    assert text_only.status_code == 200 and "no image" in text_only.json()["warnings"][0]
    image_only = client.post("/predict", files={"image": ("a.jpg", png(), "image/jpeg")})
    assert image_only.status_code == 200


@pytest.mark.parametrize("kwargs, status, message", [
    ({}, 400, "send a text, an image, or both"),
    ({"data": {"text": "   "}}, 400, "send a text, an image, or both"),
    ({"data": {"text": "[哈哈]"}}, 400, "non-empty after cleaning"),
    ({"files": {"image": ("a.txt", b"hello", "text/plain")}}, 415, "image/* content type"),
    ({"files": {"image": ("a.png", b"not a picture at all", "image/png")}}, 400, "not an image"),
    ({"files": {"image": ("a.png", b"", "image/png")}}, 400, "empty"),
    ({"files": {"image": ("a.png", b"\x89PNG" + b"\x00" * 300_000, "image/png")}}, 413, "exceeds"),
    ({"files": {"image": ("big.png", png((1200, 1000)), "image/png")}}, 413, "decompression bomb"),
])
def test_bad_input_gets_a_clear_4xx(client, kwargs, status, message):
    response = client.post("/predict", **kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_batch_pairs_texts_and_images_and_isolates_errors(client, predictor):
    files = [("image", ("a.png", png(), "image/png")), ("image", ("b.txt", b"x", "text/plain")),
             ("image", ("c.png", png(color=(0, 0, 255)), "image/png"))]
    response = client.post("/predict/batch", data={"text": ["看电影", "逛街", ""]}, files=files)
    assert response.status_code == 200, response.text
    results = response.json()["predictions"]
    assert len(results) == 3
    assert results[0]["label"] in predictor.labels and results[2]["label"] in predictor.labels
    assert results[1]["status"] == 415
    texts_only = client.post("/predict/batch", data={"text": ["看电影", "[哈哈]"]}).json()["predictions"]
    assert "label" in texts_only[0] and texts_only[1]["status"] == 400


def test_batch_bad_requests(client):
    assert client.post("/predict/batch").status_code == 400
    mismatched = client.post("/predict/batch", data={"text": ["a", "b"]},
                             files=[("image", ("a.png", png(), "image/png"))])
    assert mismatched.status_code == 400 and "as many" in mismatched.json()["detail"]


def test_server_keeps_serving_after_errors(client):
    for _ in range(3):
        client.post("/predict", files={"image": ("a.png", b"junk", "image/png")})
    assert client.post("/predict", data={"text": "在家"}).status_code == 200
