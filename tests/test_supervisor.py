"""`backdrop serve`'s flags and `serve --processes N`'s layout, without starting anything: the settings that
flags and the environment make, the command line the supervisor gives each process (parsed as `serve` parses
it), and the ports and routes of the HAProxy configuration in front of them."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import pytest

from server.cli import add_server_options, build_parser, settings_from_args
from server.tools.proxy import haproxy_config, process_ports
from server.tools.supervisor import Supervisor, default_processes

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings from the flags here, not from whatever BACKDROP_* the machine running the tests has."""
    for name in [n for n in os.environ if n.startswith("BACKDROP_")]:
        monkeypatch.delenv(name)


def test_settings_come_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKDROP_MAX_SESSIONS", "3")
    monkeypatch.setenv("BACKDROP_ICE_SERVERS", "stun:stun.example.org:3478,turn:turn.example.org")
    parser = argparse.ArgumentParser()
    add_server_options(parser)
    settings = settings_from_args(parser.parse_args(["--port", "9000"]))
    assert (settings.port, settings.max_sessions) == (9000, 3)
    assert settings.ice_servers == ["stun:stun.example.org:3478", "turn:turn.example.org"]
    assert json.loads(settings.model_dump_json())["media_timeout"] == 10.0


def _settings_of(command: list[str]):  # type: ignore[no-untyped-def]
    """What process `command` runs with: its `python -m server ...` line parsed as `backdrop` parses it."""
    assert command[:3] == [sys.executable, "-m", "server"]
    args = build_parser().parse_args(command[3:])
    assert args.command == "serve"
    return settings_from_args(args)


def test_ports_are_the_proxys_next_ones_two_a_process() -> None:
    assert process_ports(8080, 3) == [(8081, 8082), (8083, 8084), (8085, 8086)]
    ports = [p for pair in process_ports(9000, 64) for p in pair]
    assert len(set(ports)) == 128 and 9000 not in ports and max(ports) == 9128


def test_each_process_listens_on_its_own_ports_under_its_own_route() -> None:
    given = ["serve", "--processes", "3", "--port", "8080", "--host", "0.0.0.0", "--max-sessions", "5"]
    supervisor = Supervisor(given, processes=3, port=8080, cores=2, prefix="/p/backdrop-0")
    seen = []
    for n, (http, agent) in enumerate(process_ports(8080, 3), start=1):
        settings = _settings_of(supervisor.command(n))
        # The supervisor's flags win over the same flags given to `serve --processes`.
        assert (settings.processes, settings.proxy, settings.host) == (1, "none", "127.0.0.1")
        assert (settings.port, settings.agent_port) == (http, agent)
        assert settings.route_prefix == f"/p/backdrop-0/w/{n}"
        assert settings.cores == 2  # its share of the machine's cores
        assert settings.max_sessions == 5  # the rest as given
        seen += [settings.port, settings.agent_port]
    assert len(set(seen)) == 6 and 8080 not in seen


def test_without_a_share_each_process_keeps_its_own_cores_setting() -> None:
    supervisor = Supervisor(["serve", "--processes", "2", "--cores", "3"], 2, 8080, cores=None)
    assert "--cores" not in supervisor.command(1)[-6:]  # none appended after the given flags
    assert _settings_of(supervisor.command(1)).cores == 3
    assert _settings_of(supervisor.command(2)).route_prefix == "/w/2"  # no machine prefix: the process's own


def _backends(config: str) -> dict[str, list[str]]:
    """Each backend's lines, by name."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in config.splitlines():
        if line and not line.startswith((" ", "#")):
            current = line
            sections[current] = []
        elif current is not None and line.strip():
            sections[current].append(line.strip())
    return sections


def test_the_proxy_sends_each_route_to_the_process_that_serves_it() -> None:
    supervisor = Supervisor(["serve"], processes=3, port=8080, cores=None)
    config = haproxy_config(3, 8080)
    sections = _backends(config)
    assert "bind 0.0.0.0:8080" in sections["frontend backdrop"]
    for n in (1, 2, 3):
        settings = _settings_of(supervisor.command(n))
        assert f"use_backend process_{n} if {{ path_beg /w/{n}/ }}" in sections["frontend backdrop"]
        backend = sections[f"backend process_{n}"]
        assert any(line.startswith(f"server p{n} 127.0.0.1:{settings.port} ") for line in backend), backend
        # The proxy strips the route the process puts in its URLs.
        assert settings.route_prefix == f"/w/{n}" and f"http-request replace-path ^/w/{n}(/.*) \\1" in backend
        # New offers: to every process, weighted by what its agent (on its agent port) reports.
        (offers,) = [line for line in sections["backend offers"] if line.startswith(f"server p{n} ")]
        assert f"127.0.0.1:{settings.port} " in offers
        assert re.search(rf"agent-port {settings.agent_port}\b", offers), offers
    assert len([line for line in sections["backend offers"] if line.startswith("server ")]) == 3


@pytest.mark.parametrize(
    ("cuda", "cores", "processes"),
    [(False, 16, 4), (False, 8, 2), (False, 7, 1), (False, 2, 1), (False, 1, 1), (True, 16, 8), (True, 3, 1),
     (True, 1, 1)],
)  # fmt: skip
def test_the_default_number_of_processes(cuda: bool, cores: int, processes: int) -> None:
    """One per 4 cores on a CPU, one per 2 on CUDA, and never none."""
    assert default_processes(cuda, cores) == processes
