"""Command-line plumbing shared by the entry points (`gssm_jax/cli/*.py`, the `gssm-*` console scripts).

`run(main, config=...)` is every console script. `--help` prints the script's own help (`gssm_jax.cli.usage`:
what it does, its flags, its config's docstring and `:arg` keys with their defaults). Otherwise absl's
`app.run` parses the flags with `parse_flags`, which turns every error a user can make on the command line
(an unknown flag, a config field typo, a value of the wrong type, a bad `:arg`, a config that is neither a
file nor a shipped config, a config file of theirs that fails to load: its file and line) into one line,
and `main` runs guarded so that a `gssm_jax.errors.UserError` raised at any stage (a bad config field,
dataset or workdir) prints as at most three `error: ...` lines. Both exit with status 2 and no traceback;
Ctrl-C outside the training loop exits with 130. `--config` takes a file path or the name of a shipped
config (`gssm_jax.configs.resolve`), so every command works from any directory. Nothing here imports JAX:
the mains import it after the config is checked, so a mistake costs a fraction of a second.
"""

from __future__ import annotations

import ast
import functools
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

import ml_collections
from absl import app, flags
from absl import logging as absl_logging

from gssm_jax import configs
from gssm_jax.cli import usage
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


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def _config_file_error(error: BaseException, argv: Sequence[str]) -> str | None:
    """`--config=FILE, line N (in FUNCTION): Type: message` when `error` comes from a user's config file
    (a syntax error, a failed import, a bug in its get_config), else None (our own UserError, a flag typo)."""
    spec = usage.config_spec(argv, None)
    if spec is None:
        return None
    file = os.path.abspath(spec.partition(":")[0])
    if os.path.dirname(file) == configs.DIRECTORY:
        return None
    if isinstance(error, SyntaxError) and error.filename and os.path.abspath(error.filename) == file:
        return f"--config={spec}: line {error.lineno}: SyntaxError: {error.msg}; fix the file"
    text = str(error.args[0]) if len(error.args) == 1 else str(error)
    if "Traceback (most recent call last)" in text:  # config_flags embeds get_config's traceback
        frames = [(name, int(line), function) for name, line, function in _FRAME.findall(text)]
        last = text.strip().splitlines()[-1]
    else:
        frames = [(frame.filename, frame.lineno, frame.name) for frame in traceback.extract_tb(error.__traceback__)]
        last = f"{type(error).__name__}: {text}"
    frames = [frame for frame in frames if os.path.abspath(frame[0]) == file]
    if not frames or re.match(r"^gssm_jax\.[\w.]*Error: ", last):  # none of the file's, or our UserError
        return None
    _, line, function = frames[-1]
    return f"--config={spec}, line {line} (in {function}): {last}; fix the file"


def _config_value_error(argv: Sequence[str]) -> str | None:
    """One line when `--config` was given but its get_config returned something other than a ConfigDict."""
    spec = usage.config_spec(argv, None)
    if spec is None or "config" not in flags.FLAGS:
        return None
    value = flags.FLAGS["config"].value
    if isinstance(value, ml_collections.ConfigDict):
        return None
    return (f"--config={spec}: get_config returned {type(value).__name__ if value is not None else 'None'}, not a "
            "ConfigDict; return the config from get_config")


class _DropConfigWarnings(logging.Filter):
    """Drops config_flags' warning that get_config returned None: `_config_value_error` says it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.endswith("config_flags.py")


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl flags parser for `app.run(..., flags_parser=parse_flags)`; exits with one line on a user error.

    Returns:
      the positional arguments left after the flags (absl's convention).
    """
    quiet = _DropConfigWarnings()
    absl_logging.get_absl_logger().addFilter(quiet)
    try:
        positional = flags.FLAGS(resolve_config_flags(argv))
    except Exception as error:  # noqa: BLE001 (everything a config file can raise while it is loaded)
        # absl raises flags.Error for an unknown flag, a missing value, or a ValueError/TypeError of a flag's
        # parser (a bad `:arg`, with get_config's traceback embedded); config_flags raises KeyError,
        # AttributeError, TypeError or ValueError for a field typo (with a "Did you mean" hint) or an override
        # of the wrong type; a user's config file anything.
        message = _one_line(error)
        if "has no attribute 'get_config'" in message:
            fail(f"--config={usage.config_spec(argv, '')} defines no get_config; a config file defines "
                 "get_config(arg=None) returning an ml_collections.ConfigDict")
        if "--config must have a value other than None" in message:
            fail(_config_value_error(argv) or message)
        located = _config_file_error(error, argv)
        if located:
            fail(located)
        if isinstance(error, flags.Error):
            fail(f"{message} (pass --help to list the flags)")
        fail(f"bad {_override_named(message, argv) or '--config'}: {message}")
    finally:
        absl_logging.get_absl_logger().removeFilter(quiet)
    located = _config_value_error(argv)
    if located:
        fail(located)
    return positional


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
                        "(pass --help to list the flags)")


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


def run(main: Callable[[list[str]], None], config: str | None = None) -> None:
    """A console script: `--help` (`gssm_jax.cli.usage`), else `parse_flags`, then runs `guarded(main)`.

    config: the shipped config that `--help` describes when the command line names none.
    """
    if usage.wants_help(sys.argv):
        try:
            text = usage.help_text(sys.modules[main.__module__], sys.argv, config)
        except UserError as error:
            fail(error)
        sys.stdout.write(text)
        sys.stdout.flush()
        raise SystemExit(0)
    app.run(guarded(main), flags_parser=parse_flags)


class _DropLibraryInfo(logging.Filter):
    """Drops INFO/DEBUG records logged from inside orbax (dozens of lines per checkpoint) and JAX (e.g. the
    backends it could not initialise, on every start)."""

    def filter(self, record: logging.LogRecord) -> bool:
        library = f"{os.sep}orbax{os.sep}" in record.pathname or f"{os.sep}jax{os.sep}" in record.pathname
        return record.levelno >= logging.WARNING or not library


class _PlainFormatter(logging.Formatter):
    """A log record as its message alone (warnings and errors prefixed by their level), without absl's prefix
    of date, thread and source line."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


def quiet_library_logs() -> None:
    """Keeps the progress log readable: orbax's and JAX's INFO chatter is filtered out of absl's handler, and
    below `--verbosity=1` each line is its message alone."""
    handler = absl_logging.get_absl_handler()
    handler.addFilter(_DropLibraryInfo())
    if flags.FLAGS.verbosity < 1:
        handler.setFormatter(_PlainFormatter())
