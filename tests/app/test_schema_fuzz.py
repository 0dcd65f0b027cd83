"""Property-based test of the request schemas: schemathesis generates bodies from the OpenAPI
schema the app declares (valid ones, valid ones made plausible conversations, and ones that
break it), for every POST endpoint; the gateway, in front of the local fake upstream, must never
answer 5xx. The counts per endpoint are printed at the end (run with ``-s``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

ENDPOINTS = ("/v1/chat/completions", "/v1/guidelines/search", "/v1/moderations",
             "/v1/judgements")
CASES_PER_ENDPOINT = 1000
# The fake upstream is scripted by model name to fail; those names are for the fault tests.
SCRIPTED = {"error-500", "error-400", "not-json", "bad-sse", "drop-mid-stream", "hang",
            "echo-auth-400", "auth-401", "rate-limited", "slow-stream"}

COUNTS: Counter[str] = Counter()
STATUSES: dict[str, Counter[int]] = {}


@pytest.fixture(scope="module", autouse=True)
def report() -> Any:
    yield
    for path in ENDPOINTS:
        if COUNTS[path]:
            print(f"\n{path}: {COUNTS[path]} cases, "
                  f"{sum(n for s, n in STATUSES[path].items() if s >= 500)} x 5xx, "
                  f"statuses {dict(sorted(STATUSES[path].items()))}")


def _unscripted(case: schemathesis.Case) -> schemathesis.Case:
    if isinstance(case.body, dict) and str(case.body.get("model")) in SCRIPTED:
        case.body["model"] = "ok"
    return case


def _conversation(case: schemathesis.Case) -> schemathesis.Case:
    """A valid case made a plausible conversation (content on every turn, a user turn first,
    the caps kept, an answer last for a judgement), so that more cases reach the retriever, the
    judge and the upstream instead of stopping at a 4xx."""
    body = case.body
    if not isinstance(body, dict):
        return case
    turns = body.get("messages", body.get("input"))
    if isinstance(turns, list) and turns and all(isinstance(m, dict) for m in turns):
        for m in turns:
            if m.get("content") is None:
                m["content"] = "how do i stop a process"
        turns[0]["role"] = "user"
        if case.operation.path == "/v1/judgements" and len(turns) >= 2:
            turns[-1]["role"] = "assistant"
    for name in ("n", "max_tokens", "max_completion_tokens"):
        body.pop(name, None)
    return case


@pytest.mark.slow  # about 4,000 requests through the encoder and the judge
@pytest.mark.timeout(1800)  # minutes per endpoint on two busy cores
@pytest.mark.parametrize("path", ENDPOINTS)
def test_no_generated_request_gets_a_5xx(gateway, request, path):
    judged = path in ("/v1/moderations", "/v1/judgements")
    judge = request.getfixturevalue("small_judge")[0] if judged else None
    with gateway(judge=judge) as client:
        schema = schemathesis.openapi.from_dict(client.app.openapi())
        operation = schema[path]["POST"]
        valid = operation.as_strategy(GenerationMode.POSITIVE)
        cases = st.one_of(valid, valid.map(_conversation),
                          operation.as_strategy(GenerationMode.NEGATIVE)).map(_unscripted)
        statuses = STATUSES.setdefault(path, Counter())

        @settings(max_examples=CASES_PER_ENDPOINT, deadline=None, derandomize=True,
                  database=None, suppress_health_check=list(HealthCheck))
        @given(case=cases)
        def run(case: schemathesis.Case) -> None:
            kwargs = case.as_transport_kwargs(base_url="http://testserver")
            resp = client.request(kwargs["method"], kwargs["url"], headers=kwargs["headers"],
                                  json=kwargs.get("json"), content=kwargs.get("data"))
            COUNTS[path] += 1
            statuses[resp.status_code] += 1
            case.validate_response(resp, checks=[not_a_server_error])

        run()
    assert COUNTS[path] >= CASES_PER_ENDPOINT
    assert not any(s >= 500 for s in statuses)
