"""/v1/openapi.json: every endpoint, each model's parameters as its request schema, the errors."""

import jsonschema_rs
import pytest

from playground.models import AIModel

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def spec(client):
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    return response.json()


def body_variants(spec, path):
    return spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "oneOf"
    ]


def resolve(spec, schema):
    ref = schema.get("$ref")
    return spec["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def validator(spec, schema):
    """A JSON Schema validator of `schema` with the spec's components resolvable."""
    return jsonschema_rs.validator_for({**schema, "components": spec["components"]})


def variant_for(spec, path, model):
    for variant in body_variants(spec, path):
        variant = resolve(spec, variant)
        if variant.get("properties", {}).get("model", {}).get("const") == model:
            return variant
    raise AssertionError(f"no {model} body on {path}")


def test_every_route_is_documented_with_its_errors(spec):
    assert {
        "/v1/generate-text",
        "/v1/requests/{request_id}",
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/batch/completions",
        "/v1/requests/{request_id}/webhooks",
        "/v1/requests",
        "/v1/requests/{request_id}/cancel",
        "/v1/models",
        "/v1/models/{model_id}",
        "/v1/user/profile",
        "/v1/usage",
        "/v1/completions",
        "/v1/batch/{batch_id}",
        "/v1/webhooks/secret",
    } <= set(spec["paths"])
    submit = spec["paths"]["/v1/generate-text"]["post"]["responses"]
    assert {"200", "202", "400", "401", "402", "403", "404", "409", "413", "429"} <= set(submit)
    error = resolve(spec, submit["402"]["content"]["application/json"]["schema"])
    assert error["properties"]["error"]["required"] == ["message", "type", "code", "param"]
    assert not any(
        "422" in op["responses"] for item in spec["paths"].values() for op in item.values()
    )
    get = spec["paths"]["/v1/requests/{request_id}"]["get"]["responses"]
    assert {"200", "401", "404"} <= set(get)
    assert spec["components"]["securitySchemes"]


def test_each_model_is_a_request_schema_of_its_endpoint(spec):
    text = variant_for(spec, "/v1/generate-text", "trigram-pydoc")
    assert text["properties"]["max_tokens"]["maximum"] == 1024
    assert {"wait_for_result", "webhook_url", "webhook_events_filter"} <= set(text["properties"])
    assert text["additionalProperties"] is False
    embed = variant_for(spec, "/v1/embeddings", "hash-embed")
    assert "input" in embed["required"]
    chat = variant_for(spec, "/v1/chat/completions", "trigram-pydoc")
    assert "messages" in chat["required"] and "prompt" not in chat["properties"]
    batch = variant_for(spec, "/v1/batch/completions", "trigram-pydoc")
    assert "prompts" in batch["required"]
    # The text model is not offered on the embeddings endpoint, nor the reverse.
    models = [
        resolve(spec, v).get("properties", {}).get("model", {}).get("const")
        for v in body_variants(spec, "/v1/embeddings")
    ]
    assert "trigram-pydoc" not in models


def test_the_schemas_accept_what_the_api_accepts_and_refuse_what_it_refuses(spec):
    check = validator(spec, {"oneOf": body_variants(spec, "/v1/generate-text")})
    assert check.is_valid({"model": "trigram-pydoc", "prompt": "x", "max_tokens": 3})
    assert check.is_valid({"request_id": "abc"})
    assert check.is_valid(
        {"model": "trigram-pydoc", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert not check.is_valid({"model": "trigram-pydoc", "prompt": "x", "max_tokens": 5000})
    assert not check.is_valid({"model": "trigram-pydoc", "prompt": "x", "nonsense": 1})
    assert not check.is_valid({"model": "trigram-pydoc"})  # neither prompt nor messages
    assert not check.is_valid(
        {"model": "trigram-pydoc", "prompt": "x", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert not check.is_valid({"model": "nope", "prompt": "x"})


def test_operator_models_appear_at_once(client):
    AIModel.objects.create(
        slug="operator-llm",
        name="Operator LLM",
        modality="text",
        backend="openai",
        config={"base_url": "http://127.0.0.1:9/v1"},
        max_tokens_limit=77,
    )
    spec = client.get("/v1/openapi.json").json()
    variant = variant_for(spec, "/v1/generate-text", "operator-llm")
    assert variant["properties"]["max_tokens"]["maximum"] == 77
    assert variant_for(spec, "/v1/chat/completions", "operator-llm")
    AIModel.objects.filter(slug="operator-llm").update(enabled=False)
    spec = client.get("/v1/openapi.json").json()
    with pytest.raises(AssertionError):
        variant_for(spec, "/v1/generate-text", "operator-llm")


def test_swagger_ui(client):
    response = client.get("/v1/docs")
    assert response.status_code == 200
    assert b"openapi.json" in response.content
