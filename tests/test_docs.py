"""Every command the documentation shows is run, in a cheap form, from a directory outside the checkout.

Commands are extracted from the README and docs/*.md (``bash`` blocks and inline `gssm-...`, `python -m ...`,
`make ...`) and from the docstrings of every shipped config (`gssm_jax/configs/*.py`) and entry point
(`gssm_jax/cli/*.py`). `CHEAP` maps each documented command to the command that is run instead: the same
entry point, config and flags at `size=tiny` (or with overrides that make it take seconds), or a reason
why it is not run here. A documented command without an entry fails the test, and so does an entry whose
command is no longer documented. The `gssm-*` console scripts are run as `python -m <module>` of their
entry point in setup.cfg, so the test needs no installed scripts, only the checkout on PYTHONPATH.
"""

import ast
import configparser
import os
import re
import shlex
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHONPATH = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))  # the checkout first
# The pages whose commands are run: the README first, then docs/ (in name order).
DOCUMENTS = ("README.md", *sorted(os.path.join("docs", name) for name in os.listdir(os.path.join(REPO, "docs"))
                                  if name.endswith(".md")))
# A command, after optional environment assignments (`VAR=value ... gssm-train ...`).
COMMAND = re.compile(r"^([A-Z_]+=\S+ )*(gssm-[a-z0-9-]+|python -m |make )")
ASSIGNMENT = re.compile(r"^[A-Z_]+=")

# The recurring overrides that make a training run take seconds.
TINY_TRAIN = ("--config.train.num_steps=4 --config.train.log_every=2 --config.train.eval_every=4 "
              "--config.train.checkpoint_every=4 --config.optimizer.warmup_steps=1 --config.data.batch_size=8 "
              "--config.eval.num_sequences=8 --config.model.width=16 --config.model.depth=1 --config.model.heads=2")


def skip(reason: str) -> str:
    return f"SKIP: {reason}"


# Documented command (whitespace normalised) -> the cheap command run here, in this order, in one scratch
# directory (later commands may read what earlier ones wrote), or `skip(reason)`.
CHEAP = {
    # README: the quick start, run as it is (the docs test is where it is checked end to end), and the two
    # commands and the other make targets.
    "gssm-experiment1 --config=experiment1:size=tiny --workdir=runs/quickstart":
        "gssm-experiment1 --config=experiment1:size=tiny --workdir=runs/quickstart",
    "gssm-experiment1 --config=experiment1:size=tiny --workdir=runs/exp1_tiny":
        "gssm-experiment1 --config=experiment1:size=tiny --workdir=runs/quickstart",
    "gssm-experiment1 --help": "gssm-experiment1 --help",
    "gssm-train --config=base:size=tiny --workdir=runs/train_tiny":
        "gssm-train --config=base:size=tiny --workdir=runs/train",
    "make run": skip("= gssm-experiment1 --config=experiment1:size=cpu, run below at size=tiny"),
    "make test": skip("the test suite itself"),
    "make test-slow": skip("the slow tests, run by `make test-slow`"),
    "make benchmarks": skip("each benchmark is run below in its quick form"),
    # Help.
    "gssm-train --help": "gssm-train --help",
    "gssm-train --config=data --help": "gssm-train --config=data --help",
    # Training.
    "gssm-train --config=base --workdir=runs/train": "gssm-train --config=base:size=tiny --workdir=runs/train",
    "gssm-train --config=base": "gssm-train --config=base:size=tiny --workdir=runs/train",
    "gssm-train --config=base:size=paper --workdir=runs/paper":
        "gssm-train --config=base:size=tiny --workdir=runs/train",
    "gssm-train --config=base:alpha_x=0.05,alpha_z=0.001 --config.train.num_steps=2000 --config.model.width=128 "
    "--workdir=runs/small_alpha_z":
        "gssm-train --config=base:size=tiny,alpha_x=0.05,alpha_z=0.001 --config.train.num_steps=20 "
        "--config.model.width=16 --workdir=runs/small_alpha_z",
    "gssm-train --config=base:alpha_x=0.05,alpha_z=0.001 --config.train.num_steps=2000 --workdir=runs/small_alpha_z":
        "gssm-train --config=base:size=tiny,alpha_x=0.05,alpha_z=0.001 --config.train.num_steps=20 "
        "--config.model.width=16 --workdir=runs/small_alpha_z",
    "gssm-train --config=base --config.model.kind=mamba --workdir=runs/mamba":
        "gssm-train --config=base:size=tiny --config.model.kind=mamba --workdir=runs/mamba",
    "GLIBC_TUNABLES=glibc.malloc.hugetlb=1 XLA_FLAGS=--xla_force_host_platform_device_count=2 gssm-train "
    "--config=base --workdir=runs/train_fast":
        "GLIBC_TUNABLES=glibc.malloc.hugetlb=1 XLA_FLAGS=--xla_force_host_platform_device_count=2 gssm-train "
        "--config=base:size=tiny --workdir=runs/train_fast",
    "gssm-train --config=base --config.train.num_steps=200 --workdir=runs/train_200":
        "gssm-train --config=base:size=tiny --config.train.num_steps=10 --workdir=runs/train_200",
    # Finite data (gssm-train from file reads the dataset generated first): the cpu graph with fewer sequences,
    # then the tiny recipe as documented (data:size=tiny is the dataset base:size=tiny trains on).
    "gssm-generate-data --config=data --workdir=data/four_by_four_cpu":
        "gssm-generate-data --config=data --config.num_train=128 --config.num_test=16 --workdir=data/four_by_four_cpu",
    "gssm-train --config=base --config.data.source=file --config.data.path=data/four_by_four_cpu "
    "--config.data.num_sequences=300 --workdir=runs/n300":
        "gssm-train --config=base --config.data.source=file --config.data.path=data/four_by_four_cpu "
        f"--config.data.num_sequences=30 {TINY_TRAIN} --workdir=runs/n300",
    "gssm-generate-data --config=data:size=tiny --workdir=data/tiny":
        "gssm-generate-data --config=data:size=tiny --workdir=data/tiny",
    "gssm-train --config=base:size=tiny --config.data.source=file --config.data.path=data/tiny "
    "--workdir=runs/tiny_file":
        "gssm-train --config=base:size=tiny --config.data.source=file --config.data.path=data/tiny "
        "--workdir=runs/tiny_file",
    "gssm-generate-data --config=data:size=paper --workdir=data/four_by_four":
        "gssm-generate-data --config=data:size=tiny --workdir=data/four_by_four",
    "gssm-generate-data --config=data:family=chain,alpha_x=0.05,alpha_z=0.001 --config.num_train=10000 "
    "--workdir=data/chain_small_alpha_z":
        "gssm-generate-data --config=data:size=tiny,family=chain,alpha_x=0.05,alpha_z=0.001 --config.num_train=40 "
        "--workdir=data/chain_small_alpha_z",
    "gssm-generate-data --config=data:family=chain,alpha_x=0.05,alpha_z=0.001 --workdir=data/chain":
        "gssm-generate-data --config=data:size=tiny,family=chain,alpha_x=0.05,alpha_z=0.001 --config.num_train=40 "
        "--workdir=data/chain_small_alpha_z",
    "gssm-data-sweep --config=data_sweep --workdir=runs/data_sweep":
        "gssm-data-sweep --config=data_sweep:size=tiny --workdir=runs/data_sweep",
    "gssm-data-sweep --config=data_sweep:size=tiny --workdir=runs/data_sweep_tiny":
        "gssm-data-sweep --config=data_sweep:size=tiny --workdir=runs/data_sweep",
    "gssm-data-sweep --config=data_sweep:size=paper --workdir=runs/data_sweep_paper":
        "gssm-data-sweep --config=data_sweep:size=tiny --workdir=runs/data_sweep",
    # Calibration (model_results reads the training run above).
    "gssm-calibrate --config=calibrate:graph=four_by_four --workdir=runs/calibrate":
        "gssm-calibrate --config=calibrate:graph=four_by_four,size=tiny --workdir=runs/calibrate",
    "gssm-calibrate --config=calibrate:graph=four_by_four,size=tiny --workdir=runs/calibrate_tiny":
        "gssm-calibrate --config=calibrate:graph=four_by_four,size=tiny --workdir=runs/calibrate",
    "gssm-calibrate --config=calibrate:graph=eight_by_four,measure=entropy --workdir=runs/cal8_entropy":
        "gssm-calibrate --config=calibrate:graph=eight_by_four,measure=entropy,size=tiny --workdir=runs/cal8_entropy",
    "gssm-calibrate --config=calibrate:graph=eight_by_four,measure=gzip --workdir=runs/cal8_gzip":
        "gssm-calibrate --config=calibrate:graph=eight_by_four,measure=gzip,size=tiny --workdir=runs/cal8_gzip",
    "gssm-calibrate --config=calibrate:graph=four_by_four,size=paper "
    "--config.calibration.model_results=reference=runs/ref/result.json --workdir=runs/cal_4x4":
        "gssm-calibrate --config=calibrate:graph=four_by_four,size=tiny "
        "--config.calibration.model_results=reference=runs/train/result.json --workdir=runs/calibrate",
    "gssm-calibrate --config=experiment1:graph=four_by_four --workdir=runs/calib":
        "gssm-calibrate --config=experiment1:graph=four_by_four,size=tiny --workdir=runs/experiment1",
    "gssm-calibrate --config=experiment1:graph=four_by_four --workdir=runs/experiment1":
        "gssm-calibrate --config=experiment1:graph=four_by_four,size=tiny --workdir=runs/experiment1",
    # Experiment 1 (reuses the calibration cached just above in runs/experiment1).
    "gssm-experiment1 --config=experiment1:size=cpu --workdir=runs/experiment1":
        "gssm-experiment1 --config=experiment1:size=tiny,graph=four_by_four --workdir=runs/experiment1",
    "gssm-experiment1 --report_only --workdir=runs/experiment1":
        "gssm-experiment1 --report_only --workdir=runs/experiment1",
    "gssm-experiment1 --config=experiment1:size=gpu --workdir=runs/exp1_gpu":
        "gssm-experiment1 --config=experiment1:size=tiny,graph=four_by_four --workdir=runs/experiment1",
    "gssm-experiment1 --config=experiment1:size=paper,match=gzip --workdir=runs/exp1_gzip":
        "gssm-experiment1 --config=experiment1:size=tiny,match=gzip,graph=chain,side=small_alpha_x "
        "--workdir=runs/exp1_gzip",
    "gssm-experiment1 --config=experiment1:size=medium --workdir=runs/exp1_medium":
        "gssm-experiment1 --config=experiment1:size=tiny,graph=four_by_four --workdir=runs/experiment1",
    "gssm-experiment1 --config=experiment1:size=cpu,learners=all":
        skip("the learners=all,match=both command below runs this entry point and learner list at size=tiny"),
    # Two learners and both measures end to end: shared runs are linked, n-gram floors computed once.
    "gssm-experiment1 --config=experiment1:size=cpu,learners=all,match=both --workdir=runs/exp1_all":
        "gssm-experiment1 --config=experiment1:size=tiny,graph=chain,learners=transformer+mingru,match=both "
        "--workdir=runs/exp1_all",
    "gssm-experiment1 --config=experiment1:graph=chain --workdir=runs/exp1_chain":
        "gssm-experiment1 --config=experiment1:size=tiny,graph=chain --workdir=runs/exp1_chain",
    "gssm-experiment1 --config=experiment1:size=paper --workdir=/shared/exp1 --launcher=slurm "
    "--slurm_partition=gpu --slurm_time_minutes=240 --slurm_gpus_per_node=8":
        skip("needs a Slurm cluster; the submitit path is tested in tests/experiment1/test_sweep.py"),
    "gssm-train --config=experiment1:graph=chain,side=small_alpha_z,free_alpha=0.05 "
    "--workdir=runs/chain_small_alpha_z":
        "gssm-train --config=experiment1:graph=chain,side=small_alpha_z,free_alpha=0.05,size=tiny "
        "--workdir=runs/chain_small_alpha_z",  # size=tiny's own 20 steps, with their cool-down branch
    # Composable-llm's difficulty table.
    "gssm-difficulty --workdir=runs/difficulty":
        "gssm-difficulty --graphs=four_by_four --seeds=2 --batch_size=4 --entropy_sequences=1 --skip_reference "
        "--workdir=runs/difficulty",
    "gssm-difficulty --graphs=four_by_four --seeds=3 --workdir=runs/difficulty_4x4":
        "gssm-difficulty --graphs=four_by_four --seeds=2 --batch_size=4 --entropy_sequences=1 --skip_reference "
        "--workdir=runs/difficulty",
    # Benchmarks (from a checkout).
    "python -m benchmarks.sampler": "python -m benchmarks.sampler --quick --batches 8",
    "python -m benchmarks.train_step --hugepages --devices=2":
        "python -m benchmarks.train_step --hugepages --devices=2 --shapes=s256_e64 --steps=1 --kinds=mingru",
    "python -m benchmarks.accelerator": "python -m benchmarks.accelerator --quick",
    "python -m benchmarks.sweep": skip("its small form runs in tests/test_docs_benchmarks.py (worker processes)"),
    "python -m benchmarks.forward": skip("minutes even with --quick (the 8x4 reference pass); run by make benchmarks"),
}


def _join_continuations(lines: list[str]) -> list[str]:
    joined, current = [], ""
    for line in lines:
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        joined.append(current)
        current = ""
    return joined


def _normalise(command: str) -> str:
    command = command.split("  #", 1)[0]  # a trailing comment
    return " ".join(command.split())


def _commands_in(lines: list[str]) -> list[str]:
    return [_normalise(line) for line in _join_continuations([line.strip() for line in lines])
            if COMMAND.match(line.strip())]


def documented_commands() -> dict[str, str]:
    """{command: where it is documented} from the README and the configs' and entry points' docstrings."""
    found = {}
    for page in DOCUMENTS:
        with open(os.path.join(REPO, page)) as file:
            text = file.read()
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            for command in _commands_in(block.splitlines()):
                found.setdefault(command, page)
        for inline in re.findall(r"`([^`\n]+)`", text):
            if COMMAND.match(inline) and " " in inline:  # a bare `gssm-train` in prose names the command
                found.setdefault(_normalise(inline), page)
    for folder in ("configs", "cli"):
        directory = os.path.join(REPO, "gssm_jax", folder)
        for name in sorted(os.listdir(directory)):
            if name.endswith(".py"):
                with open(os.path.join(directory, name)) as file:
                    docstring = ast.get_docstring(ast.parse(file.read())) or ""
                for command in _commands_in(docstring.splitlines()):
                    found.setdefault(command, f"gssm_jax/{folder}/{name}")
    return found


def _entry_points() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(os.path.join(REPO, "setup.cfg"))
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return {name.strip(): target.strip().split(":")[0] for name, target in (line.split("=") for line in lines)}


def test_every_documented_command_has_a_cheap_form():
    documented = documented_commands()
    missing = {command: where for command, where in documented.items() if command not in CHEAP}
    assert not missing, f"documented commands without an entry in tests/test_docs.py CHEAP: {missing}"
    stale = [command for command in CHEAP if command not in documented]
    assert not stale, f"entries of CHEAP no longer documented anywhere: {stale}"


def test_every_console_script_exists_and_is_documented():
    scripts = _entry_points()
    assert set(scripts) == {"gssm-train", "gssm-experiment1", "gssm-calibrate", "gssm-generate-data",
                            "gssm-data-sweep", "gssm-difficulty"}
    documented = " ".join(documented_commands())
    for script, module in scripts.items():
        assert os.path.exists(os.path.join(REPO, *module.split(".")) + ".py"), module
        assert script in documented, f"{script} appears in no documented command"


def _argv(command: str, scripts: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The argv that runs `command`, and the environment assignments in front of it."""
    words = shlex.split(command)
    assignments = {}
    while ASSIGNMENT.match(words[0]):
        name, value = words.pop(0).split("=", 1)
        assignments[name] = value
    return _program(words, scripts), assignments


def _program(words: list[str], scripts: dict[str, str]) -> list[str]:
    if words[0] in scripts:
        return [sys.executable, "-m", scripts[words[0]], *words[1:]]
    assert words[:2] == ["python", "-m"], words
    return [sys.executable, *words[1:]]


# absl's record prefix, e.g. "I1205 00:11:33.619703 139981993937792 launchers.py:60] "
ABSL_PREFIX = re.compile(r"[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ")


def _is_benchmark(command: str) -> bool:
    return command.startswith("python -m benchmarks.")


def run_cheap_forms(tmp_path, benchmarks: bool) -> None:
    """Runs the cheap form of every documented command of one group, in documentation order.

    Two independent groups, so that pytest-xdist runs them on two workers (tests/test_docs_benchmarks.py runs
    the second): the benchmarks (they write nothing other commands read) and everything else.
    """
    scripts = _entry_points()
    environment = {**os.environ, "PYTHONPATH": PYTHONPATH, "JAX_PLATFORMS": "cpu"}
    done = set()
    for documented, cheap in CHEAP.items():
        if cheap.startswith("SKIP: ") or cheap in done or _is_benchmark(cheap) != benchmarks:
            continue
        done.add(cheap)
        start = time.perf_counter()
        argv, assignments = _argv(cheap, scripts)
        completed = subprocess.run(argv, cwd=tmp_path, env={**environment, **assignments}, capture_output=True,
                                   text=True, timeout=600)
        assert completed.returncode == 0, (f"{cheap!r} (for the documented {documented!r}) failed:\n"
                                           f"{completed.stderr[-3000:]}")
        prefixed = [line for line in completed.stderr.splitlines() if ABSL_PREFIX.match(line)]
        assert not prefixed, f"{cheap!r}: log lines carry absl's prefix below --verbosity=1: {prefixed[:3]}"
        print(f"{time.perf_counter() - start:5.1f} s  {cheap}")  # shown with pytest -s


def test_documented_commands_run_in_their_cheap_form(tmp_path):
    run_cheap_forms(tmp_path, benchmarks=False)


@pytest.mark.parametrize("page", [page for page in DOCUMENTS if "```python" in open(os.path.join(REPO, page)).read()])
def test_python_snippets_run(page, tmp_path):
    """A page's ```python blocks, in order, as one script (smaller batches: the same calls, seconds)."""
    with open(os.path.join(REPO, page)) as file:
        blocks = re.findall(r"```python\n(.*?)```", file.read(), flags=re.S)
    script = "\n".join(blocks).replace("batch_size=1024, length=2048", "batch_size=16, length=64")
    script += "\nassert losses.shape == tokens.shape and float(rate.nats_per_token) > 0 and log_p.shape == (16,)\n"
    completed = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": PYTHONPATH}, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]


def test_the_readme_is_short_and_links_inside_the_repository():
    with open(os.path.join(REPO, "README.md")) as file:
        readme = file.read()
    assert len(readme.splitlines()) <= 150, "the README is the front page: move detail to docs/"
    assert "```python" in readme and "## The answer" in readme and "composable-llm" in readme
    assert not re.search(r"\b[0-9a-f]{7,40}\b", readme), "no commit hashes in the README (docs/history.md)"
    for page in DOCUMENTS:
        with open(os.path.join(REPO, page)) as file:
            for link in re.findall(r"\]\(([^)#]+)\)", file.read()):
                if not link.startswith("http"):
                    target = os.path.normpath(os.path.join(REPO, os.path.dirname(page), link))
                    assert target.startswith(REPO + os.sep) and os.path.exists(target), (page, link)


def sizes_markdown() -> str:
    """docs/experiment1.md's table of sizes, from `BUDGETS` and `MODELS` of the experiment1 config."""
    from gssm_jax.configs import experiment1

    lines = ["| size | graphs x sides x seeds | T | transformer (depth x width) | steps x batch | peak learning rates "
             "(tuning seeds) | calibration batch |", "|---" * 7 + "|"]
    for size in experiment1.SIZES:
        budget, models = experiment1.BUDGETS[size], experiment1.MODELS[size]
        length = str(budget.length) if budget.length else "composable-llm's (2048 / 4096)"
        shapes = ", ".join(f"{name} {shape['depth']} x {shape['width']}" for name, shape in models.items())
        rates = ", ".join(f"{rate:g}" for rate in budget.learning_rates)
        lines.append(f"| `{size}` | 3 x 2 x {budget.seeds} | {length} | {shapes} | {budget.num_steps} x "
                     f"{budget.batch_size} | {rates} ({budget.tuning_seeds}) | {budget.calibration_batch} |")
    return "\n".join(lines)


def test_the_sizes_table_is_the_config():
    with open(os.path.join(REPO, "docs", "experiment1.md")) as file:
        page = file.read()
    table = sizes_markdown()
    assert table in page, f"regenerate the table of sizes in docs/experiment1.md:\n{table}"
