"""The built-in offline image-to-video model: animates one picture into an H.264 MP4.

Not a neural network. The prompt's words choose camera moves and effects ("zoom in",
"zoom out", "pan left/right/up/down", "rotate", "parallax", "warm"/"sunset" or "cool"/"night"
colour drift, "pulse"); words in `negative_prompt` ("zoom", "pan", "rotation", "parallax",
"colour", "pulse", or "motion" for all camera moves) switch them off. Without motion words the
seed picks a gentle move. `guidance` scales how strong every effect is. Frames are made with
Pillow and numpy and encoded by the ffmpeg that the imageio-ffmpeg wheel ships, one frame at a
time (progress per frame; a cancel stops at the next frame).
"""

import math
import os
import random
import secrets
import tempfile
from typing import Any

import imageio_ffmpeg
import numpy as np
from PIL import Image

from .. import media
from .base import BackendError, Canceled, Emitter, Result
from .imagegen import words

MODEL_NAME = "Image-to-video (camera moves)"
SHORT_SIDE = {"360p": 360, "480p": 480, "720p": 720}
# The source is cropped this much larger than a frame, so moves never run off its edge.
MARGIN = 1.3
MOTION_WORDS = {
    "zoom_in": {"zoom", "push", "closer", "approach", "dolly", "into"},
    "zoom_out": {"out", "pull", "back", "away", "reveal", "retreat"},
    "left": {"left", "westward"},
    "right": {"right", "eastward"},
    "up": {"up", "rise", "rising", "upward", "tilt"},
    "down": {"down", "fall", "falling", "downward", "sink"},
    "rotate": {"rotate", "rotation", "spin", "spinning", "turn", "swirl", "roll"},
    "parallax": {"parallax", "depth", "layers", "3d"},
    "warm": {"warm", "sunset", "golden", "sunrise", "fire", "autumn"},
    "cool": {"cool", "cold", "night", "blue", "winter", "moonlight", "ice"},
    "pulse": {"pulse", "pulsing", "flicker", "beat", "heartbeat", "throb", "strobe"},
}
NEGATIVE_WORDS = {
    "zoom": {"zoom_in", "zoom_out"},
    "pan": {"left", "right", "up", "down"},
    "rotate": {"rotate"},
    "rotation": {"rotate"},
    "parallax": {"parallax"},
    "colour": {"warm", "cool"},
    "color": {"warm", "cool"},
    "pulse": {"pulse"},
    "flicker": {"pulse"},
    "motion": {"zoom_in", "zoom_out", "left", "right", "up", "down", "rotate", "parallax"},
    "camera": {"zoom_in", "zoom_out", "left", "right", "up", "down", "rotate", "parallax"},
}


def frame_size(aspect_ratio: str, resolution: str) -> tuple[int, int]:
    """Even width and height (H.264 with 4:2:0 chroma needs both even)."""
    a, b = (int(n) for n in aspect_ratio.split(":"))
    short = SHORT_SIDE[resolution]
    if a >= b:
        return round(short * a / b / 2) * 2, short
    return short, round(short * b / a / 2) * 2


def motions(prompt: str, negative: str, rng: random.Random) -> set[str]:
    present = set(words(prompt))
    chosen = {name for name, keys in MOTION_WORDS.items() if present & keys}
    if "zoom_out" in chosen:
        chosen.discard("zoom_in")
    if "zoom" in present and not chosen & {"zoom_in", "zoom_out"}:
        chosen.add("zoom_in")
    if not chosen & {"zoom_in", "zoom_out", "left", "right", "up", "down", "rotate"}:
        chosen |= {rng.choice(["zoom_in", "zoom_out"]), rng.choice(["left", "right", "up"])}
    for word in set(words(negative)):
        chosen -= NEGATIVE_WORDS.get(word, set())
    return chosen


def _cover(image: Image.Image, width: int, height: int) -> Image.Image:
    """The image centre-cropped to width:height and scaled to cover it."""
    scale = max(width / image.width, height / image.height)
    resized = image.resize(
        (max(width, round(image.width * scale)), max(height, round(image.height * scale))),
        Image.Resampling.LANCZOS,
    )
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    return resized.crop((left, top, left + width, top + height))


class Animator:
    """Makes frame i of n from the source picture."""

    def __init__(self, image: Image.Image, params: dict[str, Any], seed: int):
        rng = random.Random(seed)
        self.width, self.height = frame_size(params["aspect_ratio"], params["resolution"])
        self.source = _cover(
            image.convert("RGB"), round(self.width * MARGIN), round(self.height * MARGIN)
        )
        self.moves = motions(params["prompt"], params.get("negative_prompt", ""), rng)
        self.strength = params.get("guidance", 6.0) / 6.0
        self.jitter = rng.uniform(0.85, 1.15)
        self.beats = rng.choice((2, 3, 4))

    def frame(self, i: int, n: int) -> np.ndarray:
        t = i / max(n - 1, 1)
        ease = t * t * (3 - 2 * t)
        amount = min(self.strength * self.jitter, 2.5) * ease
        w, h = self.width, self.height
        # At rest a frame shows the whole source; pans and turns need some room around it.
        zoom = 1 / MARGIN
        if self.moves & {"left", "right", "up", "down"}:
            zoom *= 1.15
        if "zoom_in" in self.moves:
            zoom *= 1 + 0.15 * amount
        elif "zoom_out" in self.moves:
            zoom *= (1 + 0.15 * min(self.strength * self.jitter, 2.5)) / (1 + 0.15 * amount)
        room_x = (self.source.width - w / zoom) / 2
        room_y = (self.source.height - h / zoom) / 2
        dx = dy = 0.0
        share = min(amount / 2.5, 1.0)
        dx += -room_x * share if "left" in self.moves else 0
        dx += room_x * share if "right" in self.moves else 0
        dy += -room_y * share if "up" in self.moves else 0
        dy += room_y * share if "down" in self.moves else 0
        angle = math.radians(3 * amount) if "rotate" in self.moves else 0.0
        if angle:
            # Zoom in just enough that the turned frame never shows a corner of nothing.
            zoom *= math.cos(angle) + math.sin(angle) * max(w / h, h / w)
        # Output pixel (x, y) samples the source at centre + R(angle) · (p − centre) / zoom.
        cx, cy = self.source.width / 2 + dx, self.source.height / 2 + dy
        cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
        a, b, d, e = cos, -sin, sin, cos
        c = cx - a * w / 2 - b * h / 2
        f = cy - d * w / 2 - e * h / 2
        if angle:
            frame = self.source.transform(
                (w, h), Image.Transform.AFFINE, (a, b, c, d, e, f), Image.Resampling.BILINEAR
            )
        else:  # the same window without turning: a (faster) resize of a box of the source
            bw, bh = min(w / zoom, self.source.width), min(h / zoom, self.source.height)
            x0 = min(max(cx - bw / 2, 0), self.source.width - bw)
            y0 = min(max(cy - bh / 2, 0), self.source.height - bh)
            box = (x0, y0, x0 + bw, y0 + bh)
            frame = self.source.resize((w, h), Image.Resampling.BILINEAR, box=box)
        gain = [1.0, 1.0, 1.0]
        if "warm" in self.moves:
            gain = [g * (1 + k * amount) for g, k in zip(gain, (0.12, 0.03, -0.1), strict=True)]
        if "cool" in self.moves:
            gain = [g * (1 + k * amount) for g, k in zip(gain, (-0.1, 0.0, 0.12), strict=True)]
        if "pulse" in self.moves:
            pulse = 1 + 0.08 * min(self.strength, 2.5) * math.sin(math.tau * self.beats * t)
            gain = [g * pulse for g in gain]
        if gain != [1.0, 1.0, 1.0]:
            # A lookup table per channel: one pass in C instead of float arithmetic per pixel.
            frame = frame.point([min(255, round(v * g)) for g in gain for v in range(256)])
        pixels = np.asarray(frame)
        if "parallax" in self.moves:
            # Lower rows (nearer) slide further than upper rows (farther away).
            shift = (np.linspace(-0.5, 1.0, h) * 0.04 * w * amount).astype(np.int32)
            columns = np.clip(np.arange(w)[None, :] + shift[:, None], 0, w - 1)
            pixels = pixels[np.arange(h)[:, None], columns]
        return np.ascontiguousarray(pixels)


class ImageToVideoBackend:
    def __init__(self, config: dict[str, Any]):
        self.config = config

    def run(self, params: dict[str, Any], emit: Emitter) -> Result:
        source = media.file_for_ref(params["image"])
        if source is None:
            raise BackendError("invalid_input", "The input image is no longer available.")
        try:
            image = media.open_image(media.read_file(source))
        except (ValueError, FileNotFoundError) as exc:
            raise BackendError("invalid_input", f"image: {exc}") from None
        seed = params.get("seed")
        seed = secrets.randbelow(2**31) if seed is None else seed
        animator = Animator(image, params, seed)
        n, fps = params["num_frames"], params["fps"]
        emit.log(f"camera: {', '.join(sorted(animator.moves)) or 'still'}")

        handle, path = tempfile.mkstemp(suffix=".mp4")
        os.close(handle)
        try:
            writer = imageio_ffmpeg.write_frames(
                path,
                (animator.width, animator.height),
                fps=fps,
                codec="libx264",
                quality=None,
                macro_block_size=2,
                ffmpeg_log_level="error",
                output_params=["-preset", "veryfast", "-crf", "23", "-movflags", "+faststart"],
            )
            writer.send(None)  # starts ffmpeg
            try:
                for i in range(n):
                    if emit.canceled():
                        raise Canceled()
                    writer.send(animator.frame(i, n).tobytes())
                    emit.progress((i + 1) / n)
            finally:
                writer.close()
            with open(path, "rb") as f:
                data = f.read()
        finally:
            os.unlink(path)
        ref = emit.store(data, "video.mp4", "video/mp4")
        seconds = round(n / fps, 3)
        output = {
            "video": {
                "file": ref,
                "width": animator.width,
                "height": animator.height,
                "num_frames": n,
                "fps": fps,
                "duration": seconds,
                "content_type": "video/mp4",
            },
            "seed": seed,
        }
        return Result(output=output, usage={"seconds": seconds, "frames": n})
