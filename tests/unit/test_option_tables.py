"""Each option of tune, deploy and loadtest declared once: the option tables against the parser the CLI
builds, and the config objects' defaults against the tables."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from typing import Any

import pytest

from generator.cli import _parser
from generator.core.errors import DeployError, TuneError
from generator.core.options import Option, add_options, config_values
from generator.deploy import options as deploy_options
from generator.deploy.manifests import DeployConfig, LoadtestPlan
from generator.loadtest import options as loadtest_options
from generator.loadtest.steady import Steadiness
from generator.tune import options as tune_options

from ..conftest import REPO_ROOT

TABLES: dict[str, tuple[Any, ...]] = {
    "tune": tune_options.OPTIONS,
    "deploy": deploy_options.OPTIONS,
    "loadtest": tuple(o for o in loadtest_options.OPTIONS if loadtest_options.CLI in o.where),
}


def _command(name: str) -> argparse.ArgumentParser:
    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


def _flags(row: Any) -> list[str]:
    """The option strings argparse keeps for a row (none for a positional argument)."""
    return [] if not row.flags[0].startswith("-") else list(row.flags)


def _cli_default(row: Any) -> Any:
    return list(row.default) if row.repeat and row.default is not None else row.default


@pytest.mark.parametrize("command", TABLES)
def test_every_flag_of_the_command_is_a_row_of_its_table_with_the_tables_default(command: str) -> None:
    actions = [a for a in _command(command)._actions if not isinstance(a, argparse._HelpAction)]
    rows = {row.name: row for row in TABLES[command]}
    assert len(rows) == len(TABLES[command]), "two rows set the same argparse dest"
    assert sorted(a.dest for a in actions) == sorted(rows)  # no flag declared outside the table
    for action in actions:
        row = rows[action.dest]
        assert action.option_strings == _flags(row), action.dest
        assert action.default == _cli_default(row), action.dest
        assert action.required == row.required, action.dest
        if row.choices is not None:
            assert list(action.choices) == list(row.choices), action.dest
        if "{default}" in row.help:
            assert "{default}" not in action.help, action.dest


def test_deploy_config_and_its_loadtest_plan_take_their_defaults_from_the_table() -> None:
    plan_rows = [o for o in deploy_options.OPTIONS if o.target.startswith("loadtest.")]
    rows = {o.target: o for o in deploy_options.OPTIONS if o not in plan_rows}
    fields = {f.name: f for f in dataclasses.fields(DeployConfig)}
    assert set(fields) == {*rows, "loadtest"}
    config = DeployConfig()
    for name, row in rows.items():
        assert getattr(config, name) == row.to_config(row.default), name
    plan = LoadtestPlan("m")
    for row in plan_rows:
        name = row.target.removeprefix("loadtest.")
        assert name in {f.name for f in dataclasses.fields(LoadtestPlan)}
        if row.default is not None:  # None: the plan keeps its own (the image of this version)
            assert getattr(plan, name) == row.to_config(row.default), name
    # The command with no options is the library's DeployConfig() with no arguments.
    assert deploy_options.config_from_args(_parser().parse_args(["deploy"])) == config


def _tune_config(argv: list[str]) -> dict[str, Any]:
    """TuneConfig's defaults and the config of ``argv``, in a subprocess: its module imports Locust."""
    code = (
        "import dataclasses, json, sys; from generator.tune.run import TuneConfig; "
        "from generator.cli import _parser; from generator.tune.options import config_from_args; "
        "built = config_from_args(_parser().parse_args(json.loads(sys.argv[1]))); "
        "print(json.dumps({'defaults': dataclasses.asdict(TuneConfig(models=['m'])), "
        "'parsed': dataclasses.asdict(built)}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(argv)], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_tune_config_takes_its_defaults_from_the_table() -> None:
    read = _tune_config(["tune", "--model", "m"])
    defaults = read["defaults"]
    assert read["parsed"] == defaults  # the command with only --model is TuneConfig(models=[...])
    nested = {"steadiness", "space"}
    targets = {o.target for o in tune_options.OPTIONS}
    assert set(defaults) == {t for t in targets if "." not in t} | nested
    for row in tune_options.OPTIONS:
        owner, _, name = row.target.rpartition(".")
        value = defaults[owner][name] if owner else defaults[row.target]
        if row.target != "models":
            assert value == row.to_config(row.default), row.target
    # The steadiness defaults are Steadiness's own; the request defaults are the load test's.
    assert defaults["steadiness"] == dataclasses.asdict(Steadiness())
    for name in ("request_timeout", "batch_size", "seed"):
        assert tune_options.default(name) == loadtest_options.default(name)


def test_tune_options_reach_their_config_fields() -> None:
    argv = ["tune", "-m", "a", "-m", "b", "-m", "a", "--users", "1,4", "--trial-seconds", "0.5", "--no-write"]
    space = ["--instances", "1,2", "--threads", "auto,2", "--gpu-sets", "1,0;2", "--preferred", ""]
    read = _tune_config([*argv, *space])["parsed"]
    assert read["models"] == ["a", "b"] and read["users"] == [1, 4] and read["write"] is False
    assert read["steadiness"]["window"] == 0.5
    assert read["space"]["instances"] == [1, 2] and read["space"]["threads"] == [None, 2]
    assert read["space"]["gpu_sets"] == [[0, 1], [2]] and read["space"]["preferred"] is None


def test_a_list_that_does_not_parse_is_the_commands_error_not_a_usage_error() -> None:
    args = _parser().parse_args(["tune", "--model", "m", "--instances", "two"])  # argparse accepts it
    with pytest.raises(TuneError, match=r"^--instances 'two': give a comma-separated list, e.g. 1,2,4$"):
        tune_options.config_from_args(args)
    args = _parser().parse_args(["deploy", "--loadtest", "m", "--loadtest-args", "--sweep '1"])
    with pytest.raises(DeployError, match=r"--loadtest-args .*: no closing quotation"):
        deploy_options.config_from_args(args)
    # Without --loadtest its arguments are not read, as before.
    args = _parser().parse_args(["deploy", "--loadtest-args", "--sweep '1"])
    assert deploy_options.config_from_args(args).loadtest is None


def test_a_table_puts_rows_in_their_help_sections_and_copies_list_defaults() -> None:
    table = (
        Option("spec", ("spec",), "the spec", nargs="?"),
        Option("level", ("--level",), "levels (default {default})", default="1,2", group="load"),
        Option("rate", ("--rate",), "rate ({default})", type=float, default=2.0, group="load"),
        Option("tag", ("--tag",), "tags", field="meta.tags", default=(), repeat=True, group="out"),
        Option(
            "quiet", ("--quiet",), "quiet", field="loud", default=False, switch=True, parse=lambda q: not q
        ),
    )
    parser = argparse.ArgumentParser(prog="x")
    add_options(parser, table)
    text = parser.format_help()
    assert text.index("\nload:") < text.index("\n  --level") < text.index("\nout:") < text.index("\n  --tag")
    assert "levels (default 1,2)" in text and "rate (2)" in text
    first, second = parser.parse_args(["--tag", "a"]), parser.parse_args([])
    assert first.tag == ["a"] and second.tag == []  # each parse gets its own list
    assert config_values(table, first) == {"level": "1,2", "rate": 2.0, "meta.tags": ["a"], "loud": True}
