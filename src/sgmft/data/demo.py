"""The bundled demo set: Weibo-style posts written for the project and images it renders.

It shows the pipeline end to end on a fresh machine. It is a demo, not a benchmark: the texts
are recombined fragments (``demo_texts.json``) with Weibo noise, and the images are simple
rendered scenes, one visual motif per place. About a quarter of the posts carry a generic text
and about a quarter a generic image, so that neither modality alone is enough.
"""

from __future__ import annotations

import json
import random
from importlib.resources import files
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sgmft import PLACES
from sgmft.io import atomic_write_bytes

SIZE = 160


def _jitter(rng: random.Random, color: tuple[int, int, int], amount: int = 25) -> tuple:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in color)


def _box(rng: random.Random, x: float, y: float, w: float, h: float) -> list[float]:
    dx, dy = rng.uniform(-8, 8), rng.uniform(-8, 8)
    return [x + dx, y + dy, x + dx + w, y + dy + h]


def _draw_home(d: ImageDraw.ImageDraw, rng: random.Random) -> None:
    d.rectangle([0, 0, SIZE, SIZE], fill=_jitter(rng, (235, 215, 180)))
    d.rectangle(_box(rng, 95, 20, 45, 40), fill=_jitter(rng, (170, 210, 240)), outline=(120, 90, 60), width=3)
    d.rectangle(_box(rng, 15, 95, 100, 35), fill=_jitter(rng, (150, 60, 50)))
    d.rectangle(_box(rng, 15, 80, 18, 50), fill=_jitter(rng, (130, 50, 40)))
    d.ellipse(_box(rng, 30, 25, 25, 25), fill=_jitter(rng, (255, 230, 120)))


def _draw_work(d: ImageDraw.ImageDraw, rng: random.Random) -> None:
    d.rectangle([0, 0, SIZE, SIZE], fill=_jitter(rng, (200, 205, 215)))
    for x in range(10, SIZE, 50):
        d.rectangle(_box(rng, x, 40, 38, 28), fill=(30, 30, 40), outline=(90, 90, 100), width=2)
    d.rectangle(_box(rng, 0, 85, SIZE, 12), fill=_jitter(rng, (120, 100, 80)))
    for y in range(110, SIZE, 12):
        d.line([10, y, 150, y], fill=_jitter(rng, (150, 150, 160)), width=2)


def _draw_school(d: ImageDraw.ImageDraw, rng: random.Random) -> None:
    d.rectangle([0, 0, SIZE, SIZE], fill=_jitter(rng, (240, 235, 220)))
    d.rectangle(_box(rng, 15, 12, 130, 60), fill=_jitter(rng, (40, 90, 60)), outline=(140, 100, 60), width=4)
    for _ in range(4):
        y = rng.uniform(22, 60)
        d.line([25, y, rng.uniform(60, 135), y], fill=(235, 235, 235), width=2)
    for x in (15, 60, 105):
        for y in (95, 130):
            d.rectangle(_box(rng, x, y, 35, 15), fill=_jitter(rng, (190, 150, 90)))


def _draw_restaurant(d: ImageDraw.ImageDraw, rng: random.Random) -> None:
    d.rectangle([0, 0, SIZE, SIZE], fill=_jitter(rng, (160, 40, 40)))
    d.ellipse(_box(rng, 15, 15, 130, 130), fill=_jitter(rng, (120, 80, 50)))
    for _ in range(4):
        x, y = rng.uniform(30, 100), rng.uniform(30, 100)
        d.ellipse([x, y, x + 30, y + 30], fill=(250, 250, 245), outline=(200, 200, 200))
        d.ellipse([x + 8, y + 8, x + 22, y + 22], fill=_jitter(rng, (210, 120, 40), 40))
    d.line(_box(rng, 120, 40, 20, 60), fill=(230, 200, 150), width=3)


def _draw_cinema(d: ImageDraw.ImageDraw, rng: random.Random) -> None:
    d.rectangle([0, 0, SIZE, SIZE], fill=_jitter(rng, (15, 10, 25), 10))
    d.rectangle(_box(rng, 20, 15, 120, 55), fill=_jitter(rng, (230, 230, 255), 20))
    for row, y in enumerate(range(95, SIZE, 20)):
        for x in range(5 + row * 4, SIZE, 22):
            d.chord([x, y, x + 18, y + 22], 180, 360, fill=_jitter(rng, (150, 20, 30), 20))


def _draw_gym(d: ImageDraw.ImageDraw, rng: random.Random) -> None:
    d.rectangle([0, 0, SIZE, SIZE], fill=_jitter(rng, (60, 60, 60)))
    for _ in range(2):
        x, y = rng.uniform(15, 60), rng.uniform(20, 120)
        d.line([x, y + 10, x + 80, y + 10], fill=(200, 200, 200), width=5)
        for dx in (0, 70):
            d.rectangle([x + dx, y - 5, x + dx + 10, y + 25], fill=_jitter(rng, (240, 120, 20)))
    d.polygon([(100, 150), (155, 150), (150, 120)], fill=_jitter(rng, (20, 20, 20)))


def _draw_shopping(d: ImageDraw.ImageDraw, rng: random.Random) -> None:
    d.rectangle([0, 0, SIZE, SIZE], fill=_jitter(rng, (250, 245, 250)))
    for y in (30, 75, 120):
        d.rectangle([5, y + 28, 155, y + 32], fill=(150, 150, 150))
        x = 8
        while x < 145:
            w = rng.uniform(10, 22)
            color = rng.choice([(230, 60, 90), (60, 130, 230), (250, 200, 40), (90, 200, 120)])
            d.rectangle([x, y + rng.uniform(0, 12), x + w, y + 28], fill=color)
            x += w + 3


def _draw_travel(d: ImageDraw.ImageDraw, rng: random.Random) -> None:
    for y in range(SIZE):
        d.line([0, y, SIZE, y], fill=(90 + y // 3, 160 + y // 6, 250 - y // 4))
    d.ellipse(_box(rng, 110, 15, 28, 28), fill=(255, 240, 150))
    for _ in range(2):
        x = rng.uniform(-20, 90)
        d.polygon([(x, 120), (x + 45, rng.uniform(40, 70)), (x + 90, 120)], fill=_jitter(rng, (90, 110, 100)))
    d.rectangle([0, 120, SIZE, SIZE], fill=_jitter(rng, (40, 110, 190)))


DRAW = {
    "home": _draw_home, "work": _draw_work, "school": _draw_school,
    "restaurant": _draw_restaurant, "cinema": _draw_cinema, "gym": _draw_gym,
    "shopping": _draw_shopping, "travel": _draw_travel,
}


def render_scene(label: str | None, rng: random.Random) -> Image.Image:
    """A SIZE x SIZE RGB scene of ``label``'s motif, or a generic photo-like image for None."""
    image = Image.new("RGB", (SIZE, SIZE))
    draw = ImageDraw.Draw(image)
    if label is None:
        base = np.asarray(_jitter(rng, (128, 128, 128), 100), np.float32)
        gradient = np.linspace(-60, 60, SIZE, dtype=np.float32)[:, None, None]
        pixels = np.clip(base + gradient + np.zeros((SIZE, SIZE, 3), np.float32), 0, 255)
        image = Image.fromarray(pixels.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        draw.ellipse(_box(rng, 50, 50, 60, 60), fill=_jitter(rng, (200, 180, 160), 50))
    else:
        DRAW[label](draw, rng)
    image = _reframe(image, rng)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 8, (SIZE, SIZE, 3))
    pixels = np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _reframe(image: Image.Image, rng: random.Random) -> Image.Image:
    """As if another camera took it: a random mirror, tilt and zoom. Two scenes of one place then
    differ in their perceptual hashes as two photos do, so they are not near duplicates."""
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = image.rotate(rng.uniform(-25, 25), resample=Image.Resampling.BILINEAR, expand=False,
                         fillcolor=_jitter(rng, (128, 128, 128), 100))
    side = rng.uniform(0.6, 1.0) * SIZE
    left, top = rng.uniform(0, SIZE - side), rng.uniform(0, SIZE - side)
    return image.resize((SIZE, SIZE), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))


def _decorate(text: str, rng: random.Random, noise: list[str]) -> str:
    """Add the noise of real Weibo posts: emoticons, mentions, topics, links, forward chains."""
    if rng.random() < 0.5:
        text += rng.choice(noise)
    if rng.random() < 0.2:
        text = f"@{rng.choice(['小王同学', 'Lily_2019', '阿强'])} {text}"
    if rng.random() < 0.2:
        text = f"#{rng.choice(['日常', '生活记录', '周末'])}# {text}"
    if rng.random() < 0.15:
        text += f" http://t.cn/A6{rng.randint(1000, 9999)}"
    if rng.random() < 0.1:
        text += f"//@{rng.choice(['路人甲', 'momo'])}:{rng.choice(['同感', '哈哈哈'])}"
    return text


def _texts() -> dict:
    return json.loads(files("sgmft.data").joinpath("demo_texts.json").read_text("utf-8"))


def _save_image(out: Path, name: str, image: Image.Image) -> str:
    buffer = BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    atomic_write_bytes(out / name, buffer.getvalue())
    return name


def _write_manifest(out: Path, rows: list[dict]) -> Path:
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    atomic_write_bytes(out / "manifest.jsonl", lines.encode("utf-8"))
    return out / "manifest.jsonl"


def _begin(out: str | Path, seed: int) -> tuple[Path, dict, random.Random]:
    """The output folder (with its images/ made), the text fragments and the seeded generator."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    return out, _texts(), random.Random(seed)


#: the demo's planted habits: user -> label -> (the hours, the weekdays (0 = Monday)) of their
#: posts there. Most posts of a label go to a user with a habit there, at its hours; the rest to
#: one of 8 other users at any time. `sgmft profile --time time --every hour` shows them.
HABITS: dict[str, dict[str, tuple[tuple[int, ...], tuple[int, ...]]]] = {
    "early_bird": {"gym": ((6, 7), (0, 1, 2, 3, 4)), "work": ((9, 10, 11, 14, 15, 16), (0, 1, 2, 3, 4)),
                   "home": ((21, 22), (0, 1, 2, 3, 4, 5, 6))},
    "student": {"school": ((8, 9, 10, 14, 15), (0, 1, 2, 3, 4)), "restaurant": ((12,), (0, 1, 2, 3, 4)),
                "cinema": ((19, 20, 21), (5, 6))},
    "weekender": {"shopping": ((13, 14, 15, 16), (5, 6)), "travel": ((9, 10, 11, 12), (5, 6))},
}
#: the share of a label's posts that go to the user with a habit there
HABIT_SHARE = 0.8


def _when(rng: random.Random, label: str) -> tuple[str, str]:
    """A post's user and time (ISO 8601, +08:00, in the week of 2 March 2026) by `HABITS`."""
    planted = [user for user, habit in HABITS.items() if label in habit]
    if planted and rng.random() < HABIT_SHARE:
        user = rng.choice(planted)
        hours, days = HABITS[user][label]
        hour, day = rng.choice(hours), rng.choice(days)
    else:
        user, hour, day = f"user{rng.randint(1, 8):02d}", rng.randint(0, 23), rng.randint(0, 6)
    return user, f"2026-03-{2 + day:02d}T{hour:02d}:{rng.randint(0, 59):02d}:00+08:00"


def make_demo(out: str | Path, posts_per_class: int = 30, seed: int = 0) -> Path:
    """Write ``out/manifest.jsonl`` and ``out/images/*.jpg``; returns the manifest path. Each post
    has a user and a time after the planted `HABITS`."""
    out, texts, rng = _begin(out, seed)
    habits = random.Random(seed + 1)     # users and times apart: the texts and images stay as they were
    rows = []
    for label in PLACES:
        for i in range(posts_per_class):
            generic_text, generic_image = rng.random() < 0.25, rng.random() < 0.25
            if generic_text and generic_image:
                generic_image = False
            text = rng.choice(texts["generic"] if generic_text else texts["places"][label])
            post_id = f"{label}-{i:03d}"
            image = render_scene(None if generic_image else label, rng)
            name = _save_image(out, f"images/{post_id}.jpg", image)
            text = _decorate(text, rng, texts["noise"])
            rng.randint(1, 12)          # (where users were drawn before habits: the stream stays the same)
            user, time = _when(habits, label)
            rows.append({"id": post_id, "text": text, "image": name, "label": label, "user": user,
                         "time": time})
    rng.shuffle(rows)
    return _write_manifest(out, rows)


def make_shift_demo(out: str | Path, events_per_class: int = 8, posts_per_event: int = 5,
                    test_events_per_class: int = 2, seed: int = 0) -> Path:
    """A demo set with a shift between training and test, as when test posts come from events
    never seen in training: the posts of an event share one image whose motif is drawn
    independently of the label, so an image identifies its event (and, in training, its label)
    but says nothing of the label of a new event; the texts carry the label as in `make_demo`.
    Rows carry ``group`` (the event) and ``split`` (whole events are held out for testing).
    A model that memorises the training images fails on the test events; one that falls back
    on the text does not. Returns the manifest path."""
    out, texts, rng = _begin(out, seed)
    rows = []
    for label in PLACES:
        for event in range(events_per_class):
            group = f"{label}-event{event}"
            name = _save_image(out, f"images/{group}.jpg", render_scene(rng.choice(PLACES), rng))
            split = "test" if event >= events_per_class - test_events_per_class else "train"
            for i in range(posts_per_event):
                text = rng.choice(texts["generic"] if rng.random() < 0.2 else texts["places"][label])
                rows.append({"id": f"{group}-{i}", "text": _decorate(text, rng, texts["noise"]),
                             "image": name, "label": label, "group": group, "split": split})
    rng.shuffle(rows)
    return _write_manifest(out, rows)
