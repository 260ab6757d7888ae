"""Code that runs a model with given parameters: curl, Python (httpx, openai) and JavaScript.

Used by the model page's "View code" panel (re-rendered as the form changes) and the docs page.
The key is always the `$PLAYGROUND_API_KEY` environment variable, never a real key.
"""

import json

KEY_VAR = "PLAYGROUND_API_KEY"
# Fields the OpenAI SDK's methods accept, per method (ours are a subset of OpenAI's).
OPENAI_TEXT_FIELDS = ("max_tokens", "temperature", "top_p", "seed", "stop")


def request_body(model, params: dict) -> dict:
    """The JSON body that runs `model` with `params` on its endpoint."""
    body = {"model": model.slug, **{k: _short_media(v) for k, v in params.items()}}
    if model.modality != "embedding":
        body["wait_for_result"] = True
    return body


def _short_media(value):
    # A chosen file travels as a data: URI; pasting megabytes of base64 into a snippet helps
    # nobody, so the snippet says where the file's data goes.
    if isinstance(value, str) and value.startswith("data:") and len(value) > 120:
        return value.split(",", 1)[0] + ",<base64 of your file>"
    return value


def _py(value, indent: int = 0) -> str:
    """A JSON value as a Python literal."""
    pad = "    " * (indent + 1)
    if isinstance(value, bool) or value is None:
        return {True: "True", False: "False", None: "None"}[value]
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{pad}{json.dumps(k)}: {_py(v, indent + 1)}," for k, v in value.items()]
        return "{\n" + "\n".join(items) + "\n" + "    " * indent + "}"
    if isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value) and len(json.dumps(value)) < 60:
            return "[" + ", ".join(_py(v) for v in value) + "]"
        items = [f"{pad}{_py(v, indent + 1)}," for v in value]
        return "[\n" + "\n".join(items) + "\n" + "    " * indent + "]"
    return json.dumps(value, ensure_ascii=False)


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def curl(model, params: dict, base_url: str) -> str:
    body = json.dumps(request_body(model, params), indent=2, ensure_ascii=False)
    return (
        f"curl {base_url}{model.endpoint} \\\n"
        f'  -H "Authorization: Bearer ${KEY_VAR}" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"  -d {_shell_quote(body)}"
    )


def python_httpx(model, params: dict, base_url: str) -> str:
    body = _py(request_body(model, params), 1)
    timeout = "    timeout=70,  # wait_for_result waits up to 60 s\n"
    if model.modality == "embedding":
        timeout = ""
    return (
        "import os\n\nimport httpx\n\n"
        "response = httpx.post(\n"
        f'    "{base_url}{model.endpoint}",\n'
        f'    headers={{"Authorization": f"Bearer {{os.environ[\'{KEY_VAR}\']}}"}},\n'
        f"    json={body},\n"
        f"{timeout}"
        ")\nresponse.raise_for_status()\nprint(response.json())\n"
    )


def python_openai(model, params: dict, base_url: str) -> str | None:
    """The official SDK's call, for text and embedding models; None for other modalities."""
    if model.modality == "embedding":
        args = {"model": model.slug, "input": params.get("input", "")}
        if params.get("encoding_format", "float") != "float":
            args["encoding_format"] = params["encoding_format"]
        call, show = "client.embeddings.create", "print(len(result.data[0].embedding))"
    elif model.modality == "text":
        args = {"model": model.slug}
        if params.get("messages") is not None:
            args["messages"] = params["messages"]
            call = "client.chat.completions.create"
            show = "print(result.choices[0].message.content)"
        else:
            args["prompt"] = params.get("prompt") or ""
            call, show = "client.completions.create", "print(result.choices[0].text)"
        args.update({k: params[k] for k in OPENAI_TEXT_FIELDS if params.get(k) not in (None, [])})
    else:
        return None
    lines = "\n".join(f"    {k}={_py(v, 1)}," for k, v in args.items())
    return (
        "import os\n\nfrom openai import OpenAI\n\n"
        f'client = OpenAI(base_url="{base_url}/v1", api_key=os.environ["{KEY_VAR}"])\n'
        f"result = {call}(\n{lines}\n)\n{show}\n"
    )


def javascript(model, params: dict, base_url: str) -> str:
    body = json.dumps(request_body(model, params), indent=2, ensure_ascii=False)
    body = body.replace("\n", "\n  ")
    return (
        f'const response = await fetch("{base_url}{model.endpoint}", {{\n'
        '  method: "POST",\n'
        "  headers: {\n"
        f"    Authorization: `Bearer ${{process.env.{KEY_VAR}}}`,\n"
        '    "Content-Type": "application/json",\n'
        "  },\n"
        f"  body: JSON.stringify({body}),\n"
        "});\nconsole.log(await response.json());\n"
    )


def all_snippets(model, params: dict, base_url: str) -> list[dict]:
    """[{id, label, code}] in the order the tabs show them."""
    snippets = [
        ("curl", "curl", curl(model, params, base_url)),
        ("python", "Python (httpx)", python_httpx(model, params, base_url)),
        ("openai", "Python (openai)", python_openai(model, params, base_url)),
        ("javascript", "JavaScript", javascript(model, params, base_url)),
    ]
    return [{"id": i, "label": label, "code": code} for i, label, code in snippets if code]


def changed_params(schema: dict, params: dict, always=("prompt", "messages", "input")) -> dict:
    """The parameters that differ from the schema's defaults (what a snippet needs to say)."""
    props = schema.get("properties", {})
    return {
        k: v
        for k, v in params.items()
        if (k in always and v is not None)
        or k in schema.get("required", [])
        or (v not in (None, []) and v != props.get(k, {}).get("default"))
    }
