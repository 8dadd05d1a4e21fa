"""`sgmft serve RUN`: the HTTP API and a small web page.

Endpoints: ``POST /predict`` (multipart: ``text`` and/or ``image``, optional ``coverage`` and
``min_confidence``), ``POST /predict/batch`` (multipart: repeated ``text`` and ``image`` fields,
paired by position), ``GET /health`` (which run answers), ``GET /labels``, ``GET /about`` (what
the page needs: labels, examples, the run's coverage and threshold), OpenAPI docs at ``/docs``,
and the page at ``/``.

The encoders and the model load once, and answer one warm-up prediction, before the server
says it is healthy. The event loop only reads requests: image headers, decoding and resizing
run on a small decoding pool (a batch request on at most half of it, so that a lone request
never waits for a batch's large images), predictions on one worker thread that micro-batches
concurrent requests, the posts of small requests first (a batch of 64 long texts cannot hold a single post
up for its whole length). Memory stays bounded: a request body over its byte limit is refused
(413) before any of it is stored, an upload is read up to its byte limit, a request's images are
refused (413) when their pixels, read from the headers before anything is decoded, exceed the
request budget, and each image is resized to the encoder's input on the pool. Bad input gets a
4xx with a message; one bad post of a batch gets its own error entry while the others are
answered; an error never leaves the server broken.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import itertools
import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from sgmft.data.images import ImageError, decode_image
from sgmft.limits import LIMITS
from sgmft.serving.middleware import BodyLimit, ServerErrors
from sgmft.serving.predictor import PostInput, Prediction, PredictionError, Predictor
from sgmft.serving.profiles import FIGURES, last_profile

DEFAULT_MAX_UPLOAD = 10 * 1024 * 1024


class MicroBatcher:
    """Collects concurrent requests for up to ``wait_s`` (or ``max_batch`` posts) and runs them
    as one batch on a single worker thread."""

    def __init__(self, predictor: Predictor, max_batch: int = 16, wait_s: float = 0.005):
        self.predictor = predictor
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.queue: asyncio.PriorityQueue = asyncio.PriorityQueue()   # (request size, arrival, ...)
        self.arrivals = itertools.count()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sgmft-predict")
        self.task: asyncio.Task | None = None

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    async def start(self) -> None:
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.worker.shutdown(wait=False, cancel_futures=True)

    async def predict(self, post: PostInput, request_size: int = 1) -> Prediction:
        """The prediction of one post; the posts of smaller requests are served first."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((request_size, next(self.arrivals), post, future))
        return await future

    def _predict_each(self, posts: list[PostInput]) -> list[Prediction | Exception]:
        """The batch at once; if it fails, each post on its own so only the bad one fails."""
        try:
            return list(self.predictor.predict(posts))
        except Exception:
            results: list[Prediction | Exception] = []
            for post in posts:
                try:
                    results.extend(self.predictor.predict([post]))
                except Exception as exc:
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
                                                     [item[2] for item in items])
            except Exception as exc:  # the model itself failed (even MemoryError): each waiting
                results = [exc] * len(items)   # request learns it, and the loop goes on
            for (*_, future), result in zip(items, results, strict=True):
                if not future.done():
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)


@dataclass(frozen=True)
class Upload:
    """An uploaded image's bytes and its size read from the header (nothing decoded yet)."""

    data: bytes
    pixels: int


def _header_pixels(data: bytes) -> int:
    """Width x height from an image's header (PIL reads no pixel data here)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        raise HTTPException(413, f"decompression bomb refused: more pixels than sgmft's limit of "
                                 f"{LIMITS.image_pixels:,} (SGMFT_LIMIT_IMAGE_PIXELS)") from None
    except MemoryError:
        raise
    except Exception as exc:   # any decoder's failure (AVIF's is a RuntimeError): this post's 400
        raise HTTPException(400, "not an image, or a damaged one: its header cannot be read as any image "
                                 "format sgmft reads") from exc
    return width * height


def _decode_and_resize(data: bytes, max_pixels: int, predictor: Predictor) -> Image.Image:
    """On the decoding pool: decode, then resize to the encoder's input (what it does anyway)."""
    try:
        image = decode_image(data, max_pixels)
    except ImageError as exc:
        raise HTTPException(413 if "decompression bomb" in str(exc) else 400, str(exc)) from None
    return predictor.encoder.image_preprocess.resize(image)


def run_identity(predictor: Predictor) -> dict:
    """Which run answers, without a path: a short hash of its weights, its variant, labels and
    when it was trained."""
    digest = hashlib.sha256((predictor.run.folder / "model.safetensors").read_bytes()).hexdigest()[:12]
    return {"id": digest, "variant": predictor.run.config.variant, "labels": predictor.labels,
            "trained": predictor.run.info.get("finished")}


def create_app(run: str | Path | None = None, predictor: Predictor | None = None,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD, max_pixels: int = LIMITS.image_pixels,
               max_request_pixels: int = LIMITS.request_pixels, max_batch_rows: int = LIMITS.batch_rows,
               max_batch: int = 16, decode_workers: int = 2, coverage: float | None = 0.9,
               min_confidence: float | None = None, max_request_bytes: int = LIMITS.request_bytes) -> FastAPI:
    """The FastAPI app for a run folder (or a ready `Predictor`, for tests). ``coverage`` and
    ``min_confidence``: what a request that does not say gets (a run without calibration posts
    gives no sets)."""
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = MicroBatcher(predictor or Predictor(run), max_batch=max_batch)
        await batcher.start()
        state["batcher"] = batcher
        state["decoder"] = ThreadPoolExecutor(max_workers=decode_workers, thread_name_prefix="sgmft-decode")
        state["identity"] = run_identity(batcher.predictor)
        state["coverage"] = coverage if coverage and batcher.predictor.run.conformal_threshold(coverage) \
            is not None else None
        await batcher.predict(PostInput("warm up", Image.new("RGB", (32, 32), (128, 128, 128))))
        state["ready"] = True
        yield
        await batcher.stop()
        state["decoder"].shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="sgmft", lifespan=lifespan,
                  description="The label (semantic location) of a social-media post from its text "
                              "and image (SG-MFT).")
    # one post: its image and its text, with room for the form's own bytes
    one_post = max_upload_bytes + 4 * LIMITS.text_chars + 65_536
    app.add_middleware(BodyLimit, limit=max_request_bytes,
                       paths={"/predict": min(one_post, max_request_bytes)})
    app.add_middleware(ServerErrors)

    def batcher() -> MicroBatcher:
        return state["batcher"]

    async def read_upload(upload: UploadFile) -> Upload:
        if not (upload.content_type or "").startswith("image/"):
            raise HTTPException(415, f"image must be sent with an image/* content type, "
                                     f"got {upload.content_type!r}")
        data = await upload.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"image upload exceeds the limit of {max_upload_bytes} bytes")
        if not data:
            raise HTTPException(400, "the image file is empty")
        pixels = await asyncio.get_running_loop().run_in_executor(state["decoder"], _header_pixels, data)
        if pixels > max_pixels:
            raise HTTPException(413, f"decompression bomb refused: {pixels:,} pixels, more than sgmft's "
                                     f"limit of {max_pixels:,} (SGMFT_LIMIT_IMAGE_PIXELS)")
        return Upload(data, pixels)

    def check_text(text: str | None) -> str | None:
        if text is not None and len(text) > LIMITS.text_chars:
            raise HTTPException(413, f"text of {len(text)} characters exceeds the limit of "
                                     f"{LIMITS.text_chars}")
        return text if text is not None and text.strip() else None

    def check_options(asked_coverage: float | None, asked_confidence: float | None) -> tuple:
        for name, value in (("coverage", asked_coverage), ("min_confidence", asked_confidence)):
            if value is not None and not 0.0 < value < 1.0:
                raise HTTPException(400, f"{name} {value}: expected a number between 0 and 1")
        return (asked_coverage if asked_coverage is not None else state["coverage"],
                asked_confidence if asked_confidence is not None else min_confidence)

    def check_request_pixels(uploads: list[Upload]) -> None:
        total = sum(u.pixels for u in uploads)
        if total > max_request_pixels:
            raise HTTPException(413, f"the request's images hold {total} pixels together, over the "
                                     f"limit of {max_request_pixels}; send fewer or smaller images")

    async def to_post(text: str | None, upload: Upload | None, options: tuple,
                      share: asyncio.Semaphore | None = None) -> PostInput:
        """The post of a text and an upload; its image decoded on the pool, within ``share``
        (a batch request's part of the pool, so that it never holds every decoding thread)."""
        if text is None and upload is None:
            raise HTTPException(400, "send a text, an image, or both")
        image = None
        if upload is not None:
            async with share or contextlib.nullcontext():
                image = await asyncio.get_running_loop().run_in_executor(
                    state["decoder"], _decode_and_resize, upload.data, max_pixels, batcher().predictor)
        return PostInput(text, image, coverage=options[0], min_confidence=options[1])

    async def run_one(post: PostInput, request_size: int = 1) -> dict:
        try:
            return (await batcher().predict(post, request_size)).to_dict()
        except (PredictionError, ImageError) as exc:
            raise HTTPException(400, str(exc)) from None
        except MemoryError:
            raise HTTPException(503, "the server ran out of memory on this request; retry with "
                                     "smaller images") from None

    @app.get("/health")
    async def health():
        """Ready (200) once the model is loaded, has answered a warm-up post and its worker runs
        (503 before). Names the run that answers; no file paths."""
        if not state.get("ready") or not batcher().alive:
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return {"status": "ok", "run": state["identity"], "encoder": batcher().predictor.encoder_name,
                "coverage": state["coverage"], "min_confidence": min_confidence,
                "queued": batcher().queue.qsize()}

    @app.get("/labels")
    async def labels() -> list[str]:
        return batcher().predictor.labels

    @app.get("/about")
    async def about() -> dict:
        """What the page shows: the run, example posts of its labels, and the defaults."""
        return {"run": state["identity"], "examples": batcher().predictor.examples(),
                "coverage": state["coverage"], "min_confidence": min_confidence,
                "temperature": float(batcher().predictor.run.model.temperature),
                "calibrated": batcher().predictor.calibrated, "notes": batcher().predictor.notes}

    @app.exception_handler(StarletteHTTPException)
    async def in_words(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's own refusals, in words (the others pass as they are)."""
        detail = exc.detail
        if detail == "Invalid multipart data.":
            detail = ("the form could not be read: it is not valid multipart/form-data, or a part's header "
                      "is longer than 4,224 bytes (a file name of thousands of characters, say)")
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.post("/predict")
    async def predict_one(request: Request, text: Annotated[str | None, Form()] = None,
                          image: Annotated[UploadFile | None, File()] = None,
                          coverage: Annotated[float | None, Form()] = None,
                          min_confidence: Annotated[float | None, Form()] = None) -> dict:
        """Predict one post from its text and/or image; ``coverage`` asks for the prediction
        set, ``min_confidence`` for "unsure" below it (defaults: the server's)."""
        form = await request.form()     # parsed once already: FastAPI read the fields from it
        for name in ("text", "image"):
            if len(form.getlist(name)) > 1:
                raise HTTPException(400, f"{len(form.getlist(name))} {name} fields: /predict takes one post, "
                                         "one text and one image at most; send several to /predict/batch")
        options = check_options(coverage, min_confidence)
        text = check_text(text)
        upload = await read_upload(image) if image is not None else None
        check_request_pixels([upload] if upload else [])
        return await run_one(await to_post(text, upload, options))

    @app.post("/predict/batch")
    async def predict_batch(text: Annotated[list[str] | None, Form()] = None,
                            image: Annotated[list[UploadFile] | None, File()] = None,
                            coverage: Annotated[float | None, Form()] = None,
                            min_confidence: Annotated[float | None, Form()] = None) -> dict:
        """Predict several posts: the i-th ``text`` goes with the i-th ``image``. A bad post gets
        an ``error`` entry; the others are still predicted."""
        options = check_options(coverage, min_confidence)
        texts, images = text or [], image or []
        if not texts and not images:
            raise HTTPException(400, "send at least one text or image")
        if texts and images and len(texts) != len(images):
            raise HTTPException(400, f"{len(texts)} texts and {len(images)} images: send as many "
                                     "of each (an empty text for an image-only post)")
        rows = max(len(texts), len(images))
        if rows > max_batch_rows:
            raise HTTPException(413, f"{rows} posts in one request, over the limit of {max_batch_rows}")
        uploads: list[Upload | HTTPException | None] = []
        for upload in images:
            try:
                uploads.append(await read_upload(upload))
            except HTTPException as exc:
                uploads.append(exc)
        check_request_pixels([u for u in uploads if isinstance(u, Upload)])

        # a batch decodes on at most half the pool: a lone request always finds a thread free
        share = asyncio.Semaphore(max(1, decode_workers // 2))

        async def one(i: int) -> dict:
            try:
                upload = uploads[i] if uploads else None
                if isinstance(upload, HTTPException):
                    raise upload
                post = await to_post(check_text(texts[i]) if texts else None, upload, options, share)
                return await run_one(post, rows)
            except HTTPException as exc:
                return {"error": exc.detail, "status": exc.status_code}

        # posts enter the queue together, so the micro-batcher predicts them in few passes
        results = await asyncio.gather(*(one(i) for i in range(rows)))
        return {"predictions": list(results)}

    @app.get("/profile")
    async def profile() -> dict:
        """The run's last profile (`sgmft profile`): its profiles.json, less the row errors, and
        the figures it has."""
        folder = last_profile(batcher().predictor.run.folder)
        if folder is None:
            raise HTTPException(404, "this run has no profile yet: sgmft profile RUN --manifest FILE")
        report = json.loads((folder / "profiles.json").read_text(encoding="utf-8"))
        report.pop("errors", None)
        return report | {"figures": [name for name in FIGURES if (folder / name).is_file()]}

    @app.get("/profile/{name}", include_in_schema=False)
    async def profile_figure(name: str) -> FileResponse:
        folder = last_profile(batcher().predictor.run.folder)
        if folder is None or name not in FIGURES or not (folder / name).is_file():
            raise HTTPException(404, f"no figure {name[:40]!r} in this run's last profile")
        return FileResponse(folder / name, media_type="image/png")

    page = files("sgmft.serving").joinpath("static", "index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    return app
