"""Parameter schemas: the one source for API validation, the web form, OpenAPI and the docs page."""

from functools import cache
from typing import Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    create_model,
    field_validator,
    model_validator,
)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=200_000)


class TextParams(BaseModel):
    """Parameters of a text model."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(
        None, max_length=200_000, description="Text to continue. Give this or `messages`."
    )
    messages: list[Message] | None = Field(
        None, min_length=1, max_length=500, description="A chat conversation, instead of `prompt`."
    )
    max_tokens: int = Field(128, ge=1, description="Most tokens to generate.")
    temperature: float = Field(
        1.0, ge=0, le=2, description="Sampling temperature; 0 is greedy and deterministic."
    )
    top_p: float = Field(
        1.0, gt=0, le=1, description="Nucleus sampling: keep this probability mass."
    )
    seed: int | None = Field(
        None, ge=0, le=2**31 - 1, description="Same seed and parameters give the same text."
    )
    stop: list[str] | str | None = Field(
        None, description="Up to 4 strings; generation ends before any of them."
    )

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value):
        if value is None:
            return []
        values = [value] if isinstance(value, str) else value
        if len(values) > 4:
            raise ValueError("at most 4 stop strings")
        if any(not v for v in values):
            raise ValueError("stop strings must not be empty")
        return values

    @model_validator(mode="after")
    def _prompt_or_messages(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("Give a prompt, or messages, but not both.")
        return self


class EmbeddingParams(BaseModel):
    """Parameters of an embedding model."""

    model_config = ConfigDict(extra="forbid")

    input: str | list[str] = Field(
        description="A text, or a list of up to 2048 texts, to embed.",
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="`float` lists, or `base64` of little-endian float32 (as OpenAI)."
    )

    @field_validator("input")
    @classmethod
    def _input_list(cls, value):
        values = [value] if isinstance(value, str) else value
        if not 1 <= len(values) <= 2048:
            raise ValueError("give 1 to 2048 texts")
        if any(len(v) > 100_000 for v in values):
            raise ValueError("each text is at most 100000 characters")
        return values


SEED = Field(None, ge=0, le=2**31 - 1, description="Same seed and parameters give the same output.")
PROMPT = Field(min_length=1, max_length=2000, description="What to make.")


def _dimension(default: int, what: str):
    return Field(
        default, ge=64, le=1024, multiple_of=8, description=f"{what} in pixels (64–1024, ×8)."
    )


class ImageParams(BaseModel):
    """Parameters of a text-to-image model."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = PROMPT
    width: int = _dimension(512, "Width")
    height: int = _dimension(512, "Height")
    num_images: int = Field(1, ge=1, le=4, description="How many images (1–4); each is billed.")
    seed: int | None = SEED
    output_format: Literal["png", "webp"] = Field("png", description="`png` or `webp`.")


class BuiltinImageParams(ImageParams):
    """The built-in image model's parameters."""

    negative_prompt: str = Field(
        "", max_length=2000, description="Words whose colours and shapes to leave out."
    )
    steps: int = Field(
        20, ge=1, le=50, description="Refinement steps (1–50): more steps, finer detail."
    )


MEDIA_INPUT = (
    "A `data:` URI, a link to one of your files or outputs here (`POST /v1/files`), "
    "or an https URL on the operator's allowlist."
)


class VideoParams(BaseModel):
    """Parameters of an image-to-video model."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(
        min_length=1, max_length=2000, description="The motion and mood, e.g. `slow zoom in`."
    )
    negative_prompt: str = Field(
        "", max_length=2000, description="Motions to avoid, e.g. `pan, rotation`."
    )
    image: str = Field(
        min_length=1,
        max_length=1_500_000,
        # `image_url` too: CONTRACT §4 names media inputs that way in its example.
        validation_alias=AliasChoices("image", "image_url"),
        description=f"The first frame (also accepted as `image_url`). {MEDIA_INPUT}",
        json_schema_extra={"x-media": "image"},
    )
    aspect_ratio: Literal["16:9", "9:16", "1:1", "4:3", "3:4"] = Field(
        "16:9", description="Frame shape: `16:9`, `9:16`, `1:1`, `4:3` or `3:4`."
    )
    resolution: Literal["360p", "480p", "720p"] = Field(
        "480p", description="Height of the short side: `360p`, `480p` or `720p`."
    )
    num_frames: int = Field(48, ge=8, le=240, description="Frames to make (8–240).")
    fps: int = Field(24, ge=4, le=60, description="Frames per second (4–60).")
    guidance: float = Field(
        6.0, ge=1, le=20, description="How strongly the prompt drives the motion (1–20)."
    )
    seed: int | None = SEED


class SpeechParams(BaseModel):
    """Parameters of a text-to-speech model."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=5000, description="The text to speak.")
    voice: Literal["en-us", "en-gb", "en-us+f3", "en-gb+m3", "fr", "de", "es", "it", "pt", "nl"] = (
        Field("en-us", description="Language and voice (espeak-ng names, `+f3` a female one).")
    )
    speed: int = Field(175, ge=80, le=400, description="Words per minute (80–400).")
    pitch: int = Field(50, ge=0, le=99, description="Voice pitch (0–99).")
    output_format: Literal["wav", "mp3"] = Field("wav", description="`wav` or `mp3`.")


class MusicParams(BaseModel):
    """Parameters of a prompt-to-music model."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(
        min_length=1,
        max_length=2000,
        description="Mood, tempo, key and instrument words, e.g. `calm piano in D minor, 70 bpm`.",
    )
    duration: int = Field(10, ge=1, le=60, description="Length in seconds (1–60).")
    seed: int | None = SEED
    output_format: Literal["wav", "mp3"] = Field("wav", description="`wav` or `mp3`.")


@cache
def params_class(modality: str, max_tokens_limit: int, backend: str = "") -> type[BaseModel]:
    """The parameter class of a model, with its own limits written into the schema."""
    if modality == "embedding":
        return EmbeddingParams
    if modality == "image":
        return BuiltinImageParams if backend == "procedural" else ImageParams
    if modality == "video":
        return VideoParams
    if modality == "audio":
        return SpeechParams if backend == "espeak" else MusicParams
    if modality != "text":
        raise ValueError(f"no parameter schema for modality {modality!r}")
    return create_model(
        f"TextParams{max_tokens_limit}",
        __base__=TextParams,
        max_tokens=(
            int,
            Field(
                min(128, max_tokens_limit),
                ge=1,
                le=max_tokens_limit,
                description="Most tokens to generate.",
            ),
        ),
    )


def params_for(model) -> type[BaseModel]:
    return params_class(model.modality, model.max_tokens_limit, model.backend)


def json_schema(model) -> dict:
    """The model's parameter JSON Schema; shared and cached, so callers must not change it."""
    return _schema_of(params_for(model))


@cache
def _schema_of(params_class: type[BaseModel]) -> dict:
    # Generating it costs milliseconds, and every model page and docs page needs it.
    return params_class.model_json_schema()
