"""The one exception type for errors a user can cause: a bad config field, flag, file or argument.

`UserError` is a `ValueError`, so callers that catch ValueError keep working. Its message is at most
three lines, names the config field, flag or file, and says the fix; the command-line wrapper
(`gssm_jax.cli.common.run`) prints it as `error: ...` without a traceback and exits with status 2.
Every other exception is a bug (or an environment failure) and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

MAX_LINES = 3


class UserError(ValueError):
    """An error the user can fix; the message names the field or file and the fix (<= 3 lines)."""


def message_lines(error: BaseException) -> list[str]:
    """The lines of `error`'s message as the wrapper prints them: blank lines dropped, at most `MAX_LINES`.

    A longer message (a library's text passed through) keeps its first `MAX_LINES - 1` lines and its last.
    """
    lines = [" ".join(line.split()) for line in str(error).splitlines()]
    lines = [line for line in lines if line] or [type(error).__name__]
    if len(lines) > MAX_LINES:
        lines = [*lines[:MAX_LINES - 1], lines[-1]]
    return lines


def shortened(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, ending in "..." when cut (a value quoted in a one-line message)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_names(field: str, names: Iterable[str], lookup: Callable[[str], object],
                error: type[UserError] = UserError) -> None:
    """Raises `error` naming `field` when `names` is empty or `lookup` (a registry getter) rejects a name.

    lookup: raises a ValueError whose message lists the valid names (e.g. `families.get_family`).
    """
    names = tuple(names)
    if not names:
        raise error(f"{field} is empty; name at least one")
    for name in names:
        try:
            lookup(name)
        except ValueError as problem:
            raise error(f"{field}: {problem}") from None
