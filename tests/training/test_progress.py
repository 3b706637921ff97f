"""Quiet, informative progress: one bar with tokens/s and an ETA, no config dump, and the compilation cache."""

import json
import os
import subprocess
import sys

from gssm_jax import compilation_cache
from gssm_jax.configs.base import get_config
from gssm_jax.training import loop, progress, run_directory

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Trains a tiny run in argv[1] and prints how many programs JAX compiled and how many it found in its
# persistent cache ($GSSM_JAX_CACHE_DIR).
COUNTED_RUN = """
import json, sys
import jax
from gssm_jax.configs.base import get_config
from gssm_jax.training import loop

events = {}
jax.monitoring.register_event_listener(lambda name, **kwargs: events.update({name: events.get(name, 0) + 1}))
config = get_config("size=tiny")
config.train.num_steps = 8
loop.train_and_evaluate(config, sys.argv[1])
print(json.dumps({"hits": events.get("/jax/compilation_cache/cache_hits", 0),
                  "misses": events.get("/jax/compilation_cache/cache_misses", 0)}))
"""


def _counted_run(workdir: str, cache: str) -> dict:
    environment = {**os.environ, compilation_cache.ENVIRONMENT_VARIABLE: cache}
    environment.pop("JAX_COMPILATION_CACHE_DIR", None)
    completed = subprocess.run([sys.executable, "-c", COUNTED_RUN, workdir], cwd=REPOSITORY, env=environment,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_a_second_process_finds_the_compiled_programs(tmp_path):
    cache = str(tmp_path / "cache")
    first = _counted_run(str(tmp_path / "first"), cache)
    assert first["hits"] == 0 and first["misses"] > 0
    programs = sorted(name for name in os.listdir(cache) if name.startswith("jit_run_steps"))  # the step program
    assert programs
    second = _counted_run(str(tmp_path / "second"), cache)
    # The second process compiled no step program: it found the first one's (and others: hits > its own).
    assert second["hits"] >= len(programs)
    assert sorted(name for name in os.listdir(cache) if name.startswith("jit_run_steps")) == programs


def test_one_progress_bar_and_no_config_dump(tmp_path, capfd):
    config = get_config("size=tiny")
    config.train.update(num_steps=8, log_every=4, eval_every=8, checkpoint_every=8)
    loop.train_and_evaluate(config, str(tmp_path))
    err = capfd.readouterr().err
    assert f"train {tmp_path}" in err and "tokens/s" in err and "ETA" in err and "step 8/8" in err
    assert "num_steps" not in err and "alpha" not in err  # the config goes to config.json only
    assert run_directory.read_run(str(tmp_path)).config["train"]["num_steps"] == 8


def test_durations_read_at_a_glance():
    assert [progress.duration(seconds) for seconds in (5, 65, 3725, -1)] == ["5s", "1m05s", "1h02m", "0s"]
