"""The atomic writer: concurrent writers of one file never trip over each other's temporary file."""

import os
import threading

from gssm_jax import files


def test_writers_of_the_same_file_at_once_all_succeed_and_leave_one_whole_file(tmp_path):
    path = os.path.join(tmp_path, "shared.json")
    errors, contents = [], [f"writer {k} ".encode() * 4096 for k in range(8)]

    def write(data: bytes) -> None:
        try:
            for _ in range(25):
                files.write_bytes(path, data)
        except OSError as error:  # with one temporary name for all, a rename finds it already moved away
            errors.append(error)

    threads = [threading.Thread(target=write, args=(data,)) for data in contents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert open(path, "rb").read() in contents
    assert os.listdir(tmp_path) == ["shared.json"]  # no temporary left behind
