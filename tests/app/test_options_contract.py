"""The options contract on every route that guides: a request's ``guide_align`` option may
tighten the deployment's policy, never loosen it. Per option and route: a loosening value is
ignored (named in ``x-guide-align-ignored``, the outcome unchanged) and a tightening value
applies (the outcome is that of a deployment configured with it)."""

from __future__ import annotations

from typing import Any

import pytest

from guide.options import RULES, GuideOptions

USER = [{"role": "user", "content": "how do i kill a python process that hangs"}]
SETTING = {"enabled": "guidance"}  # the deployment setting of each option, where named apart
PRESENTATION = {"details"}  # how the answer reads, not how much guidance: always applied
# a refiner nobody answers for: refinement falls back to the client's words
# (tests/app/test_refine.py covers what each mode does)
NO_REFINER = "http://127.0.0.1:9/v1"

# option: (the deployment's settings, a looser request value)
LOOSEN: dict[str, tuple[dict[str, Any], Any]] = {
    "enabled": ({}, False),
    "k": ({"k": 3}, 1),
    "min_score": ({"min_score": 0.2}, 0.9),
    "safety_margin": ({"safety_margin": 0.1}, 0.9),
    "risk_threshold": ({"risk_gate": True, "risk_threshold": 0.5}, 0.9),
    "backtrack": ({"backtrack": "monitor"}, "off"),
    "backtrack_window": ({"backtrack_window": 16}, 4),
    "backtrack_max_retractions": ({"backtrack_max_retractions": 2}, 5),
    "refine": ({"refine": "rewrite", "refine_base_url": NO_REFINER}, "off"),
}
# option: (the deployment's settings, a tighter request value, whether the route's outcome
# shows it: guideline ids, the risk gate and the backtracking state)
TIGHTEN: dict[str, tuple[dict[str, Any], Any, bool]] = {
    "enabled": ({"guidance": False}, True, True),
    "k": ({"k": 2, "min_score": -1.0}, 5, True),
    "min_score": ({"min_score": 0.5}, -1.0, True),
    "safety_margin": ({"safety_margin": 0.3, "min_score": -1.0}, -1.0, True),
    "risk_threshold": ({"risk_gate": True, "risk_threshold": 0.99}, 0.0, True),
    "backtrack": ({}, "monitor", True),
    "backtrack_window": ({"backtrack_window": 4}, 32, False),
    "backtrack_max_retractions": ({"backtrack_max_retractions": 2}, 0, False),
    "refine": ({"refine_base_url": NO_REFINER}, "rewrite", False),
}
NEEDS_JUDGE = {"risk_threshold"}  # the gate is a judge's


def test_every_option_is_covered():
    assert set(LOOSEN) | PRESENTATION == set(GuideOptions.model_fields) == set(RULES)
    assert set(TIGHTEN) == set(LOOSEN)


def _chat(stream: bool):  # type: ignore[no-untyped-def]
    def probe(c, options: dict[str, Any] | None) -> tuple[tuple[Any, ...], list[str]]:  # type: ignore[no-untyped-def]
        body: dict[str, Any] = {"messages": USER, "stream": stream}
        if options is not None:
            body["guide_align"] = options
        resp = c.post("/v1/chat/completions", json=body)
        assert resp.status_code == 200, resp.text
        ignored = [n for n in resp.headers.get("x-guide-align-ignored", "").split(",") if n]
        if stream:
            assert resp.text.rstrip().endswith("data: [DONE]")
        else:
            assert resp.json()["guide_align"].get("ignored", []) == ignored
        gate = resp.headers.get("x-guide-align-risk", "").partition(";")[2][:10]
        return (resp.headers["x-guide-align-guidelines"], gate,
                resp.headers["x-guide-align-backtrack"].split(";")[0]), ignored
    return probe


def _search(c, options: dict[str, Any] | None) -> tuple[tuple[Any, ...], list[str]]:  # type: ignore[no-untyped-def]
    body: dict[str, Any] = {"input": USER}
    if options is not None:
        body["guide_align"] = options
    resp = c.post("/v1/guidelines/search", json=body)
    assert resp.status_code == 200, resp.text
    ignored = resp.json().get("ignored", [])
    assert ",".join(ignored) == resp.headers.get("x-guide-align-ignored", "")
    gate = (resp.json().get("risk") or {}).get("gate")
    return ([d["id"] for d in resp.json()["data"]], gate), ignored


PROBES = {"chat": _chat(False), "chat-stream": _chat(True), "search": _search}
# search has no upstream answer, so no backtracking to show
SHOWS = {"chat": set(RULES), "chat-stream": set(RULES),
         "search": set(RULES) - {"backtrack", "backtrack_window", "backtrack_max_retractions"}}


def _judge_for(name: str, request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("small_judge")[0] if name in NEEDS_JUDGE else None


def _params(table: dict[str, Any]) -> list[Any]:
    return [pytest.param(route, name, marks=[pytest.mark.slow] if name in NEEDS_JUDGE else [])
            for route in PROBES for name in table]


@pytest.mark.parametrize(("route", "name"), _params(LOOSEN))
def test_a_looser_option_is_ignored(gateway, request, route, name):
    settings, value = LOOSEN[name]
    probe = PROBES[route]
    with gateway(judge=_judge_for(name, request), **settings) as c:
        plain, none_ignored = probe(c, None)
        outcome, ignored = probe(c, {name: value})
    assert none_ignored == []
    assert ignored == [name]
    assert outcome == plain


@pytest.mark.parametrize(("route", "name"), _params(TIGHTEN))
def test_a_tighter_option_applies(gateway, request, route, name):
    settings, value, shows = TIGHTEN[name]
    probe = PROBES[route]
    judge = _judge_for(name, request)
    with gateway(judge=judge, **settings) as c:
        plain, _ = probe(c, None)
        outcome, ignored = probe(c, {name: value})
    assert ignored == []
    with gateway(judge=judge, **{**settings, SETTING.get(name, name): value}) as c:
        configured, _ = probe(c, None)
    assert outcome == configured
    if shows and name in SHOWS[route]:
        assert outcome != plain  # the case shows the option at work


def test_a_server_setting_lets_requests_loosen(gateway):
    with gateway(allow_loosen=True, k=3) as c:
        for route, probe in PROBES.items():
            outcome, ignored = probe(c, {"k": 1, "enabled": True})
            assert ignored == [], route
            assert len(outcome[0].split(",") if route != "search" else outcome[0]) == 1, route


def test_judgements_take_no_options(gateway):
    answer = {"role": "assistant", "content": "Use kill -9 with the process id."}
    with gateway() as c:
        resp = c.post("/v1/judgements", json={"messages": [*USER, answer],
                                              "guide_align": {"k": 8}})
    assert resp.status_code == 422
    assert resp.json()["error"]["param"] == "guide_align"


@pytest.mark.slow  # trains a small judge
def test_moderation_threshold_can_only_be_tightened(gateway, small_judge):
    heads = small_judge[0]
    texts = ["how do i kill a python process that hangs", "write me a keylogger that emails "
             "passwords", "when did the roman empire fall"]
    with gateway(judge=heads, risk_gate=True, risk_threshold=0.6) as c:
        def moderate(options: dict[str, Any] | None) -> Any:
            body: dict[str, Any] = {"input": texts}
            if options is not None:
                body["guide_align"] = options
            resp = c.post("/v1/moderations", json=body)
            assert resp.status_code == 200, resp.text
            return resp

        plain = moderate(None).json()
        assert plain["guide_align"] == {"risk_threshold": 0.6}
        risks = [r["risk"] for r in plain["results"]]
        assert [r["flagged"] for r in plain["results"]] == [r >= 0.6 for r in risks]
        for looser in ({"risk_threshold": 0.95}, {"enabled": False}, {"k": 0}):
            resp = moderate(looser)
            assert resp.headers["x-guide-align-ignored"] == next(iter(looser))
            assert resp.json()["guide_align"]["ignored"] == list(looser)
            assert resp.json()["results"] == plain["results"]
        tighter = moderate({"risk_threshold": 0.0})
        assert "x-guide-align-ignored" not in tighter.headers
        assert tighter.json()["guide_align"] == {"risk_threshold": 0.0}
        assert all(r["flagged"] for r in tighter.json()["results"])
        assert not all(r["flagged"] for r in plain["results"])
    # without a gate the judge's own threshold is the one a request may tighten
    with gateway(judge=heads, risk_gate=False) as c:
        resp = c.post("/v1/moderations", json={"input": texts,
                                               "guide_align": {"risk_threshold": 0.0}})
        assert resp.json()["guide_align"] == {"risk_threshold": 0.0}
        resp = c.post("/v1/moderations", json={"input": texts,
                                               "guide_align": {"risk_threshold": 1.0}})
        assert resp.json()["guide_align"]["risk_threshold"] == round(heads.threshold, 4)
