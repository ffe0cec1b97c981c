"""`backdrop serve`'s flags come from ServerSettings: one per field, so a new setting is a new flag."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from server.cli import build_parser, settings_from_args
from server.web.settings import DeviceSettings, ServerSettings, env_name, flag

pytestmark = pytest.mark.unit


def _serve() -> argparse.ArgumentParser:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices["serve"]


def test_every_setting_is_a_flag_of_serve_in_the_fields_order() -> None:
    actions = {a.dest: a for a in _serve()._actions if a.option_strings}
    fields = ServerSettings.model_fields
    expected = [name for name in fields if name not in DeviceSettings.model_fields]
    assert [dest for dest in actions if dest in fields and dest not in DeviceSettings.model_fields] == expected
    for name in expected:
        assert actions[name].option_strings[0] == flag(name, fields[name])  # a yes/no setting has its --no- too
        assert env_name(name) in (actions[name].help or "")
    flags = {name: flag(name, fields[name]) for name in expected}
    exceptions = {name: f for name, f in flags.items() if f != "--" + name.replace("_", "-")}
    assert exceptions == {"ice_servers": "--ice-server", "models": "--model", "tokens": "--token"}


def test_flags_set_their_settings() -> None:
    args = _serve().parse_args(
        ["--ice-server", "stun:a", "--ice-server", "stun:b", "--model", "m.pt", "--token", "t", "--max-batch", "4"]
    )
    settings = settings_from_args(args)
    assert settings.ice_servers == ["stun:a", "stun:b"] and settings.models == [Path("m.pt")]
    assert settings.tokens == ["t"] and settings.max_batch == 4 and settings.port == ServerSettings().port
