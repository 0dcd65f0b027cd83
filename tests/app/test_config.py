"""Settings: environment prefix, TOML file, secret handling, validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.config import Settings


def test_environment_and_config_file(monkeypatch, tmp_path):
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('k = 3\nmin_score = 0.5\nupstream_base_url = "http://10.0.0.1:9000/v1/"\n')
    monkeypatch.setenv("GUIDE_ALIGN_K", "4")  # the environment wins over the file
    s = Settings.load(cfg)
    assert s.k == 4
    assert s.min_score == 0.5
    assert s.upstream_base_url == "http://10.0.0.1:9000/v1"
    assert Settings.load(cfg, k=5).k == 5  # and what the caller passes wins over both
    # the app factory reads the file named by GUIDE_ALIGN_CONFIG, once
    from app.main import get_settings

    monkeypatch.setenv("GUIDE_ALIGN_CONFIG", str(cfg))
    get_settings.cache_clear()
    try:
        assert get_settings().min_score == 0.5
        assert get_settings() is get_settings()
    finally:
        get_settings.cache_clear()
    with pytest.raises(ValueError, match="does not exist"):
        Settings.load(tmp_path / "missing.toml")


def test_artifact_paths_follow_the_var_directory(monkeypatch, tmp_path):
    s = Settings(var_dir=tmp_path / "v")
    assert s.index_path == tmp_path / "v" / "index"
    assert s.trained_encoder_path == tmp_path / "v" / "encoder"
    assert s.exports_path == tmp_path / "v" / "encoders"
    assert Settings(var_dir=tmp_path / "v", index_path=tmp_path / "i").index_path == \
        tmp_path / "i"
    monkeypatch.setenv("GUIDE_ALIGN_VAR_DIR", str(tmp_path / "w"))
    assert Settings().index_path == tmp_path / "w" / "index"
    with pytest.raises(ValidationError):
        s.k = 3  # type: ignore[misc]  # frozen: read once, passed down


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


def test_a_missing_trained_encoder_is_a_clear_error_not_a_fallback(tmp_path):
    from retriever.encoder import EncoderError

    s = Settings(var_dir=tmp_path / "var")
    with pytest.raises(EncoderError, match="guide-align prepare"):
        s.open_retriever()
    with pytest.raises(EncoderError, match="guide-align prepare"):
        s.prepare(train=False)
    assert not (tmp_path / "var").exists()  # nothing was written on the way


def test_the_risk_gate_is_on_by_default_and_can_be_switched_off(monkeypatch):
    monkeypatch.delenv("GUIDE_ALIGN_RISK_GATE", raising=False)
    assert Settings().risk_gate is True
    monkeypatch.setenv("GUIDE_ALIGN_RISK_GATE", "false")
    assert Settings().risk_gate is False
