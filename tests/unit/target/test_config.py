"""TargetConfig: TOML + env loading, a switch per pattern, errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from spikegate.target.config import ConfigError, TargetConfig, load_config


def test_defaults_validate_with_every_pattern_on() -> None:
    cfg = load_config(environ={})
    assert (cfg.edge.enabled, cfg.auction.enabled, cfg.breaker.enabled) == (True, True, True)
    assert cfg.impressions.enabled is True


def test_toml_file_then_env_overrides_win(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(
        '[auction]\nlimit = 8\nmax_wait_ms = 3\n[publishers.p1]\napi_key = "k"\nrate_per_s = 5\n'
        '[[dsps]]\nname = "d1"\nurl = "http://127.0.0.1:1"\n'
    )
    env = {
        "SPIKEGATE_TARGET_CONFIG": str(path),
        "SPIKEGATE__AUCTION__LIMIT": "16",
        "SPIKEGATE__BREAKER__ENABLED": "false",
        "OTHER": "ignored",
    }
    cfg = load_config(environ=env)
    assert cfg.auction.limit == 16
    assert cfg.auction.max_wait_ms == 3
    assert cfg.breaker.enabled is False
    assert cfg.publishers["p1"].rate_per_s == 5
    assert [d.name for d in cfg.dsps] == ["d1"]


def test_env_value_may_be_json_for_whole_sections() -> None:
    env = {"SPIKEGATE__DSPS": '[{"name": "a", "url": "http://127.0.0.1:9"}]'}
    assert load_config(environ=env).dsps[0].name == "a"


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"SPIKEGATE__AUCTION__LIMIT": "0"}, "auction.limit"),
        ({"SPIKEGATE__BREAKER__FAILURE_RATE_THRESHOLD": "1.5"}, "breaker.failure_rate_threshold"),
        ({"SPIKEGATE__EDGE__ENABLED": "maybe"}, "edge.enabled"),
        ({"SPIKEGATE__REDIS_URL": "http://x"}, "redis_url"),
        ({"SPIKEGATE__AUCTION__BOGUS": "1"}, "auction.bogus"),
    ],
)
def test_invalid_values_raise_config_error_naming_the_field(env, field) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(environ=env)


def test_breaker_config_checks_are_reported_against_the_breaker_section() -> None:
    with pytest.raises(ConfigError, match="breaker") as info:
        load_config(environ={"SPIKEGATE__BREAKER__MINIMUM_CALLS": "50"})
    assert "minimum_calls" in str(info.value)


def test_missing_file_and_bad_toml_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[auction\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad, environ={})


def test_duplicate_api_keys_and_dsp_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="already used"):
        TargetConfig.model_validate({"publishers": {"a": {"api_key": "k"}, "b": {"api_key": "k"}}})
    with pytest.raises(ValueError, match="unique"):
        TargetConfig.model_validate(
            {"dsps": [{"name": "d", "url": "http://h:1"}, {"name": "d", "url": "http://h:2"}]}
        )


def test_with_patterns_switches_all_four_off_and_back() -> None:
    off = TargetConfig().with_patterns(False)
    assert not (off.edge.enabled or off.auction.enabled or off.breaker.enabled)
    assert off.impressions.enabled is False
    assert off.with_patterns(True).auction.enabled is True
