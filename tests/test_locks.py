"""One process per work directory: a second one refuses in one line naming the holder; no stale lock."""

import os
import signal
import subprocess
import sys

import pytest

from gssm_jax import locks
from gssm_jax.errors import UserError

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHONPATH = os.pathsep.join(filter(None, [REPOSITORY, os.environ.get("PYTHONPATH")]))  # the checkout first
HOLD = ("import sys, time; from gssm_jax import locks\n"
        "with locks.hold(sys.argv[1], 'gssm-experiment1 --workdir=' + sys.argv[1]):\n"
        "    print('held', flush=True); time.sleep(600)")


def _holder(workdir: str) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, workdir], cwd=REPOSITORY, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": PYTHONPATH})
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_process_is_refused_naming_the_holder_and_a_killed_holder_leaves_no_lock(tmp_path):
    workdir = str(tmp_path / "sweep")
    holder = _holder(workdir)
    try:
        with pytest.raises(UserError) as refused, locks.hold(workdir):
            pass
        message = str(refused.value)
        assert "\n" not in message and f"in use by pid {holder.pid} on " in message, message
        assert "gssm-experiment1 --workdir=" in message and "another --workdir" in message
    finally:
        holder.send_signal(signal.SIGKILL)  # dies without releasing anything itself
        holder.wait()
    assert os.path.exists(os.path.join(workdir, locks.LOCK_FILE))  # the file stays; it is not the lock
    with locks.hold(workdir):  # the OS released the flock when the holder died
        with open(os.path.join(workdir, locks.LOCK_FILE)) as file:
            assert f'"pid": {os.getpid()}' in file.read()


def test_the_command_line_refuses_a_held_workdir_before_anything_runs(tmp_path):
    workdir = str(tmp_path / "run")
    holder = _holder(workdir)
    try:
        completed = subprocess.run([sys.executable, "-m", "gssm_jax.cli.train", "--config=base:size=tiny",
                                    f"--workdir={workdir}"], cwd=REPOSITORY, capture_output=True, text=True,
                                   timeout=120, env={**os.environ, "PYTHONPATH": PYTHONPATH})
    finally:
        holder.kill()
        holder.wait()
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert completed.stderr.startswith("error: ") and completed.stderr.count("\n") == 1, completed.stderr
    assert f"pid {holder.pid}" in completed.stderr
    assert os.listdir(workdir) == [locks.LOCK_FILE]  # nothing was written


def test_a_lock_is_per_directory_and_reentrant_in_one_process(tmp_path):
    sweep, run = str(tmp_path / "sweep"), str(tmp_path / "sweep" / "runs" / "a")
    with locks.hold(sweep), locks.hold(run), locks.hold(sweep):  # a run below the sweep; the sweep again
        assert os.path.exists(os.path.join(run, locks.LOCK_FILE))


def test_a_directory_the_lock_created_goes_again_when_nothing_was_written(tmp_path):
    workdir = tmp_path / "new" / "nested"
    with pytest.raises(RuntimeError), locks.hold(str(workdir)):
        raise RuntimeError("a check failed")
    assert not (tmp_path / "new").exists()
    with locks.hold(str(workdir)):
        (workdir / "result.json").write_text("{}")
    assert sorted(os.listdir(workdir)) == [locks.LOCK_FILE, "result.json"]


def test_a_file_as_workdir_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    for workdir in (tmp_path / "afile", tmp_path / "afile" / "below"):
        with pytest.raises(UserError, match="afile") as raised, locks.hold(str(workdir)):
            pass
        assert "\n" not in str(raised.value)
