"""Each subcommand takes its own options: other flags are refused, other variables ignored."""

from __future__ import annotations

import argparse

import pytest
from kthybrid_serve.cli import COMMANDS, build_parser, main
from kthybrid_serve.errors import UsageError
from kthybrid_serve.settings import COMMAND_NAMES, OPTIONS, resolve_settings


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the parser has no subcommands")


def test_the_cli_commands_are_the_commands_options_name() -> None:
    assert tuple(COMMANDS) == COMMAND_NAMES
    named = set().union(*(option.spec.commands for option in OPTIONS))
    assert named == set(COMMAND_NAMES)


@pytest.mark.parametrize("command", COMMAND_NAMES)
def test_each_subcommand_parser_takes_exactly_its_options(command: str) -> None:
    parser = _subparsers(build_parser())[command]
    outputs = {"help", "json", "helm_values", "fleet_env"}
    taken = {action.dest for action in parser._actions} - outputs
    assert taken == {option.dest for option in OPTIONS if command in option.spec.commands}


def test_output_is_converts_only_flag() -> None:
    takers = [o.spec.commands for o in OPTIONS if o.dest == "output"]
    assert takers == [frozenset({"convert"})]


def test_chat_refuses_the_output_flag_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "--output", "/tmp/x"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --output" in err
    assert err.count("\n") == 1


def test_a_variable_another_command_takes_is_ignored_unparsed() -> None:
    environ = {"KTHYBRID_OUTPUT": "/tmp/out", "KTHYBRID_CONTEXT_LENGTH": "not a number"}
    settings = resolve_settings({}, environ, "chat")
    assert settings.output is None
    assert settings.context_length == 16384


def test_a_variable_the_command_takes_is_still_checked() -> None:
    with pytest.raises(UsageError, match="KTHYBRID_CONTEXT_LENGTH"):
        resolve_settings({}, {"KTHYBRID_CONTEXT_LENGTH": "not a number"}, "plan")
    assert resolve_settings({}, {"KTHYBRID_OUTPUT": "/tmp/out"}, "convert").output == "/tmp/out"
