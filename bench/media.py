"""Built-in media backends: seconds per job at typical and largest parameters, in process.

    .venv/bin/python bench/media.py [--rounds 3]

Runs each backend directly (no server, no database: outputs go to a counting emitter), so the
figures are the generation and encoding cost alone; the median of the rounds is printed with the
output's size. On a shared 2-core machine the spread between rounds is large; compare figures
from one run only.
"""

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")

import django  # noqa: E402

django.setup()

from PIL import Image  # noqa: E402

from playground.engine import audiogen, imagegen, videogen  # noqa: E402


class Emitter:
    def __init__(self):
        self.bytes = 0
        self.steps = 0

    def progress(self, value):
        self.steps += 1

    def log(self, message):
        pass

    def canceled(self):
        return False

    def store(self, data, filename, content_type):
        self.bytes += len(data)
        return f"00000000-0000-0000-0000-000000000000/{filename}"


def image_params(**extra):
    base = {"prompt": "a city by the sea at night with stars", "width": 512, "height": 512,
            "num_images": 1, "steps": 20, "seed": 1, "output_format": "png",
            "negative_prompt": ""}  # fmt: skip
    return {**base, **extra}


def video_backend(params):
    """The video backend with its input picture given in memory."""
    picture = imagegen.render(image_params(width=768, height=512), 1, 0)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")

    class Backend(videogen.ImageToVideoBackend):
        def run(self, params, emit):
            original_file, original_read = videogen.media.file_for_ref, videogen.media.read_file
            videogen.media.file_for_ref = lambda ref: object()
            videogen.media.read_file = lambda f: buffer.getvalue()
            try:
                return super().run(params, emit)
            finally:
                videogen.media.file_for_ref, videogen.media.read_file = (
                    original_file,
                    original_read,
                )

    return Backend({})


CASES = [
    ("image 512², 20 steps", imagegen.ProceduralImageBackend({}), image_params()),
    ("image 4 × 1024², 50 steps", imagegen.ProceduralImageBackend({}),
     image_params(width=1024, height=1024, num_images=4, steps=50)),
    ("video 480p, 48 frames (zoom)", None,
     {"prompt": "zoom in", "image": "x", "aspect_ratio": "16:9", "resolution": "480p",
      "num_frames": 48, "fps": 24, "guidance": 6, "seed": 1, "negative_prompt": ""}),
    ("video 720p, 240 frames (every effect)", None,
     {"prompt": "zoom in pan left rotate parallax warm pulse", "image": "x",
      "aspect_ratio": "16:9", "resolution": "720p", "num_frames": 240, "fps": 24,
      "guidance": 6, "seed": 1, "negative_prompt": ""}),
    ("music 10 s", audiogen.MusicBackend({}),
     {"prompt": "dance piano with drums", "duration": 10, "seed": 1, "output_format": "wav"}),
    ("music 60 s, mp3", audiogen.MusicBackend({}),
     {"prompt": "dance piano with drums", "duration": 60, "seed": 1, "output_format": "mp3"}),
    ("speech 2 sentences", audiogen.SpeechBackend({}),
     {"prompt": "Hello from the playground. This is the speech model.", "voice": "en-us",
      "speed": 175, "pitch": 50, "output_format": "wav"}),
    ("speech 5000 characters", audiogen.SpeechBackend({}),
     {"prompt": "A sentence of ordinary length for the speech bench. " * 96, "voice": "en-us",
      "speed": 175, "pitch": 50, "output_format": "wav"}),
]  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    Image.init()
    print(f"{'case':40} {'median s':>9} {'min s':>7} {'output':>10} {'events':>7}")
    for name, backend, params in CASES:
        backend = backend or video_backend(params)
        times = []
        for _ in range(args.rounds):
            emit = Emitter()
            started = time.perf_counter()
            try:
                backend.run(params, emit)
            except audiogen.BackendError as exc:
                print(f"{name:40} skipped: {exc.message}")
                break
            times.append(time.perf_counter() - started)
        if times:
            size = f"{emit.bytes / 1024:.0f} KiB"
            print(
                f"{name:40} {statistics.median(times):9.3f} {min(times):7.3f} {size:>10} "
                f"{emit.steps:7d}"
            )


if __name__ == "__main__":
    main()
