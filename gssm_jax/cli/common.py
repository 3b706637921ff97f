"""Command-line plumbing shared by the entry points (`gssm_jax/cli/*.py`, the `gssm-*` console scripts).

`app.run(main, flags_parser=parse_flags)` turns every error a user can make on the command line
(an unknown flag, a config field typo, a value of the wrong type, a bad `:arg` of the config file,
a config that is neither a file nor a shipped config) into one line on stderr and exit status 1,
instead of a traceback from inside absl. `--config` takes a file path or the name of a shipped config
(`gssm_jax.configs.resolve`), so every command works from any directory.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from absl import flags
from absl import logging as absl_logging

from gssm_jax import configs


def _one_line(error: BaseException) -> str:
    message = str(error.args[0]) if len(error.args) == 1 else str(error)
    if "Traceback (most recent call last)" in message:
        # config_flags embeds get_config's traceback; its last line is the error the user can act on.
        flag = message.split(": Error whilst", 1)[0]
        message = f"{flag}: {message.strip().splitlines()[-1]}"
    return " ".join(message.split())


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl flags parser for `app.run(..., flags_parser=parse_flags)`; exits with one line on a user error.

    Returns:
      the positional arguments left after the flags (absl's convention).
    """
    try:
        return flags.FLAGS(resolve_config_flags(argv))
    except flags.Error as error:
        sys.exit(f"error: {_one_line(error)} (pass --helpfull to list the flags)")
    except (KeyError, AttributeError, TypeError, ValueError) as error:
        # config_flags raises these for a field typo (with a "Did you mean" hint), an override of the
        # wrong type, or an exception from get_config(arg) for a bad `:arg`.
        sys.exit(f"error: bad --config: {_one_line(error)}")


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
            sys.exit(f"error: {error}")
        resolved.append(argument)
        index += 1
    return resolved


def resolve_workdir(config_workdir: str | None, workdir_flag: str | None) -> str:
    """The run directory: the --workdir flag if given, else `config.workdir`; one-line error if neither."""
    workdir = workdir_flag or config_workdir
    if not workdir:
        sys.exit("error: no run directory: pass --workdir=DIR (or --config.workdir=DIR)")
    return workdir


class _DropLibraryInfo(logging.Filter):
    """Drops INFO/DEBUG records logged from inside orbax (dozens of lines per checkpoint)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "orbax" not in record.pathname


def quiet_library_logs() -> None:
    """Keeps the progress log readable: orbax's INFO chatter is filtered out of absl's handler."""
    absl_logging.get_absl_handler().addFilter(_DropLibraryInfo())
