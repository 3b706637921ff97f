"""What a console script's `--help` prints, from the texts that already say it (no second copy).

The script's module docstring (what it does, examples), its flags (their absl help strings), and its
config: the config module's docstring (sizes, `:arg` keys, examples) and a table of the `:arg` keys made
from the module's `ARG_DEFAULTS` and `ARG_CHOICES`, so the defaults shown are the ones the code uses.
Reading it imports the config module only (no JAX), so `--help` answers at once.
"""

from __future__ import annotations

import ast
import importlib
import math
import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from absl import flags

from gssm_jax import configs

HELP_FLAGS = ("-h", "--help", "-?", "--helpshort")
_KINDS_OF_VALUE = {str: "text", float: "a number", int: "an integer", bool: "true | false"}
_WIDTH = 118


def script_name(module: ModuleType) -> str:
    """The console script of an entry point module: `gssm_jax.cli.generate_data` -> `gssm-generate-data`."""
    name = module.__spec__.name if module.__spec__ else module.__name__
    return "gssm-" + name.rpartition(".")[2].replace("_", "-")


def wants_help(argv: Sequence[str]) -> bool:
    """Whether the command line asks for `--help` (absl's `--helpfull` is left to absl)."""
    return any(argument in HELP_FLAGS for argument in argv[1:])


def config_spec(argv: Sequence[str], default: str | None) -> str | None:
    """The `--config` value on the command line (`--config=X` or `--config X`), else `default`."""
    for index, argument in enumerate(argv):
        if argument.startswith("--config="):
            return argument.split("=", 1)[1]
        if argument == "--config" and index + 1 < len(argv):
            return argv[index + 1]
    return default


def _value_text(value: Any) -> str:
    return "unset" if isinstance(value, float) and math.isnan(value) else str(value)


def _tidy(docstring: str) -> str:
    """`docstring` without the runs of spaces a `\\` line continuation leaves inside a command."""
    return "\n".join(re.sub(r"(\S)  +(--)", r"\1 \2", line) if line.lstrip().startswith("gssm-") else line
                     for line in docstring.strip().splitlines())


def argument_table(defaults: Mapping[str, Any], choices: Mapping[str, Sequence[str]]) -> str:
    """One line per `:arg` key: its valid values (or type) and its default."""
    width = max(map(len, defaults), default=0)
    lines = []
    for key, default in defaults.items():
        valid = " | ".join(choices[key]) if key in choices else _KINDS_OF_VALUE.get(type(default), "a value")
        lines.append(f"  {key:<{width}}  {valid}  (default {_value_text(default)})")
    return "\n".join(lines)


def _config_module(spec: str) -> tuple[str, ModuleType | None, str]:
    """`(file, shipped module or None, docstring)` of a `--config` value; a user's file is read, never run."""
    file = configs.resolve(spec).partition(":")[0]
    name = os.path.basename(file).removesuffix(".py")
    if os.path.dirname(os.path.abspath(file)) == configs.DIRECTORY and name in configs.names():
        module = importlib.import_module(f"gssm_jax.configs.{name}")
        return file, module, module.__doc__ or ""
    with open(file) as source:
        return file, None, ast.get_docstring(ast.parse(source.read())) or "(no docstring)"


def config_help(spec: str) -> str:
    """The help on one config: where it is, its docstring, its `:arg` keys with valid values and defaults."""
    file, module, docstring = _config_module(spec)
    name = os.path.basename(file).removesuffix(".py")
    shipped = module is not None
    where = f"gssm_jax/configs/{name}.py" if shipped else "your file"
    lines = [f"The config --config={name if shipped else file} ({where}):",
             "", textwrap.indent(_tidy(docstring), "  "), ""]
    defaults = getattr(module, "ARG_DEFAULTS", None)
    if defaults:
        choices = getattr(module, "ARG_CHOICES", {"size": getattr(module, "SIZES", ())})
        lines += [f"Its :ARG keys (--config={name}:KEY=VALUE,KEY=VALUE):", argument_table(defaults, choices), ""]
    lines.append(f"Shipped configs: {', '.join(configs.names())}; add --config=NAME to --help to read one.")
    return "\n".join(lines)


def _flag_lines(module: ModuleType) -> list[str]:
    holders = [value for value in vars(module).values() if isinstance(value, flags.FlagHolder)]
    configured = any(holder.name == "config" for holder in holders)
    width = max([len(holder.name) for holder in holders] + [len("config.FIELD=VALUE") * configured]) + 2
    lines = []
    for holder in holders:
        flag = flags.FLAGS[holder.name]
        default = "" if flag.default in (None, "") or holder.name == "config" else f" (default {flag.default})"
        text = textwrap.fill(flag.help + default, _WIDTH, initial_indent=f"  --{holder.name:<{width}}",
                             subsequent_indent=" " * (width + 4))
        lines.append(text)
    if configured:
        lines.append(f"  --{'config.FIELD=VALUE':<{width}}overrides one field of the config, e.g. "
                     "--config.train.num_steps=100")
    lines.append(f"  --{'helpfull':<{width}}every flag, absl's own included")
    return lines


def help_text(module: ModuleType, argv: Sequence[str], config: str | None) -> str:
    """The full `--help` of the entry point `module` for this command line (`config`: its default config)."""
    docstring = (module.__doc__ or "").strip()
    lines = [f"{script_name(module)}: {_tidy(docstring)}", "", "Flags:", *_flag_lines(module)]
    spec = config_spec(argv, config)
    if spec:
        lines += ["", config_help(spec)]
    return "\n".join(lines) + "\n"
