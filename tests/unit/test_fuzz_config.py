"""Fuzzing the configuration loader: any file gives a Config or a ConfigError.

Inputs: random bytes (not UTF-8, not TOML), valid files mutated byte by
byte, and well-formed TOML whose known keys hold values of every TOML type
(numbers, lists, tables, dates, strings with NUL or odd digits), the
``[[exports]]`` entries included.
"""

from __future__ import annotations

import datetime
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_fuzz_codec import mutated
from vmstore.cli.config import Config, load_config, parse_address
from vmstore.dfs.errors import ConfigError

EXAMPLES = settings(max_examples=200, deadline=None)
VALID = b"""[cluster]
master = "10.0.0.1:9420"
key_file = "/etc/vmstore/cluster.key"

[client]
host_label = "rack1-host3"
mount = "/var/lib/vmstore"

[hosts.host2]
libvirt = "qemu+ssh://root@host2/system"
migration = "qemu+tcp://host2/system"
label = "host2"

[[exports]]
clients = ["10.77.0.0/24", "127.0.0.1", "::1"]
directory = "/guests"
read_only = true
"""
KEYS = {"cluster": ["master", "key_file"], "client": ["host_label", "mount"],
        "hosts.h1": ["libvirt", "migration", "label"]}


def load_bytes(data: bytes) -> Config | None:
    """load_config on a file holding ``data``: the Config, or None for a ConfigError."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "vmstore.toml"
        path.write_bytes(data)
        try:
            config = load_config(path)
        except ConfigError as error:
            assert str(path) in str(error) or "pass --" in str(error), \
                f"the error names neither the file nor the flag: {error}"
            return None
    assert config.master_host and 0 <= config.master_port <= 65535
    for text in (config.master_host, str(config.key_file), config.host_label, config.mount):
        assert "\0" not in text, f"a NUL got through: {text!r}"
    return config


def test_the_valid_sample_loads() -> None:
    config = load_bytes(VALID)
    assert config is not None
    assert (config.master_host, config.master_port, config.host_label) == (
        "10.0.0.1", 9420, "rack1-host3")


@EXAMPLES
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    load_bytes(data)


@EXAMPLES
@given(st.data())
def test_mutated_valid_files(data: st.DataObject) -> None:
    load_bytes(data.draw(mutated(VALID)))


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}"
                             for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"k{i} = {toml_value(v)}" for i, v in enumerate(value.values())) \
            + "}"
    if isinstance(value, datetime.date):
        return value.isoformat()
    return repr(value)


VALUES = st.recursive(
    st.one_of(st.integers(-(2**63), 2**63 - 1), st.booleans(),
              st.floats(allow_nan=False, allow_infinity=False), st.dates(),
              st.text(max_size=30),
              st.sampled_from(["10.0.0.1:9420", "h:²", "h:٩٤٢٠", "h:99999", ":1", "h:-1",
                               "/a\0b", "/var/lib/vmstore", "relative", "[::1]:9420"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                 max_size=2),
    max_leaves=5)


@EXAMPLES
@given(st.dictionaries(st.sampled_from(sorted(KEYS)), st.data(), min_size=1), st.data())
def test_known_keys_holding_any_toml_value(sections: dict[str, Any],
                                           data: st.DataObject) -> None:
    lines = []
    for section in sections:
        lines.append(f"[{section}]")
        for key in data.draw(st.lists(st.sampled_from(KEYS[section]), unique=True)):
            lines.append(f"{key} = {toml_value(data.draw(VALUES))}")
    load_bytes("\n".join(lines).encode())


ADDRESS_LIKE = st.sampled_from(["*", "10.0.0.0/24", "10.0.0.1/8", "::1", "fe80::/10",
                                "10.0.0.300", "1.2.3.4/33", "", "/guests", "/a/../b", "a\0b"])


@EXAMPLES
@given(st.lists(st.dictionaries(st.sampled_from(["clients", "directory", "read_only", "x"]),
                                VALUES | ADDRESS_LIKE | st.lists(ADDRESS_LIKE, max_size=3),
                                max_size=3), max_size=3))
def test_exports_holding_any_toml_value(entries: list[dict[str, Any]]) -> None:
    lines = ['[cluster]\nmaster = "10.0.0.1:9420"\nkey_file = "/k"']
    for entry in entries:
        lines.append("[[exports]]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in entry.items())
    config = load_bytes("\n".join(lines).encode())
    if config is not None:
        for rule in config.exports:
            assert rule.clients and rule.directory.startswith("/"), rule
            assert "\0" not in rule.directory and "/../" not in rule.directory + "/"


@pytest.mark.parametrize("text", ["h:²", "h:٩٤٢٠", "h:99999", "h:", ":80", "h:-1", "h:1e3",
                                  "h\0:80"])
def test_addresses_that_are_not_host_port(text: str) -> None:
    with pytest.raises(ConfigError, match="is not host:port"):
        parse_address(text, "test")
