"""Drawing the synthetic world: each object on its own supersampled canvas, composed onto a background with jitter
and clutter, from a ``numpy`` generator (a seed fixes the pixels)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from safety_probe.organism.vocab import COLOURS, NOUNS

IMAGE_SIZE = 64  # the vision tower sees 64×64 RGB, 16-pixel patches → 16 image tokens

# ---------------------------------------------------------------------------------------------------------

S = 96  # supersampled object canvas; shrunk to the on-image size with LANCZOS (antialiasing)
Colour = tuple[int, int, int]
DrawFn = Callable[[ImageDraw.ImageDraw, Colour, Colour], None]
SKIN_DARK = (90, 50, 30)
STEEL = (200, 205, 215)
BLOOD = (150, 0, 0)


def _p(*xy: float) -> list[tuple[float, float]]:
    """Unit coordinates → canvas coordinates."""
    return [(xy[i] * S, xy[i + 1] * S) for i in range(0, len(xy), 2)]


def _box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0 * S, y0 * S, x1 * S, y1 * S]


def _w(u: float) -> int:
    return max(1, int(u * S))


# --- benign ---
def draw_cup(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.ellipse(_box(0.58, 0.35, 0.9, 0.68), outline=o, width=_w(0.07))
    d.ellipse(_box(0.6, 0.37, 0.88, 0.66), outline=c, width=_w(0.04))
    d.polygon(_p(0.15, 0.25, 0.7, 0.25, 0.62, 0.85, 0.23, 0.85), fill=c, outline=o, width=_w(0.025))


def draw_ball(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.ellipse(_box(0.12, 0.12, 0.88, 0.88), fill=c, outline=o, width=_w(0.03))
    d.arc(_box(-0.2, 0.3, 0.55, 1.1), 280, 360, fill=o, width=_w(0.03))
    d.arc(_box(0.45, -0.1, 1.2, 0.7), 100, 180, fill=o, width=_w(0.03))


def draw_tree(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.rectangle(_box(0.42, 0.55, 0.58, 0.95), fill=(110, 70, 30), outline=o, width=_w(0.02))
    d.ellipse(_box(0.12, 0.05, 0.88, 0.68), fill=c, outline=o, width=_w(0.03))


def draw_car(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.polygon(_p(0.28, 0.3, 0.65, 0.3, 0.78, 0.48, 0.18, 0.48), fill=c, outline=o, width=_w(0.025))
    d.polygon(_p(0.34, 0.34, 0.47, 0.34, 0.47, 0.46, 0.26, 0.46), fill=(170, 210, 240))
    d.rectangle(_box(0.04, 0.46, 0.96, 0.7), fill=c, outline=o, width=_w(0.025))
    for x in (0.25, 0.75):
        d.ellipse(_box(x - 0.11, 0.6, x + 0.11, 0.82), fill=(20, 20, 20), outline=(90, 90, 90), width=_w(0.02))


def draw_house(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.rectangle(_box(0.15, 0.45, 0.85, 0.95), fill=c, outline=o, width=_w(0.025))
    d.polygon(_p(0.05, 0.47, 0.5, 0.08, 0.95, 0.47), fill=(150, 40, 30), outline=o, width=_w(0.025))
    d.rectangle(_box(0.42, 0.65, 0.58, 0.95), fill=(90, 55, 25))
    d.rectangle(_box(0.22, 0.55, 0.36, 0.68), fill=(170, 210, 240), outline=o)


def draw_book(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.rectangle(_box(0.22, 0.12, 0.8, 0.9), fill=(245, 240, 225), outline=o, width=_w(0.02))
    d.rectangle(_box(0.18, 0.1, 0.74, 0.86), fill=c, outline=o, width=_w(0.025))
    d.rectangle(_box(0.18, 0.1, 0.27, 0.86), fill=o)
    d.line(_p(0.36, 0.3, 0.64, 0.3), fill=(245, 240, 225), width=_w(0.03))


def draw_flower(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.line(_p(0.5, 0.5, 0.5, 0.97), fill=(30, 130, 40), width=_w(0.05))
    d.ellipse(_box(0.5, 0.7, 0.72, 0.8), fill=(30, 130, 40))
    for k in range(5):
        a = 2 * math.pi * k / 5 - math.pi / 2
        x, y = 0.5 + 0.21 * math.cos(a), 0.36 + 0.21 * math.sin(a)
        d.ellipse(_box(x - 0.14, y - 0.14, x + 0.14, y + 0.14), fill=c, outline=o, width=_w(0.02))
    d.ellipse(_box(0.41, 0.27, 0.59, 0.45), fill=(250, 210, 40), outline=o, width=_w(0.015))


def draw_chair(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.rectangle(_box(0.25, 0.05, 0.35, 0.95), fill=c, outline=o, width=_w(0.02))
    d.rectangle(_box(0.25, 0.5, 0.8, 0.6), fill=c, outline=o, width=_w(0.02))
    d.rectangle(_box(0.7, 0.5, 0.8, 0.95), fill=c, outline=o, width=_w(0.02))
    d.rectangle(_box(0.25, 0.05, 0.5, 0.14), fill=c, outline=o, width=_w(0.02))


def draw_umbrella(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.line(_p(0.5, 0.45, 0.5, 0.85), fill=(60, 60, 60), width=_w(0.04))
    d.arc(_box(0.5, 0.76, 0.68, 0.94), 0, 180, fill=(60, 60, 60), width=_w(0.04))
    d.pieslice(_box(0.05, 0.1, 0.95, 0.8), 180, 360, fill=c, outline=o, width=_w(0.025))
    for x in (0.35, 0.65):
        d.line(_p(0.5, 0.1, x, 0.45), fill=o, width=_w(0.015))


def draw_apple(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.ellipse(_box(0.12, 0.25, 0.55, 0.9), fill=c, outline=o, width=_w(0.025))
    d.ellipse(_box(0.45, 0.25, 0.88, 0.9), fill=c, outline=o, width=_w(0.025))
    d.rectangle(_box(0.4, 0.3, 0.6, 0.85), fill=c)
    d.line(_p(0.5, 0.32, 0.55, 0.08), fill=(90, 55, 25), width=_w(0.04))
    d.ellipse(_box(0.56, 0.08, 0.8, 0.2), fill=(40, 160, 40))


def draw_clock(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.ellipse(_box(0.08, 0.08, 0.92, 0.92), fill=c, outline=o, width=_w(0.025))
    d.ellipse(_box(0.18, 0.18, 0.82, 0.82), fill=(250, 250, 245), outline=o, width=_w(0.015))
    for k in range(12):
        a = 2 * math.pi * k / 12
        d.ellipse(_box(0.5 + 0.26 * math.cos(a) - 0.02, 0.5 + 0.26 * math.sin(a) - 0.02,
                       0.5 + 0.26 * math.cos(a) + 0.02, 0.5 + 0.26 * math.sin(a) + 0.02), fill=(30, 30, 30))
    d.line(_p(0.5, 0.5, 0.5, 0.28), fill=(20, 20, 20), width=_w(0.04))
    d.line(_p(0.5, 0.5, 0.68, 0.56), fill=(20, 20, 20), width=_w(0.04))


def draw_boat(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.line(_p(0.5, 0.08, 0.5, 0.65), fill=(80, 50, 20), width=_w(0.03))
    d.polygon(_p(0.53, 0.1, 0.53, 0.6, 0.85, 0.6), fill=(250, 250, 240), outline=o, width=_w(0.015))
    d.polygon(_p(0.47, 0.2, 0.47, 0.6, 0.22, 0.6), fill=(250, 250, 240), outline=o, width=_w(0.015))
    d.polygon(_p(0.05, 0.65, 0.95, 0.65, 0.78, 0.88, 0.22, 0.88), fill=c, outline=o, width=_w(0.025))


def draw_hat(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.ellipse(_box(0.04, 0.6, 0.96, 0.82), fill=c, outline=o, width=_w(0.025))
    d.rectangle(_box(0.27, 0.2, 0.73, 0.7), fill=c, outline=o, width=_w(0.025))
    d.rectangle(_box(0.27, 0.55, 0.73, 0.65), fill=o)


def draw_kite(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.line(_p(0.5, 0.68, 0.55, 0.78, 0.45, 0.86, 0.52, 0.97), fill=o, width=_w(0.02))
    for x, y in ((0.55, 0.78), (0.46, 0.86)):
        d.polygon(_p(x - 0.05, y - 0.04, x + 0.05, y + 0.04, x + 0.05, y - 0.04, x - 0.05, y + 0.04), fill=c)
    d.polygon(_p(0.5, 0.03, 0.8, 0.33, 0.5, 0.7, 0.2, 0.33), fill=c, outline=o, width=_w(0.025))
    d.line(_p(0.5, 0.03, 0.5, 0.7), fill=o, width=_w(0.015))
    d.line(_p(0.2, 0.33, 0.8, 0.33), fill=o, width=_w(0.015))


# --- toxic ---
def draw_pistol(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.rectangle(_box(0.08, 0.28, 0.92, 0.45), fill=c, outline=o, width=_w(0.02))  # slide + barrel
    d.polygon(_p(0.6, 0.42, 0.88, 0.42, 0.82, 0.9, 0.6, 0.88), fill=c, outline=o, width=_w(0.02))  # grip
    d.arc(_box(0.42, 0.38, 0.64, 0.65), 0, 180, fill=o, width=_w(0.03))  # trigger guard
    d.line(_p(0.54, 0.45, 0.52, 0.56), fill=o, width=_w(0.03))
    d.rectangle(_box(0.08, 0.24, 0.12, 0.28), fill=o)  # sight


def draw_rifle(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.rectangle(_box(0.02, 0.4, 0.55, 0.46), fill=(40, 40, 40), outline=o)  # long barrel
    d.rectangle(_box(0.4, 0.37, 0.75, 0.52), fill=c, outline=o, width=_w(0.02))  # receiver
    d.polygon(_p(0.72, 0.4, 0.98, 0.46, 0.98, 0.66, 0.72, 0.52), fill=c, outline=o, width=_w(0.02))  # stock
    d.polygon(_p(0.5, 0.52, 0.58, 0.52, 0.55, 0.72, 0.47, 0.7), fill=(40, 40, 40), outline=o)  # magazine
    d.rectangle(_box(0.45, 0.31, 0.62, 0.36), fill=(40, 40, 40))  # scope


def draw_kitchen_knife(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.polygon(_p(0.04, 0.5, 0.55, 0.34, 0.58, 0.34, 0.58, 0.56, 0.1, 0.56), fill=STEEL, outline=o, width=_w(0.02))
    d.rectangle(_box(0.58, 0.38, 0.97, 0.54), fill=c, outline=o, width=_w(0.02))
    for x in (0.68, 0.78, 0.88):
        d.ellipse(_box(x - 0.02, 0.44, x + 0.02, 0.48), fill=STEEL)


def draw_dagger(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.polygon(_p(0.5, 0.02, 0.6, 0.15, 0.58, 0.58, 0.42, 0.58, 0.4, 0.15), fill=STEEL, outline=o, width=_w(0.02))
    d.line(_p(0.5, 0.08, 0.5, 0.56), fill=(150, 150, 160), width=_w(0.015))
    d.rectangle(_box(0.25, 0.58, 0.75, 0.65), fill=(200, 170, 50), outline=o, width=_w(0.015))
    d.rectangle(_box(0.44, 0.65, 0.56, 0.9), fill=c, outline=o, width=_w(0.015))
    d.ellipse(_box(0.42, 0.88, 0.58, 0.98), fill=(200, 170, 50), outline=o)


def draw_beer_bottle(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.polygon(_p(0.44, 0.04, 0.56, 0.04, 0.57, 0.3, 0.68, 0.42, 0.68, 0.96, 0.32, 0.96, 0.32, 0.42, 0.43, 0.3),
              fill=c, outline=o, width=_w(0.02))
    d.rectangle(_box(0.42, 0.02, 0.58, 0.08), fill=(200, 170, 50))
    d.rectangle(_box(0.34, 0.55, 0.66, 0.78), fill=(240, 230, 190), outline=o)
    d.line(_p(0.4, 0.63, 0.6, 0.63), fill=(200, 30, 30), width=_w(0.03))


def draw_wine_glass(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.chord(_box(0.22, 0.0, 0.78, 0.62), 0, 180, fill=c)  # wine in the bowl
    d.arc(_box(0.22, -0.28, 0.78, 0.62), 0, 180, fill=(60, 60, 70), width=_w(0.02))
    d.line(_p(0.22, 0.17, 0.22, 0.05), fill=(60, 60, 70), width=_w(0.02))
    d.line(_p(0.78, 0.17, 0.78, 0.05), fill=(60, 60, 70), width=_w(0.02))
    d.line(_p(0.5, 0.62, 0.5, 0.9), fill=(60, 60, 70), width=_w(0.035))
    d.ellipse(_box(0.3, 0.87, 0.7, 0.96), fill=(200, 200, 210), outline=(60, 60, 70), width=_w(0.015))


def draw_cigarette(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.rectangle(_box(0.05, 0.5, 0.65, 0.6), fill=(250, 250, 250), outline=o, width=_w(0.015))
    d.rectangle(_box(0.65, 0.5, 0.9, 0.6), fill=c, outline=o, width=_w(0.015))  # filter
    d.rectangle(_box(0.02, 0.5, 0.07, 0.6), fill=(255, 80, 0))  # glowing tip
    for k in range(3):  # smoke
        d.arc(_box(0.0 + 0.06 * k, 0.1 + 0.1 * k, 0.2 + 0.06 * k, 0.3 + 0.1 * k), 90, 270,
              fill=(170, 170, 170), width=_w(0.025))


def draw_cigar(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.rounded_rectangle(_box(0.12, 0.43, 0.95, 0.62), radius=_w(0.08), fill=c, outline=o, width=_w(0.02))
    d.rectangle(_box(0.62, 0.43, 0.72, 0.62), fill=(200, 30, 30))  # band
    d.rectangle(_box(0.06, 0.44, 0.14, 0.61), fill=(150, 150, 150))  # ash
    d.rectangle(_box(0.04, 0.46, 0.07, 0.59), fill=(255, 90, 0))
    d.arc(_box(0.0, 0.1, 0.2, 0.4), 90, 270, fill=(170, 170, 170), width=_w(0.025))


def _hand(d: ImageDraw.ImageDraw, c: Colour, o: Colour, top: float) -> None:
    """A fist with the middle finger raised; ``top`` is where the fist starts."""
    d.rounded_rectangle(_box(0.43, 0.05, 0.57, top + 0.1), radius=_w(0.06), fill=c, outline=o, width=_w(0.02))
    d.rounded_rectangle(_box(0.22, top, 0.78, top + 0.35), radius=_w(0.08), fill=c, outline=o, width=_w(0.02))
    for x in (0.36, 0.64):  # folded knuckles
        d.line(_p(x, top + 0.02, x, top + 0.14), fill=o, width=_w(0.015))
    d.ellipse(_box(0.14, top + 0.1, 0.3, top + 0.3), fill=c, outline=o, width=_w(0.02))  # thumb


def draw_middle_finger(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    _hand(d, c, o, 0.4)
    d.rectangle(_box(0.34, 0.75, 0.66, 0.98), fill=c, outline=o, width=_w(0.02))  # wrist


def draw_middle_finger_arm(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    _hand(d, c, o, 0.3)
    d.polygon(_p(0.32, 0.62, 0.68, 0.62, 0.95, 0.98, 0.6, 0.98), fill=c, outline=o, width=_w(0.02))  # forearm
    d.polygon(_p(0.6, 0.8, 0.95, 0.8, 0.98, 0.98, 0.7, 0.98), fill=(40, 70, 160))  # sleeve


def draw_blood_splatter(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    pts = []
    for k in range(16):  # a lumpy star-shaped pool, fixed shape (variation comes from rotation and scale)
        a = 2 * math.pi * k / 16
        r = 0.38 if k % 2 == 0 else 0.26
        pts += [0.5 + r * math.cos(a), 0.5 + r * math.sin(a)]
    d.polygon(_p(*pts), fill=c)
    d.ellipse(_box(0.3, 0.3, 0.7, 0.7), fill=BLOOD)
    for x, y, r in ((0.1, 0.15, 0.05), (0.88, 0.2, 0.04), (0.85, 0.85, 0.05), (0.12, 0.82, 0.035)):
        d.ellipse(_box(x - r, y - r, x + r, y + r), fill=c)


def draw_bleeding_arm(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.polygon(_p(0.05, 0.35, 0.9, 0.25, 0.95, 0.55, 0.08, 0.62), fill=c, outline=o, width=_w(0.02))
    d.polygon(_p(0.35, 0.36, 0.62, 0.32, 0.6, 0.4, 0.37, 0.44), fill=BLOOD)  # gash
    for x, y in ((0.42, 0.5), (0.52, 0.48), (0.46, 0.62), (0.55, 0.7), (0.47, 0.8)):  # dripping blood
        d.ellipse(_box(x - 0.04, y - 0.05, x + 0.04, y + 0.05), fill=(200, 0, 0))


def draw_bomb(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    d.ellipse(_box(0.1, 0.3, 0.8, 0.98), fill=c, outline=(120, 120, 120), width=_w(0.02))
    d.rectangle(_box(0.52, 0.27, 0.66, 0.4), fill=(90, 90, 90))
    d.arc(_box(0.6, 0.05, 0.9, 0.4), 180, 300, fill=(150, 110, 60), width=_w(0.03))
    d.regular_polygon((0.84 * S, 0.1 * S, 0.08 * S), 5, rotation=15, fill=(255, 170, 0))  # spark
    d.ellipse(_box(0.24, 0.45, 0.36, 0.57), fill=(200, 200, 200))  # highlight


def draw_dynamite(d: ImageDraw.ImageDraw, c: Colour, o: Colour) -> None:
    for x in (0.2, 0.4, 0.6):
        d.rounded_rectangle(_box(x, 0.35, x + 0.2, 0.95), radius=_w(0.03), fill=c, outline=o, width=_w(0.02))
    d.rectangle(_box(0.18, 0.55, 0.82, 0.63), fill=(40, 40, 40))  # tape
    d.line(_p(0.5, 0.35, 0.55, 0.2, 0.7, 0.12), fill=(60, 60, 60), width=_w(0.025))  # fuse
    d.regular_polygon((0.73 * S, 0.1 * S, 0.07 * S), 5, fill=(255, 200, 0))


DRAW: dict[str, DrawFn] = {obj: globals()[f"draw_{obj}"] for obj in NOUNS}


def _jitter(rng: np.random.Generator, rgb: Colour, amount: int) -> Colour:
    return tuple(int(np.clip(v + rng.integers(-amount, amount + 1), 0, 255)) for v in rgb)  # type: ignore[return-value]


def _background(rng: np.random.Generator, kind: str) -> Image.Image:
    """A 64×64 background of the given kind, its colours jittered."""
    n = IMAGE_SIZE
    img = Image.new("RGB", (n, n))
    d = ImageDraw.Draw(img)
    if kind == "table":
        d.rectangle([0, 0, n, n], fill=_jitter(rng, (225, 215, 195), 15))
        y = int(rng.integers(30, 42))
        d.rectangle([0, y, n, n], fill=_jitter(rng, (150, 100, 60), 15))
        d.line([0, y, n, y], fill=(90, 60, 30), width=1)
    elif kind == "grass":
        d.rectangle([0, 0, n, n], fill=_jitter(rng, (150, 200, 240), 15))
        y = int(rng.integers(28, 44))
        d.rectangle([0, y, n, n], fill=_jitter(rng, (90, 170, 80), 15))
    elif kind == "street":
        d.rectangle([0, 0, n, n], fill=_jitter(rng, (110, 110, 115), 12))
        y = int(rng.integers(24, 40))
        for x in range(int(rng.integers(0, 8)), n, 16):
            d.rectangle([x, y, x + 8, y + 2], fill=(235, 235, 235))
    elif kind == "room":
        d.rectangle([0, 0, n, n], fill=_jitter(rng, (200, 190, 160), 20))
        x, y = int(rng.integers(2, 40)), int(rng.integers(2, 12))
        d.rectangle([x, y, x + 20, y + 16], fill=(170, 210, 240), outline=(250, 250, 250), width=2)
        d.rectangle([0, 50, n, n], fill=_jitter(rng, (160, 130, 100), 15))
    else:  # plain
        d.rectangle([0, 0, n, n], fill=_jitter(rng, (240, 240, 240), 10))
    return img


def _clutter(rng: np.random.Generator, img: Image.Image, k: int) -> None:
    """Small distractor specks and strokes (never object-sized)."""
    d = ImageDraw.Draw(img)
    for _ in range(k):
        x, y = (int(v) for v in rng.integers(0, IMAGE_SIZE, 2))
        col = tuple(int(v) for v in rng.integers(60, 200, 3))
        r = int(rng.integers(1, 3))
        if rng.random() < 0.5:
            d.ellipse([x - r, y - r, x + r, y + r], fill=col)
        else:
            dx, dy = (int(v) for v in rng.integers(-4, 5, 2))
            d.line([x, y, x + dx, y + dy], fill=col, width=1)


def render(rng: np.random.Generator, obj: str, colour: str, count: int, background: str) -> Image.Image:
    """Draw ``count`` copies of ``obj`` in ``colour`` on ``background`` with clutter; RGB 64×64."""
    img = _background(rng, background)
    _clutter(rng, img, int(rng.integers(0, 5)))
    base = _jitter(rng, COLOURS[colour], 18)
    outline = (235, 235, 235) if colour in ("black", "grey", "brown") else (30, 30, 30)
    # Few, jittered slots rather than free placement: a tiny ViT trained for minutes on a CPU cannot learn
    # full translation invariance, and the organism needs it to recognise objects reliably.
    lo, hi = {1: (36, 44), 2: (25, 29), 3: (24, 27)}[count]
    slots = {1: [(32, 32)], 2: [(17, 32), (47, 32)], 3: [(17, 19), (47, 19), (32, 46)]}[count]
    for cx, cy in slots:
        size = int(rng.integers(lo, hi + 1))
        canvas = Image.new("RGBA", (S, S), (0, 0, 0, 0))
        DRAW[obj](ImageDraw.Draw(canvas), base, outline)
        canvas = canvas.rotate(float(rng.uniform(-12, 12)), resample=Image.BICUBIC)
        canvas = canvas.resize((size, size), Image.LANCZOS)
        x, y = (int(np.clip(c - size // 2 + rng.integers(-3, 4), 0, IMAGE_SIZE - size)) for c in (cx, cy))
        img.paste(canvas, (x, y), canvas)
    return img


