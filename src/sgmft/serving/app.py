"""`sgmft serve RUN`: the HTTP API and a small web page.

Endpoints: ``POST /predict`` (multipart: ``text`` and/or ``image``), ``POST /predict/batch``
(multipart: repeated ``text`` and ``image`` fields, paired by position), ``GET /health``,
``GET /labels``, OpenAPI docs at ``/docs``, and the page at ``/``.

The encoders and the model load once at start-up. Requests are queued and predicted in
micro-batches on one worker thread, so the event loop never blocks on the model and concurrent
requests share forward passes. Bad input gets a 4xx with a message; nothing crashes the server.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import HTMLResponse
from PIL import Image

from sgmft.data.images import MAX_PIXELS, ImageError, decode_image
from sgmft.serving.predictor import PostInput, Prediction, PredictionError, Predictor

DEFAULT_MAX_UPLOAD = 10 * 1024 * 1024


class MicroBatcher:
    """Collects concurrent requests for up to ``wait_s`` (or ``max_batch`` posts) and runs them
    as one batch on a single worker thread."""

    def __init__(self, predictor: Predictor, max_batch: int = 32, wait_s: float = 0.005):
        self.predictor = predictor
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.queue: asyncio.Queue = asyncio.Queue()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sgmft-predict")
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.worker.shutdown(wait=False, cancel_futures=True)

    async def predict(self, post: PostInput) -> Prediction:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((post, future))
        return await future

    def _predict_each(self, posts: list[PostInput]) -> list[Prediction | Exception]:
        """The batch at once; if one post is unusable, each on its own so only it fails."""
        try:
            return list(self.predictor.predict(posts))
        except PredictionError:
            results: list[Prediction | Exception] = []
            for post in posts:
                try:
                    results.extend(self.predictor.predict([post]))
                except PredictionError as exc:
                    results.append(exc)
            return results

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.wait_s
            while len(items) < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), timeout))
                except TimeoutError:
                    break
            try:
                results = await loop.run_in_executor(self.worker, self._predict_each,
                                                     [post for post, _ in items])
            except Exception as exc:  # the model itself failed: every waiting request learns it
                results = [exc] * len(items)
            for (_, future), result in zip(items, results, strict=True):
                if not future.done():
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)


async def read_image(upload: UploadFile, max_bytes: int, max_pixels: int) -> Image.Image:
    """An uploaded file -> RGB image, or the HTTP error a client can act on."""
    if not (upload.content_type or "").startswith("image/"):
        raise HTTPException(415, f"image must be sent with an image/* content type, "
                                 f"got {upload.content_type!r}")
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HTTPException(413, f"image upload exceeds the limit of {max_bytes} bytes")
    if not data:
        raise HTTPException(400, "the image file is empty")
    try:
        return decode_image(data, max_pixels)
    except ImageError as exc:
        raise HTTPException(413 if "decompression bomb" in str(exc) else 400, str(exc)) from None


def create_app(run: str | Path | None = None, predictor: Predictor | None = None,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD, max_pixels: int = MAX_PIXELS,
               max_batch: int = 32) -> FastAPI:
    """The FastAPI app for a run folder (or a ready `Predictor`, for tests)."""
    state: dict[str, MicroBatcher] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = MicroBatcher(predictor or Predictor(run), max_batch=max_batch)
        await batcher.start()
        state["batcher"] = batcher
        yield
        await batcher.stop()

    app = FastAPI(title="sgmft", lifespan=lifespan,
                  description="Semantic location of a social-media post from its text and image (SG-MFT).")

    def batcher() -> MicroBatcher:
        return state["batcher"]

    async def to_post(text: str | None, image: UploadFile | None) -> PostInput:
        has_text = text is not None and text.strip() != ""
        if not has_text and image is None:
            raise HTTPException(400, "send a text, an image, or both")
        pil = await read_image(image, max_upload_bytes, max_pixels) if image is not None else None
        return PostInput(text if has_text else None, pil)

    async def run_one(post: PostInput) -> dict:
        try:
            return (await batcher().predict(post)).to_dict()
        except PredictionError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.get("/health")
    async def health() -> dict:
        p = batcher().predictor
        return {"status": "ok", "run": str(p.run.folder), "variant": p.run.config.variant,
                "encoder": p.encoder.name, "labels": p.labels}

    @app.get("/labels")
    async def labels() -> list[str]:
        return batcher().predictor.labels

    @app.post("/predict")
    async def predict_one(text: Annotated[str | None, Form()] = None,
                          image: Annotated[UploadFile | None, File()] = None) -> dict:
        """Predict one post from its text and/or image."""
        return await run_one(await to_post(text, image))

    @app.post("/predict/batch")
    async def predict_batch(text: Annotated[list[str] | None, Form()] = None,
                            image: Annotated[list[UploadFile] | None, File()] = None) -> dict:
        """Predict several posts: the i-th ``text`` goes with the i-th ``image``. A bad post gets
        an ``error`` entry; the others are still predicted."""
        texts, images = text or [], image or []
        if not texts and not images:
            raise HTTPException(400, "send at least one text or image")
        if texts and images and len(texts) != len(images):
            raise HTTPException(400, f"{len(texts)} texts and {len(images)} images: send as many "
                                     "of each (an empty text for an image-only post)")

        async def one(i: int) -> dict:
            try:
                return await run_one(await to_post(texts[i] if texts else None,
                                                   images[i] if images else None))
            except HTTPException as exc:
                return {"error": exc.detail, "status": exc.status_code}

        # posts enter the queue together, so the micro-batcher predicts them in one pass
        results = await asyncio.gather(*(one(i) for i in range(max(len(texts), len(images)))))
        return {"predictions": list(results)}

    page = files("sgmft.serving").joinpath("static", "index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    return app
