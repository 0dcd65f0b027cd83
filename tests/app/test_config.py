"""Settings: environment prefix, TOML file, secret handling, validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import Settings


def test_environment_and_config_file(monkeypatch, tmp_path):
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('k = 3\nmin_score = 0.5\nupstream_base_url = "http://10.0.0.1:9000/v1/"\n')
    monkeypatch.setenv("GUIDE_ALIGN_CONFIG", str(cfg))
    monkeypatch.setenv("GUIDE_ALIGN_K", "4")  # the environment wins over the file
    s = Settings()
    assert s.k == 4
    assert s.min_score == 0.5
    assert s.upstream_base_url == "http://10.0.0.1:9000/v1"


def test_secret_is_not_shown(monkeypatch):
    monkeypatch.setenv("GUIDE_ALIGN_UPSTREAM_API_KEY", "sk-very-secret")
    s = Settings()
    assert "sk-very-secret" not in repr(s)
    assert "sk-very-secret" not in s.model_dump_json()
    assert s.upstream_api_key is not None
    assert s.upstream_api_key.get_secret_value() == "sk-very-secret"


def test_empty_key_means_none_and_placeholder_refused(monkeypatch):
    monkeypatch.setenv("GUIDE_ALIGN_UPSTREAM_API_KEY", "")
    assert Settings().upstream_api_key is None
    monkeypatch.setenv("GUIDE_ALIGN_UPSTREAM_API_KEY", "changeme")
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize(("field", "value"), [("k", -1), ("min_score", 3.0),
                                              ("upstream_base_url", "ftp://x"),
                                              ("max_body_bytes", 10)])
def test_invalid_values_are_refused(field, value):
    with pytest.raises(ValidationError):
        Settings(**{field: value})
