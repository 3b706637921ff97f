"""Command-line plumbing shared by the entry points (`gssm_jax/cli/*.py`, the `gssm-*` console scripts).

`run(main)` is every console script: absl's `app.run` with `parse_flags`, which turns every error a
user can make on the command line (an unknown flag, a config field typo, a value of the wrong type, a
bad `:arg` of the config file, a config that is neither a file nor a shipped config) into one line,
and with `main` guarded so that a `gssm_jax.errors.UserError` raised at any stage (a bad config field,
dataset or workdir) prints as at most three `error: ...` lines. Both exit with status 2 and no
traceback; Ctrl-C outside the training loop exits with 130. `--config` takes a file path or the name
of a shipped config (`gssm_jax.configs.resolve`), so every command works from any directory.
"""

from __future__ import annotations

import ast
import functools
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from absl import app, flags
from absl import logging as absl_logging

from gssm_jax import configs
from gssm_jax.errors import UserError, message_lines

USER_ERROR_STATUS = 2
INTERRUPTED_STATUS = 130


def _one_line(error: BaseException) -> str:
    message = str(error.args[0]) if len(error.args) == 1 else str(error)
    if "Traceback (most recent call last)" in message:
        # config_flags embeds get_config's traceback; its last line is the error the user can act on.
        # That line starts with the exception's qualified name ("gssm_jax.errors.UserError: "): dropped.
        flag = message.split(": Error whilst", 1)[0]
        last = re.sub(r"^[\w.]*(Error|Exception): ", "", message.strip().splitlines()[-1])
        message = f"{flag}: {last}"
    while len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":
        try:  # a KeyError's repr passed on as a message: print the text, not its quotes and `\n`
            message = str(ast.literal_eval(message))
        except (ValueError, SyntaxError):
            break
    return " ".join(message.split())


def _override_named(message: str, argv: Sequence[str]) -> str:
    """The `--config.FIELD=...` argument whose field is the first quoted name in `message` (or "")."""
    quoted = re.search(r"'([^']+)'", message)
    if quoted:
        for argument in argv:
            field = argument.split("=", 1)[0]
            if field.startswith("--config.") and (field.endswith(f".{quoted[1]}") or f".{quoted[1]}." in field):
                return argument
    return ""


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl flags parser for `app.run(..., flags_parser=parse_flags)`; exits with one line on a user error.

    Returns:
      the positional arguments left after the flags (absl's convention).
    """
    try:
        return flags.FLAGS(resolve_config_flags(argv))
    except flags.Error as error:
        fail(f"{_one_line(error)} (pass --helpfull to list the flags)")
    except (KeyError, AttributeError, TypeError, ValueError) as error:
        # config_flags raises these for a field typo (with a "Did you mean" hint), an override of the
        # wrong type, or an exception from get_config(arg) for a bad `:arg`.
        message = _one_line(error)
        fail(f"bad {_override_named(message, argv) or '--config'}: {message}")


def resolve_config_flags(argv: Sequence[str], name: str = "config") -> list[str]:
    """`argv` with every `--config=SPEC` (or `--config SPEC`) resolved to a file (`gssm_jax.configs.resolve`).

    Exits with one line when SPEC is neither a file nor the name of a shipped config.
    """
    resolved, argv = [], list(argv)
    index = 0
    while index < len(argv):
        argument = argv[index]
        try:
            if argument.startswith(f"--{name}="):
                argument = f"--{name}=" + configs.resolve(argument.split("=", 1)[1])
            elif argument == f"--{name}" and index + 1 < len(argv):
                resolved.append(argument)
                index += 1
                argument = configs.resolve(argv[index])
        except ValueError as error:
            fail(str(error))
        resolved.append(argument)
        index += 1
    return resolved


def resolve_workdir(config_workdir: str | None, workdir_flag: str | None) -> str:
    """The run directory: the --workdir flag if given, else `config.workdir`; one-line error if neither."""
    workdir = workdir_flag or config_workdir
    if not workdir:
        raise UserError("no run directory: pass --workdir=DIR (or --config.workdir=DIR)")
    return workdir


def check_no_arguments(argv: Sequence[str]) -> None:
    """Raises UserError for positional arguments (every setting is a `--flag=value`)."""
    if len(argv) > 1:
        raise UserError(f"unexpected arguments {' '.join(argv[1:])}: every setting is a --flag=value "
                        "(pass --helpfull to list the flags)")


def fail(error: BaseException | str, status: int = USER_ERROR_STATUS) -> NoReturn:
    """Prints `error` as at most three `error: ...` lines on stderr and exits with `status`."""
    lines = message_lines(error if isinstance(error, BaseException) else UserError(error))
    sys.stderr.write("".join(f"error: {line}\n" for line in lines))
    sys.stderr.flush()
    raise SystemExit(status)


def guarded(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
    """`main` with a UserError (or a diverged loss) turned into `fail(...)` and Ctrl-C into exit status 130."""

    @functools.wraps(main)
    def guarded_main(argv: list[str]) -> None:
        quiet_library_logs()
        try:
            main(argv)
        except (UserError, FloatingPointError) as error:
            fail(error)
        except KeyboardInterrupt:
            fail("interrupted (Ctrl-C)", status=INTERRUPTED_STATUS)

    return guarded_main


def run(main: Callable[[list[str]], None]) -> None:
    """A console script: parses the flags (`parse_flags`), then runs `guarded(main)`."""
    app.run(guarded(main), flags_parser=parse_flags)


class _DropLibraryInfo(logging.Filter):
    """Drops INFO/DEBUG records logged from inside orbax (dozens of lines per checkpoint) and JAX (e.g. the
    backends it could not initialise, on every start)."""

    def filter(self, record: logging.LogRecord) -> bool:
        library = f"{os.sep}orbax{os.sep}" in record.pathname or f"{os.sep}jax{os.sep}" in record.pathname
        return record.levelno >= logging.WARNING or not library


def quiet_library_logs() -> None:
    """Keeps the progress log readable: orbax's and JAX's INFO chatter is filtered out of absl's handler."""
    absl_logging.get_absl_handler().addFilter(_DropLibraryInfo())
