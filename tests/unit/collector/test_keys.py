"""API keys: only hashes are configured; a key maps to exactly one brand."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipeline.collector.keys import (
    KeyRing,
    bearer_token,
    check_key_strength,
    hash_key,
    new_key,
)
from pipeline.errors import ConfigError
from pipeline.settings import Settings, load_settings


def test_hash_is_sha256_hex_of_the_key() -> None:
    key = new_key()
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert key.startswith("siyu_") and len(key) > 40
    assert new_key() != key


def test_keyring_maps_a_key_to_its_brand_only() -> None:
    a, b = new_key(), new_key()
    ring = KeyRing({hash_key(a): "acme", hash_key(b).upper(): "bolt"})
    assert ring.brand_for(a) == "acme"
    assert ring.brand_for(b) == "bolt"
    assert ring.brand_for(hash_key(a)) is None  # the hash itself is not a key
    assert ring.brand_for(a + "x") is None
    assert ring.brand_for(None) is None
    assert ring.brands == {"acme", "bolt"}


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
        ("abc", None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_settings_take_hashes_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    key = new_key()
    monkeypatch.setenv("SIYU_COLLECTOR_KEYS", json.dumps({hash_key(key).upper(): "acme"}))
    s = load_settings()
    assert s.collector_keys == {hash_key(key): "acme"}
    assert KeyRing.from_settings(s).brand_for(key) == "acme"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("not json", "SIYU_COLLECTOR_KEYS: Value error, not JSON"),
        ('{"siyu_plainkey": "acme"}', "not a sha256 hex digest"),
        ('{"' + "a" * 64 + '": ""}', "1-64 characters"),
        ("[1]", "SIYU_COLLECTOR_KEYS"),
    ],
)
def test_bad_key_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, fragment: str
) -> None:
    monkeypatch.setenv("SIYU_COLLECTOR_KEYS", value)
    with pytest.raises(ConfigError, match="SIYU_COLLECTOR_KEYS") as err:
        load_settings()
    assert fragment in str(err.value)


def test_keys_file_adds_keys_and_conflicts_are_refused(tmp_path: Path) -> None:
    a, b = new_key(), new_key()
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({hash_key(b): "bolt"}))
    s = Settings(collector_keys={hash_key(a): "acme"}, collector_keys_file=str(path))
    ring = KeyRing.from_settings(s)
    assert (ring.brand_for(a), ring.brand_for(b)) == ("acme", "bolt")

    path.write_text(json.dumps({hash_key(a): "bolt"}))
    with pytest.raises(ConfigError, match="given to both"):
        KeyRing.from_settings(s)
    path.write_text("{oops")
    with pytest.raises(ConfigError, match="not JSON"):
        KeyRing.from_settings(s)
    path.write_text(json.dumps({"short": "acme"}))
    with pytest.raises(ConfigError, match="sha256"):
        KeyRing.from_settings(s)
    with pytest.raises(ConfigError, match=r"keys-missing\.json"):
        KeyRing.from_settings(Settings(collector_keys_file=str(tmp_path / "keys-missing.json")))


def test_no_keys_at_all_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no API keys configured"):
        KeyRing.from_settings(Settings(collector_keys={}))


def test_weak_keys_are_refused_before_hashing() -> None:
    for weak in ("password", "aaaaaaaaaaaaaaaaaaaaaaaaaaaa"):
        with pytest.raises(ConfigError, match="too weak"):
            check_key_strength(weak)
    check_key_strength(new_key())
