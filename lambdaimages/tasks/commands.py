"""Which doit command a command line runs, read the way doit reads it."""

from __future__ import annotations

import signal

from doit.cmd_base import DodoTaskLoader
from doit.cmdparse import CmdOption, CmdParse, CmdParseError
from doit.doit_cmd import DoitMain

# Commands that only read: they take no lock on the output folder and write nothing in it.
READ_ONLY = ("list", "info", "help")


def command(argv: list[str]) -> str:
    """The doit command of `argv` (sys.argv): `run` unless a command name comes first.

    As doit's own main: the loader's options (`-f`, `-d`, `-k`) may come before the command, and
    `NAME=VALUE` variables anywhere.
    """
    words = argv[1:]
    try:
        _, words = CmdParse([CmdOption(option) for option in DodoTaskLoader.cmd_options]).parse_only(words)
    except CmdParseError:
        pass
    words = [word for word in words if word.startswith("-") or "=" not in word]
    return words[0] if words and not words[0].startswith("-") and words[0] in _commands() else "run"


def read_only(argv: list[str]) -> bool:
    """The command line runs a command that only reads (`doit list`, `doit info TASK`, `doit help`)."""
    return command(argv) in READ_ONLY


def _commands() -> set[str]:
    return {cmd.get_name() for cmd in DoitMain.DOIT_CMDS}


def quiet_on_closed_pipe() -> None:
    """A read-only command piped into `head` ends as `yes | head` does: by SIGPIPE (141), no traceback.

    Python ignores SIGPIPE, so a closed stdout was a BrokenPipeError that doit printed as a traceback (exit 3).
    Only for read-only commands: they hold nothing half-done that dying at a write could leave behind.
    """
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
