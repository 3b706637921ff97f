"""One process per work directory: an exclusive OS lock on `WORKDIR/.lock` that names its holder.

A second `gssm-experiment1`, `gssm-train`, ... on a directory another process is working in refuses at once,
in one line naming the holder (pid, host, command, start time), instead of doing the same work twice beside
it. The lock is `fcntl.flock` on the open file, so the operating system releases it when the holder exits,
however it exits (SIGKILL and a crash included): **there is no stale lock**. The file's text only names the
last holder; a `.lock` file left behind is not a lock, and nothing ever needs deleting by hand. (On NFS, Linux
maps flock to NFS byte-range locks, which hold across hosts with NFSv4.)

The lock is per directory, not per tree: a sweep holds its own directory while its runs, possibly in worker
processes, may hold their run directories below it. Within one process holding a directory again is a no-op,
so a command line can take the lock early and the library it calls may take it too. A directory the lock
created and nothing else wrote to is removed again on release, so a command that fails its checks leaves no
empty directory behind.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator

from gssm_jax.errors import UserError, shortened

LOCK_FILE = ".lock"
_HELD: set[str] = set()  # real paths of the directories this process holds


def _holder_text(text: str) -> str:
    """The holder recorded in a lock file's `text`, as one phrase (or a neutral phrase if it is unreadable)."""
    try:
        holder = json.loads(text)
        started = datetime.datetime.fromtimestamp(holder["started"]).strftime("%Y-%m-%d %H:%M:%S")
        minutes = (time.time() - holder["started"]) / 60
        return (f"pid {holder['pid']} on {holder['host']} since {started} ({minutes:.0f} min): "
                f"{shortened(holder['command'], 120)}")
    except (ValueError, KeyError, TypeError):
        return "another process (it has not recorded itself yet)"


def _create(workdir: str) -> str | None:
    """Creates `workdir` if missing; returns the highest directory created (None: it existed)."""
    if os.path.isdir(workdir):
        return None
    if os.path.lexists(workdir):
        raise UserError(f"--workdir={workdir} is a file, not a directory; pass a directory")
    top = os.path.abspath(workdir)
    while not os.path.isdir(os.path.dirname(top)) and os.path.dirname(top) != top:
        top = os.path.dirname(top)
    try:
        os.makedirs(workdir)
    except FileExistsError:
        if os.path.isdir(workdir):  # another process made it a moment ago
            return None
        raise UserError(f"--workdir={workdir} is a file, not a directory; pass a directory") from None
    except NotADirectoryError:
        raise UserError(f"--workdir={workdir}: a part of this path is a file; pass a directory") from None
    except OSError as error:
        raise UserError(f"--workdir={workdir}: cannot create it ({error.strerror}); pass a writable "
                        "directory") from None
    return top


def _remove_if_empty(workdir: str, top: str) -> None:
    """Removes `workdir` and its created parents up to `top` if the lock file is all they hold."""
    try:
        if os.listdir(workdir) == [LOCK_FILE]:
            os.remove(os.path.join(workdir, LOCK_FILE))
        path = os.path.abspath(workdir)
        while True:
            os.rmdir(path)  # fails (and stops here) on a directory that is not empty
            if path == top:
                break
            path = os.path.dirname(path)
    except OSError:
        pass


def _open_locked(path: str, workdir: str) -> int:
    """A descriptor of `path` holding its exclusive flock; UserError naming the holder if another has it."""
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise UserError(f"--workdir={workdir}: cannot create {path} ({error.strerror}); pass a writable "
                            "directory") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with os.fdopen(descriptor) as file:
                holder = _holder_text(file.read())
            raise UserError(f"--workdir={workdir} is in use by {holder}; wait for it to finish, stop it, or pass "
                            "another --workdir (the lock goes when that process exits)") from None
        try:
            same = os.fstat(descriptor).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return descriptor
        os.close(descriptor)  # the file was removed by its last holder while we waited on it: lock the new one


@contextlib.contextmanager
def hold(workdir: str, command: str | None = None) -> Iterator[None]:
    """Holds `workdir`'s lock (creating the directory if needed) for the duration of the `with` block.

    command: what the lock file records as the holder (default: this process's command line).

    Raises:
      UserError: another process holds the directory (the message names it), or `workdir` is a file or
        cannot be created.
    """
    key = os.path.realpath(workdir)
    if key in _HELD:  # this process holds it already (a command line, then the library it calls)
        yield
        return
    created = _create(workdir)
    path = os.path.join(workdir, LOCK_FILE)
    try:
        descriptor = _open_locked(path, workdir)
    except UserError:
        if created:
            _remove_if_empty(workdir, created)
        raise
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
              "command": command or " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])}
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, (json.dumps(holder) + "\n").encode(), 0)
    _HELD.add(key)
    try:
        yield
    finally:
        _HELD.discard(key)
        os.ftruncate(descriptor, 0)  # still held: nobody reads a half-cleared file
        if created:
            _remove_if_empty(workdir, created)
        os.close(descriptor)  # releases the lock
