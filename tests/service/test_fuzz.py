"""Property-based fuzzing of the API from its own OpenAPI schema (schemathesis): whatever a
caller sends, valid or malformed (schemathesis's positive and negative generation modes), the
service answers with a documented status and a body that matches the schema, and never with a
5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from socialrisk.service import ServiceRuntime, create_app
from tests.service.conftest import AUTH, service_settings, wait_for

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance, response_headers_conformance]


@pytest.fixture(scope="module")
def app(scored: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    import os
    import shutil

    from tests.service.conftest import API_KEY, PSEUDONYM_KEY

    ws = tmp_path_factory.mktemp("fuzz") / "ws"
    shutil.copytree(scored, ws)
    saved = {k: os.environ.get(k) for k in ("SOCIALRISK_API_KEYS", "SOCIALRISK_PSEUDONYM_KEY")}
    os.environ.update(SOCIALRISK_API_KEYS=API_KEY, SOCIALRISK_PSEUDONYM_KEY=PSEUDONYM_KEY)
    runtime = ServiceRuntime(service_settings(), "embedded", ws)
    runtime.start()
    wait_for(lambda: runtime.graph is not None, what="the graph in memory")
    try:
        yield create_app(service_settings(), "embedded", ws, runtime=runtime)
    finally:
        runtime.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_no_5xx_and_responses_match_the_schema(app: object) -> None:
    # schemathesis's own pytest plugin does not run under pytest 9 yet: its strategies are driven
    # by hypothesis here, one operation after another
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation, mode in ((op, mode) for op in operations for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=AUTH, checks=CHECKS)

        try:
            fuzz()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # nothing to get wrong: an operation without input
