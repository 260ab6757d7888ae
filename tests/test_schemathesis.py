"""schemathesis against a live site's /v1/openapi.json: no server errors, nothing off the spec.

Bounded: 5 examples per operation, all phases but explicit examples; 30-100 s.
Checks: 5xx, status codes, content types, headers and bodies against the documented responses,
405 with Allow for undocumented methods, and endpoints that must refuse a missing key.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import start_site

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "unsupported_method",
        "allow_header_conformance",
        "ignored_auth",
    ]
)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = start_site(
        tmp_path_factory.mktemp("schemathesis-site"), extra_env={"PLAYGROUND_WAIT_SECONDS": "5"}
    )
    site.key = site.user_with_key("fuzz@example.com", "1000")
    yield site
    site.stop()


def test_api_conforms_to_its_openapi_document(site, tmp_path):
    st = Path(sys.executable).with_name("st")
    result = subprocess.run(
        [
            str(st),
            "run",
            f"{site.base_url}/v1/openapi.json",
            "--header",
            f"Authorization: Bearer {site.key}",
            "--checks",
            CHECKS,
            "--max-examples",
            "5",
            "--workers",
            "2",
            "--phases",
            "coverage,fuzzing,stateful",
            "--request-timeout",
            "20",
            "--max-time",
            "100",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,  # its example database (.schemathesis/) stays out of the checkout
    )
    summary = result.stdout[-6000:]
    assert result.returncode == 0, summary
    passed = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert passed and int(passed.group(2)) > 500, summary
    # The server logged no unexpected error either.
    assert "Traceback" not in site.log("daphne"), site.log("daphne")[-4000:]
