"""The load-test options table: one declaration for the CLI, the locustfile and LoadTestConfig."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

import pytest

from generator.cli import _parser
from generator.loadtest.options import CLI, LOCUST, OPTIONS, add_locust_options, default

from ..conftest import REPO_ROOT


class _LocustLikeParser(argparse.ArgumentParser):
    """Takes Locust's ``include_in_web_ui`` keyword, so the test needs no Locust (which patches gevent)."""

    def add_argument(self, *args: Any, **kwargs: Any) -> Any:
        self.web_ui = getattr(self, "web_ui", {})
        hidden = not kwargs.pop("include_in_web_ui", True)
        action = super().add_argument(*args, **kwargs)
        self.web_ui[action.dest] = not hidden
        return action


def _loadtest(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(["loadtest", *argv])


def _config_defaults() -> dict[str, Any]:
    """LoadTestConfig's defaults, read in a subprocess: its module imports Locust, which patches gevent."""
    code = (
        "import dataclasses as d, json; from generator.loadtest.run import LoadTestConfig as C; "
        "print(json.dumps({f.name: f.default_factory() if f.default_factory is not d.MISSING else "
        "(None if f.default is d.MISSING else f.default) for f in d.fields(C)}))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_command_and_the_run_config_share_the_options_and_their_defaults() -> None:
    args = vars(_loadtest("--model", "m"))
    config = _config_defaults()
    assert set(config) == {o.name for o in OPTIONS if CLI in o.where}
    for name, value in config.items():
        if name != "models":
            assert args[name] == value, name


def test_the_flags_users_know_still_work() -> None:
    args = _loadtest("--model", "a:2", "--model", "b", "--level-duration", "3", "--request-timeout", "5")
    assert args.models == ["a:2", "b"]
    assert args.duration == 3.0
    assert args.request_timeout == 5.0
    assert _loadtest("--model", "m", "--duration", "4").duration == 4.0
    with pytest.raises(SystemExit):
        _loadtest("--model", "m", "--users", "2", "--sweep", "1,2")


def test_locust_gets_the_shared_options_with_its_own_defaults() -> None:
    parser = _LocustLikeParser()
    add_locust_options(parser)
    parsed = parser.parse_args(["--model", "m", "--level-duration", "2", "--grpc-url", "h:1"])
    assert parsed.models == ["m"]
    assert parsed.duration == 2.0
    assert parsed.grpc_url == "h:1"
    assert parsed.shape is None  # plain Locust runs -u/-r unless --shape is given
    assert parsed.request_timeout == default("request_timeout")
    assert parser.web_ui["record_requests"] is False
    locust_names = {o.name for o in OPTIONS if LOCUST in o.where}
    assert {"url", "users", "spawn_rate", "workers"}.isdisjoint(locust_names)


def test_shape_takes_input_shapes_and_still_names_a_load_shape() -> None:
    args = _loadtest("--model", "m", "--shape", "input_ids:16", "--shape", "ramp", "--shape", "mask:16")
    assert args.input_shapes == ["input_ids:16", "mask:16"] and args.shape == "ramp"
    assert _loadtest("--model", "m", "--load-shape", "ramp").shape == "ramp"
    assert _loadtest("--model", "m").input_shapes == [] and _loadtest("--model", "m").shape == "step"
    with pytest.raises(SystemExit):
        _loadtest("--model", "m", "--load-shape", "zigzag")
    parser = _LocustLikeParser()
    add_locust_options(parser)
    parsed = parser.parse_args(["--model", "m", "--shape", "step", "--shape", "x:3"])
    assert parsed.shape == "step" and parsed.input_shapes == ["x:3"]
    assert parser.parse_args(["--model", "m"]).input_shapes == []
    assert parser.web_ui["input_shapes"] is True
