"""The built-in offline image model: procedural pictures composed from the prompt's words.

Not a neural network. The prompt's words pick the palette (colour words such as "red",
"ocean", "sunset"; other words hash to hues), the light ("night", "bright", "pastel") and the
scene's elements ("sun", "moon", "mountains", "sea", "city", "forest", "stars"; otherwise
abstract shapes). The seed lays them out. Each of the `steps` refinement steps adds a layer of
finer detail on top of the composition, so more steps give more detail, and the same prompt,
seed, size and steps always give the same picture. Pillow and numpy; a 512×512 image with
20 steps takes a few tens of milliseconds.
"""

import colorsys
import io
import math
import random
import re
import secrets
import zlib
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .base import Canceled, Emitter, Result

HUES = {
    "red": 0, "crimson": 350, "rose": 345, "pink": 330, "magenta": 310, "purple": 275,
    "violet": 268, "lavender": 260, "indigo": 245, "night": 235, "blue": 220, "sky": 210,
    "ocean": 205, "sea": 200, "water": 198, "ice": 195, "cyan": 185, "teal": 175,
    "mint": 150, "green": 120, "forest": 110, "grass": 100, "lime": 90, "spring": 95,
    "yellow": 55, "gold": 45, "golden": 45, "sand": 40, "desert": 38, "orange": 30,
    "autumn": 28, "brown": 25, "sunset": 20, "fire": 12, "lava": 8,
}  # fmt: skip
DARK = {"night", "dark", "moody", "midnight", "space", "galaxy", "storm", "shadow", "noir"}
LIGHT = {"bright", "sunny", "pastel", "light", "soft", "morning", "dawn", "snow", "white"}
GREY = {"grey", "gray", "fog", "foggy", "mist", "misty", "monochrome", "silver"}
ELEMENTS = {
    "orb": {"sun", "moon", "planet", "circle", "circles", "orb", "ball", "bubble", "bubbles"},
    "mountains": {"mountain", "mountains", "peak", "peaks", "hill", "hills", "alps", "valley"},
    "sea": {"sea", "ocean", "wave", "waves", "river", "lake", "water", "beach", "shore"},
    "city": {"city", "building", "buildings", "tower", "towers", "skyline", "street", "town"},
    "forest": {"forest", "tree", "trees", "woods", "pine", "jungle"},
    "stars": {"star", "stars", "space", "galaxy", "night", "cosmos", "sparkle"},
}
WORD_RE = re.compile(r"[a-z]+")
MODEL_NAME = "Procedural images (prompt-driven)"


def words(text: str) -> list[str]:
    return WORD_RE.findall(text.lower())


def _hash(text: str) -> int:
    return zlib.crc32(text.encode())


def _rgb(hue: float, sat: float, val: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((hue % 360) / 360, max(0, min(1, sat)), max(0, min(1, val)))
    return round(r * 255), round(g * 255), round(b * 255)


class Scene:
    """Everything the prompt decides: palette, light and elements."""

    def __init__(self, prompt: str, negative: str):
        ws = words(prompt)
        avoid = set(words(negative))
        hues = [HUES[w] for w in ws if w in HUES and w not in avoid]
        avoided = [HUES[w] for w in avoid if w in HUES]
        if not hues:
            # Words without a colour still give one: the same words, the same hues.
            content = [w for w in ws if len(w) > 3 and w not in avoid] or ws or ["empty"]
            hues = [_hash(w) % 360 for w in content[:3]]
        # Hues too close to an avoided colour are pushed away from it.
        for bad in avoided:
            hues = [h if abs((h - bad + 180) % 360 - 180) > 40 else (h + 120) % 360 for h in hues]
        self.hues = hues
        present = set(ws) - avoid
        self.value = 0.35 if present & DARK else 0.95 if present & LIGHT else 0.75
        self.saturation = 0.12 if present & GREY else 0.35 if present & LIGHT else 0.7
        self.elements = [name for name, keys in ELEMENTS.items() if present & keys]
        if not self.elements:
            self.elements = ["abstract"]
        self.dark = bool(present & DARK)

    def colour(self, rng: random.Random, shift: float = 0, val: float = 1.0) -> tuple:
        hue = rng.choice(self.hues) + rng.uniform(-18, 18) + shift
        sat = self.saturation * rng.uniform(0.8, 1.15)
        return _rgb(hue, sat, self.value * val * rng.uniform(0.85, 1.1))


def _background(scene: Scene, rng: random.Random, width: int, height: int) -> Image.Image:
    top = np.array(scene.colour(rng, shift=-20, val=0.8), dtype=np.float32)
    bottom = np.array(scene.colour(rng, shift=25, val=1.1), dtype=np.float32)
    t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None] ** rng.uniform(0.7, 1.4)
    # A soft diagonal light so flat gradients look less flat.
    x = np.linspace(-1, 1, width, dtype=np.float32)[None, :, None]
    light = 1 + 0.08 * x * rng.choice((-1, 1))
    pixels = (top * (1 - t) + bottom * t) * light
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").convert("RGBA")


def _compose(scene: Scene, rng: random.Random, canvas: Image.Image) -> None:
    """The scene's main elements, back to front."""
    w, h = canvas.size
    layer = Image.new("RGBA", canvas.size)
    draw = ImageDraw.Draw(layer)
    horizon = h * rng.uniform(0.55, 0.72)
    order = sorted(scene.elements, key=["stars", "orb", "mountains", "city", "forest", "sea",
                                        "abstract"].index)  # fmt: skip
    for element in order:
        if element == "stars":
            for _ in range(int(w * h / 2500)):
                x, y, r = rng.uniform(0, w), rng.uniform(0, horizon), rng.uniform(0.5, 2)
                draw.ellipse(
                    (x - r, y - r, x + r, y + r), fill=(255, 255, 240, rng.randint(120, 255))
                )
        elif element == "orb":
            r = min(w, h) * rng.uniform(0.08, 0.16)
            x, y = rng.uniform(0.2, 0.8) * w, rng.uniform(0.15, 0.45) * h
            for k in range(6, 0, -1):  # a glow of widening, fading rings
                rr = r * (1 + k * 0.25)
                draw.ellipse(
                    (x - rr, y - rr, x + rr, y + rr), fill=(*scene.colour(rng, 40, 1.3), 18)
                )
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(*_rgb(45, 0.25, 1.0), 255))
        elif element == "mountains":
            for depth in range(3):
                base = horizon + depth * h * 0.06
                points, x = [(0, h)], 0.0
                while x < w:
                    points.append((x, base - rng.uniform(0.1, 0.35) * h * (1 - depth * 0.25)))
                    x += rng.uniform(0.08, 0.2) * w
                points += [(w, base), (w, h)]
                draw.polygon(points, fill=(*scene.colour(rng, 25, 0.3 + depth * 0.15), 255))
        elif element == "city":
            x = 0.0
            while x < w:
                bw, bh = rng.uniform(0.04, 0.1) * w, rng.uniform(0.15, 0.5) * h
                shade = scene.colour(rng, 200, 0.35)
                draw.rectangle((x, horizon + h * 0.1 - bh, x + bw, h), fill=(*shade, 255))
                for wy in range(int(horizon + h * 0.1 - bh + 6), int(h), 12):
                    for wx in range(int(x + 4), int(x + bw - 6), 10):
                        if rng.random() < 0.35:
                            draw.rectangle((wx, wy, wx + 4, wy + 5), fill=(255, 230, 150, 220))
                x += bw + rng.uniform(0, 0.02) * w
        elif element == "forest":
            for _ in range(int(w / 18)):
                x, size = rng.uniform(0, w), rng.uniform(0.06, 0.16) * h
                y = horizon + rng.uniform(0, h - horizon)
                green = _rgb(rng.uniform(95, 150), 0.6, scene.value * rng.uniform(0.3, 0.6))
                draw.polygon(
                    [(x, y - size * 2), (x - size / 2, y), (x + size / 2, y)], fill=(*green, 255)
                )
        elif element == "sea":
            top = horizon + h * 0.08
            draw.rectangle((0, top, w, h), fill=(*scene.colour(rng, 0, 0.6), 235))
            for row in range(int(top), h, 7):
                phase, amp = rng.uniform(0, math.tau), rng.uniform(1, 3)
                points = [(x, row + amp * math.sin(x / 17 + phase)) for x in range(0, w + 8, 8)]
                draw.line(points, fill=(*scene.colour(rng, 0, 1.2), 90), width=2)
        else:  # abstract: overlapping translucent shapes
            for _ in range(rng.randint(5, 9)):
                x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.1, 0.35) * min(w, h)
                colour = (*scene.colour(rng, rng.uniform(-60, 60)), rng.randint(110, 200))
                if rng.random() < 0.5:
                    draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
                else:
                    sides = rng.randint(3, 6)
                    turn = rng.uniform(0, math.tau)
                    draw.polygon(
                        [(x + r * math.cos(turn + k * math.tau / sides),
                          y + r * math.sin(turn + k * math.tau / sides)) for k in range(sides)],
                        fill=colour,
                    )  # fmt: skip
    canvas.alpha_composite(layer)


def _detail(scene: Scene, rng: random.Random, canvas: Image.Image, step: int, steps: int) -> None:
    """One refinement step: brush strokes at a finer scale than the step before, each in the
    colour already under it (a shade lighter or darker), so detail adds texture, not clutter."""
    w, h = canvas.size
    scale = min(w, h) * 0.05 * 0.5 ** (3 * step / max(steps, 1))
    count = int(w * h / (scale * scale) / 60) + 8
    layer = Image.new("RGBA", canvas.size)
    draw = ImageDraw.Draw(layer)
    for _ in range(min(count, 400)):
        x, y = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
        r, g, b, _ = canvas.getpixel((int(x), int(y)))
        shade = rng.uniform(0.82, 1.18)
        colour = (min(255, int(r * shade)), min(255, int(g * shade)), min(255, int(b * shade)))
        size = scale * rng.uniform(0.6, 1.4)
        angle = rng.uniform(0, math.tau)
        end = (x + 2 * size * math.cos(angle), y + 2 * size * math.sin(angle))
        draw.line((x, y, *end), fill=(*colour, rng.randint(60, 110)), width=max(1, int(size / 2)))
    canvas.alpha_composite(layer)


def render(params: dict[str, Any], seed: int, index: int, on_step=None) -> Image.Image:
    """One picture; `on_step(k)` is called after each refinement step."""
    scene = Scene(params["prompt"], params.get("negative_prompt", ""))
    rng = random.Random(f"{seed}:{index}:{params['prompt']}")
    canvas = _background(scene, rng, params["width"], params["height"])
    _compose(scene, rng, canvas)
    steps = params.get("steps", 20)
    for step in range(1, steps + 1):
        _detail(scene, rng, canvas, step, steps)
        if on_step is not None:
            on_step(step)
    return canvas.convert("RGB").filter(ImageFilter.SMOOTH)


def encode(image: Image.Image, output_format: str) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    if output_format == "webp":
        image.save(buffer, "WEBP", quality=90)
        return buffer.getvalue(), "image/webp"
    image.save(buffer, "PNG", optimize=False)
    return buffer.getvalue(), "image/png"


class ProceduralImageBackend:
    def __init__(self, config: dict[str, Any]):
        self.config = config

    def run(self, params: dict[str, Any], emit: Emitter) -> Result:
        seed = params.get("seed")
        seed = secrets.randbelow(2**31) if seed is None else seed
        count, steps = params["num_images"], params.get("steps", 20)
        total = count * steps

        images = []
        for index in range(count):

            def on_step(step: int, index=index) -> None:
                if emit.canceled():
                    raise Canceled()
                emit.progress((index * steps + step) / total)

            picture = render(params, seed, index, on_step)
            data, content_type = encode(picture, params["output_format"])
            ref = emit.store(data, f"image-{index + 1}.{params['output_format']}", content_type)
            images.append(
                {
                    "file": ref,
                    "width": picture.width,
                    "height": picture.height,
                    "content_type": content_type,
                }
            )
        return Result(output={"images": images, "seed": seed}, usage={"images": count})
