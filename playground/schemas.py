"""Parameter schemas: the one source for API validation, the web form, OpenAPI and the docs page."""

from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator


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


@cache
def params_class(modality: str, max_tokens_limit: int) -> type[BaseModel]:
    """The parameter class of a model, with its own limits written into the schema."""
    if modality == "embedding":
        return EmbeddingParams
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
    return params_class(model.modality, model.max_tokens_limit)


def json_schema(model) -> dict:
    """The model's parameter JSON Schema; shared and cached, so callers must not change it."""
    return _schema_of(params_for(model))


@cache
def _schema_of(params_class: type[BaseModel]) -> dict:
    # Generating it costs milliseconds, and every model page and docs page needs it.
    return params_class.model_json_schema()
