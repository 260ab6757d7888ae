"""The built-in offline audio models: text-to-speech (espeak-ng) and prompt-to-music (a synth).

Speech: the text is split into sentences, each spoken by the espeak-ng program (Debian
package `espeak-ng`) into a WAV, and the pieces are joined; progress per sentence, and a cancel
stops the running espeak-ng. Without the program jobs fail with `model_unavailable`.

Music: not a neural network. Words of the prompt set the tempo ("slow", "calm" → ~70 bpm;
"dance", "energetic" → ~128; or "90 bpm"), the key ("in D", "A minor"; "sad", "dark" pick a
minor key) and the instrument ("piano", "organ", "strings"/"pad", "bells", "flute", "synth",
"guitar"); "drums", "beat", "dance", "rock" add a drum kit. The seed writes the melody over a
four-chord progression; numpy renders it additively, one bar at a time (progress per bar).
Both make 16-bit mono WAV (or MP3, encoded by imageio-ffmpeg's ffmpeg) and report the
duration, which is what they are billed for.
"""

import io
import math
import os
import random
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import wave
from typing import Any

import numpy as np
from django.conf import settings

from .base import BackendError, Canceled, Emitter, Result
from .imagegen import words

# ---- speech --------------------------------------------------------------------------------

SENTENCE_RE = re.compile(r"[^.!?;:\n]+[.!?;:\n]*")
SPEECH_MODEL = "espeak-ng speech"


def speech_seconds_bound(params: dict[str, Any]) -> float:
    """The longest the speech of `params` can be, for the hold: as if every character
    were a word (real text has five or more per word), plus a pause per sentence."""
    text = params["prompt"]
    return round(len(text) * 60 / params["speed"] + 0.5 * (1 + len(SENTENCE_RE.findall(text))), 3)


def espeak_path() -> str:
    path = shutil.which(settings.PLAYGROUND_ESPEAK_BIN)
    if path is None:
        raise BackendError(
            "model_unavailable",
            "espeak-ng is not installed on this server, so speech cannot be made; "
            "the operator can install it (Debian/Ubuntu: apt-get install espeak-ng).",
        )
    return path


def _speak(binary: str, text: str, params: dict[str, Any], emit: Emitter) -> bytes:
    """One piece of text as WAV bytes; kills espeak-ng if the job is canceled meanwhile."""
    handle, path = tempfile.mkstemp(suffix=".wav")
    os.close(handle)
    try:
        command = [binary, "-v", params["voice"], "-s", str(params["speed"])]
        command += ["-p", str(params["pitch"]), "-w", path, "--stdin"]
        # The text goes through stdin, never the command line: it can't become an option.
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        process.stdin.write(text.encode())
        process.stdin.close()
        deadline = time.monotonic() + 120
        while process.poll() is None:
            if emit.canceled() or time.monotonic() > deadline:
                process.kill()
                process.wait()
                if emit.canceled():
                    raise Canceled()
                raise BackendError("internal_error", "espeak-ng took too long.")
            time.sleep(0.01)
        error = process.stderr.read().decode(errors="replace").strip()
        process.stderr.close()
        if process.returncode != 0:
            raise BackendError("internal_error", f"espeak-ng failed: {error[:200]}")
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """16-bit mono WAV of float samples in -1..1."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def to_mp3(wav: bytes) -> bytes:
    """WAV bytes as MP3, by the ffmpeg that the imageio-ffmpeg wheel ships (with LAME)."""
    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error"]
    command += ["-f", "wav", "-i", "pipe:0", "-codec:a", "libmp3lame", "-q:a", "4"]
    command += ["-f", "mp3", "pipe:1"]
    done = subprocess.run(command, input=wav, capture_output=True, timeout=120)
    if done.returncode != 0 or not done.stdout:
        message = done.stderr.decode(errors="replace").strip()[:200]
        raise BackendError("internal_error", f"MP3 encoding failed: {message}")
    return done.stdout


def _audio_output(
    emit: Emitter, data: bytes, rate: int, frames: int, output_format: str = "wav", **extra
) -> Result:
    seconds = round(frames / rate, 3)
    if output_format == "mp3":
        if emit.canceled():
            raise Canceled()
        data, content_type = to_mp3(data), "audio/mpeg"
    else:
        content_type = "audio/wav"
    ref = emit.store(data, f"audio.{output_format}", content_type)
    output = {
        "audio_file": ref,
        "duration": seconds,
        "format": output_format,
        "sample_rate": rate,
        "content_type": content_type,
        **extra,
    }
    return Result(output=output, usage={"seconds": seconds})


class SpeechBackend:
    def __init__(self, config: dict[str, Any]):
        self.config = config

    def run(self, params: dict[str, Any], emit: Emitter) -> Result:
        binary = espeak_path()
        pieces = [p.strip() for p in SENTENCE_RE.findall(params["prompt"]) if p.strip()]
        pieces = pieces or [params["prompt"]]
        rate, chunks = None, []
        for i, piece in enumerate(pieces):
            if emit.canceled():
                raise Canceled()
            with wave.open(io.BytesIO(_speak(binary, piece, params, emit))) as part:
                rate = part.getframerate()
                chunks.append(part.readframes(part.getnframes()))
            emit.progress((i + 1) / len(pieces))
        frames = b"".join(chunks)
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(frames)
        fmt = params.get("output_format", "wav")
        return _audio_output(
            emit, buffer.getvalue(), rate, len(frames) // 2, fmt, voice=params["voice"]
        )


# ---- music ---------------------------------------------------------------------------------

RATE = 24000
MUSIC_MODEL = "Prompt-to-music synth"
NOTES = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
KEY_RE = re.compile(
    r"\b(?:in|key of)\s+([a-g])(#|♯|b|♭|\s+sharp|\s+flat)?(?:\s+(major|minor))?\b"
    r"|\b([a-g])(#|♯|b|♭|\s+sharp|\s+flat)?\s+(major|minor)\b",
    re.IGNORECASE,
)
BPM_RE = re.compile(r"\b(\d{2,3})\s*bpm\b", re.IGNORECASE)
SLOW = {"slow", "calm", "ambient", "sleep", "relaxing", "lullaby", "peaceful", "chill", "lofi"}
FAST = {"fast", "dance", "energetic", "upbeat", "party", "techno", "house", "edm", "rock", "racing"}
MINOR = {"minor", "sad", "dark", "melancholy", "melancholic", "moody", "mysterious", "rain"}
DRUMS = {"drum", "drums", "beat", "beats", "dance", "rock", "techno", "house", "groove", "funk"}
INSTRUMENTS = {
    "piano": {"piano", "keys"},
    "organ": {"organ", "church", "hammond"},
    "pad": {"strings", "pad", "choir", "ambient", "orchestra", "cinematic"},
    "bell": {"bell", "bells", "chime", "chimes", "celesta", "glockenspiel"},
    "flute": {"flute", "whistle", "wind", "pan"},
    "synth": {"synth", "chiptune", "retro", "square", "arcade", "techno"},
    "guitar": {"guitar", "harp", "pluck", "plucked", "acoustic"},
}
SCALES = {"major": [0, 2, 4, 5, 7, 9, 11], "minor": [0, 2, 3, 5, 7, 8, 10]}
PROGRESSIONS = {"major": [0, 4, 5, 3], "minor": [0, 5, 2, 6]}  # I–V–vi–IV, i–VI–III–VII
NOTE_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]


def plan(prompt: str, seed: int) -> dict[str, Any]:
    """Tempo, key and instrument from the prompt's words (the seed where it says nothing)."""
    rng = random.Random(seed)
    ws = set(words(prompt))
    bpm_match = BPM_RE.search(prompt)
    if bpm_match:
        tempo = max(40, min(220, int(bpm_match[1])))
    else:
        base = 70 if ws & SLOW else 128 if ws & FAST else 100
        tempo = base + rng.randint(-4, 4)
    mode = "minor" if ws & MINOR else "major"
    root = rng.randrange(12)
    key = KEY_RE.search(prompt)
    if key:
        letter, accidental, named_mode = key[1] or key[4], key[2] or key[5], key[3] or key[6]
        root = NOTES[letter.lower()]
        accidental = (accidental or "").strip().lower()
        root = (root + (1 if accidental in ("#", "♯", "sharp") else 0)) % 12
        root = (root - (1 if accidental in ("b", "♭", "flat") else 0)) % 12
        if named_mode:
            mode = named_mode.lower()
    instrument = next((name for name, keys in INSTRUMENTS.items() if ws & keys), None)
    instrument = instrument or rng.choice(sorted(INSTRUMENTS))
    return {
        "tempo": tempo,
        "key": f"{NOTE_NAMES[root]} {mode}",
        "root": root,
        "mode": mode,
        "instrument": instrument,
        "drums": bool(ws & DRUMS),
    }


def _freq(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def tone(instrument: str, midi: float, seconds: float, rng: random.Random) -> np.ndarray:
    """One note of an instrument, additively synthesised, with its envelope."""
    n = max(1, int(seconds * RATE))
    t = np.arange(n, dtype=np.float32) / RATE
    f = _freq(midi)
    if instrument == "bell":
        partials = [(1, 1.0, 1.2), (2.76, 0.5, 2.5), (5.4, 0.25, 4), (8.93, 0.12, 6)]
        wave_ = sum(a * np.sin(math.tau * f * r * t) * np.exp(-d * t) for r, a, d in partials)
        return wave_ * 0.5
    if instrument == "flute":
        vibrato = 1 + 0.004 * np.sin(math.tau * 5 * t)
        phase = np.cumsum(math.tau * f * vibrato / RATE)
        body = np.sin(phase) + 0.15 * np.sin(2 * phase)
        env = np.minimum(1, t / 0.06) * np.minimum(1, (seconds - t) / 0.08).clip(0)
        breath = 0.02 * np.random.default_rng(rng.randrange(2**32)).standard_normal(n)
        return (body * env + breath * env) * 0.6
    harmonics = {
        "piano": [1, 0.5, 0.25, 0.12, 0.06],
        "organ": [1, 0.8, 0.6, 0.4, 0, 0.3, 0, 0.2],
        "pad": [1 / k for k in range(1, 9)],
        "synth": [1 / k if k % 2 else 0 for k in range(1, 10)],
        "guitar": [1, 0.6, 0.4, 0.3, 0.2, 0.1],
        "bass": [1, 0.4, 0.15],
    }[instrument]
    detune = [1.0, 1.003, 0.997] if instrument == "pad" else [1.0]
    body = np.zeros(n, dtype=np.float32)
    for k, amp in enumerate(harmonics, start=1):
        if not amp or f * k > RATE / 2.2:
            continue
        partial = sum(np.sin(math.tau * f * k * d * t) for d in detune) / len(detune)
        if instrument in ("piano", "guitar"):
            partial = partial * np.exp(-t * (1.5 + 1.2 * k))  # upper partials die first
        body += amp * partial
    if instrument == "pad":
        env = np.minimum(1, t / 0.35) * np.minimum(1, (seconds - t) / 0.3).clip(0)
    elif instrument in ("organ", "synth", "bass"):
        env = np.minimum(1, t / 0.01) * np.minimum(1, (seconds - t) / 0.04).clip(0)
    else:
        env = np.minimum(1, t / 0.005) * np.minimum(1, (seconds - t) / 0.05).clip(0)
    return body * env * 0.35


def drum(kind: str, rng: np.random.Generator) -> np.ndarray:
    n = int(0.25 * RATE)
    t = np.arange(n, dtype=np.float32) / RATE
    if kind == "kick":
        phase = np.cumsum(math.tau * (45 + 90 * np.exp(-t * 30)) / RATE)
        return np.sin(phase) * np.exp(-t * 12) * 0.9
    noise = rng.standard_normal(n).astype(np.float32)
    if kind == "snare":
        return (0.5 * noise + 0.4 * np.sin(math.tau * 190 * t)) * np.exp(-t * 22) * 0.5
    return np.diff(noise, prepend=0) * np.exp(-t * 70) * 0.12  # hat: bright noise, short


def _add(buffer: np.ndarray, sound: np.ndarray, at: float) -> None:
    start = int(at * RATE)
    if start >= len(buffer):
        return
    end = min(len(buffer), start + len(sound))
    buffer[start:end] += sound[: end - start]


class MusicBackend:
    def __init__(self, config: dict[str, Any]):
        self.config = config

    def run(self, params: dict[str, Any], emit: Emitter) -> Result:
        seed = params.get("seed")
        seed = secrets.randbelow(2**31) if seed is None else seed
        p = plan(params["prompt"], seed)
        rng = random.Random(seed)
        noise = np.random.default_rng(seed)
        seconds = params["duration"]
        buffer = np.zeros(int(seconds * RATE), dtype=np.float32)
        beat = 60 / p["tempo"]
        bar_seconds = 4 * beat
        bars = math.ceil(seconds / bar_seconds)
        scale = SCALES[p["mode"]]
        tonic = 60 + p["root"] if p["root"] < 7 else 48 + p["root"]
        emit.log(f"{p['tempo']} bpm, {p['key']}, {p['instrument']}" + (", drums" * p["drums"]))

        def pitch(degree: int, octave: int = 0) -> int:
            return tonic + 12 * (octave + degree // 7) + scale[degree % 7]

        melody_degree = 7
        for bar in range(bars):
            if emit.canceled():
                raise Canceled()
            start = bar * bar_seconds
            chord = PROGRESSIONS[p["mode"]][bar % 4]
            notes = [pitch(chord + k) for k in (0, 2, 4)]
            if p["instrument"] in ("pad", "organ"):
                for note in notes:
                    _add(buffer, tone(p["instrument"], note, bar_seconds, rng) * 0.5, start)
            else:
                for half in (0, 2):
                    for note in notes:
                        _add(
                            buffer,
                            tone(p["instrument"], note, 2 * beat, rng) * 0.45,
                            start + half * beat,
                        )
            for b in range(4):
                _add(
                    buffer, tone("bass", pitch(chord, -2), beat * 0.9, rng) * 0.8, start + b * beat
                )
            # The melody walks the scale in eighths, leaning towards the chord's notes.
            for eighth in range(8):
                if rng.random() < 0.2:
                    continue
                step = rng.choice((-2, -1, -1, 0, 1, 1, 2))
                melody_degree = max(chord + 2, min(chord + 11, melody_degree + step))
                if eighth % 2 == 0 and rng.random() < 0.5:
                    melody_degree = chord + 7 + rng.choice((0, 2, 4))
                length = beat * (1.0 if rng.random() < 0.3 else 0.5)
                sound = tone(p["instrument"], pitch(melody_degree), length * 1.1, rng)
                _add(buffer, sound * 0.7, start + eighth * beat / 2)
            if p["drums"]:
                for b in range(4):
                    _add(buffer, drum("kick" if b % 2 == 0 else "snare", noise), start + b * beat)
                for eighth in range(8):
                    _add(buffer, drum("hat", noise), start + eighth * beat / 2)
            emit.progress((bar + 1) / bars)

        fade = min(len(buffer), int(0.05 * RATE))
        buffer[:fade] *= np.linspace(0, 1, fade)
        buffer[len(buffer) - fade :] *= np.linspace(1, 0, fade)
        peak = float(np.max(np.abs(buffer))) or 1.0
        data = wav_bytes(buffer * (0.89 / peak), RATE)
        extra = {k: p[k] for k in ("tempo", "key", "instrument", "drums")}
        fmt = params.get("output_format", "wav")
        return _audio_output(emit, data, RATE, len(buffer), fmt, seed=seed, **extra)
