"""The anchor: composable-llm's own PyTorch transformer trained on this machine, timed in the same run as ours.

  python -m benchmarks.anchor --anchor-dir=/tmp/anchor_head [--anchor-python=/tmp/venv_anchor/bin/python]
  python benchmarks/anchor.py --anchor-dir=/tmp/anchor_head --cell=s256_e64 --compile=on   # one cell: JSON

This file holds no code of composable-llm: it imports its modules from an extracted tree, given by
`--anchor-dir` or `$ANCHOR_DIR` (e.g. `git -C <its git dir> archive HEAD | tar -x -C /tmp/anchor_head`).
It needs only torch (the `bench` extra) and the standard library, not JAX: `benchmarks.train_step` runs each
cell in its own subprocess under the interpreter that has torch (`--anchor-python`, `$ANCHOR_PYTHON`, or
this one when torch imports), so peak RSS and torch.compile's caches are per cell.

What is timed is one optimizer step of composable-llm's training loop (src/apps/gssm/train_onfly.py): the
model on batch[:, :-1], cross-entropy against batch[:, 1:], backward, its AdamW step (src/nanollama/optim.py,
fused=False as it requires on CPU, lr 1e-3, weight decay 0, constant schedule), scheduler step, zero_grad;
its `Transformer` (src/nanollama/model/transfomer.py), torch.compile on the model when `--compile=on` (its
default). Random tokens (batch, T + 1), so a step sees batch * T tokens; float32; median of the timed steps.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time

# The shapes of benchmarks.train_step: name -> (T, width); every one with batch 16, 4 layers, 4 heads and
# composable-llm's 32-token vocabulary.
SHAPES = {"s256_e64": (256, 64), "s256_e128": (256, 128), "s2048_e64": (2048, 64)}
BATCH, DEPTH, HEADS, VOCAB = 16, 4, 4, 32


def run_cell(anchor_dir: str, shape: str, compiled: bool, threads: int, steps: int, warmup: int) -> dict:
    """Times one cell in this process (torch imported here); its row."""
    sys.path.insert(0, os.path.join(anchor_dir, "src"))
    import torch  # noqa: PLC0415 (only the anchor's interpreter has torch)
    import torch.nn.functional as functional  # noqa: PLC0415
    from nanollama.model import Transformer, TransformerConfig  # noqa: PLC0415
    from nanollama.model.transfomer import TransformerBlockConfig  # noqa: PLC0415
    from nanollama.optim import OptimizerConfig, init_optimizer, init_scheduler  # noqa: PLC0415

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    length, width = SHAPES[shape]
    config = TransformerConfig(vocab_size=VOCAB, emb_dim=width, nb_layers=DEPTH,
                               block=TransformerBlockConfig(seq_len=length, nb_heads=HEADS))
    config.__check_init__()
    model = Transformer(config)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    optimizer_config = OptimizerConfig(steps=10_000, lr=1e-3, weight_decay=0.0, fused=False, scheduler="constant")
    optimizer = init_optimizer(model, optimizer_config)
    scheduler = init_scheduler(optimizer, optimizer_config)
    if compiled:
        model = torch.compile(model)
    model.train()
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, VOCAB, (BATCH, length + 1), generator=generator) for _ in range(4)]

    def step(index: int) -> float:
        batch = batches[index % len(batches)]
        logits = model(batch[:, :-1])
        loss = functional.cross_entropy(logits.reshape(-1, VOCAB), batch[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        return loss.item()

    start = time.perf_counter()
    step(0)
    first_step_s = time.perf_counter() - start  # torch.compile's compilation included
    for index in range(1, warmup):
        step(index)
    times = []
    for index in range(steps):
        start = time.perf_counter()
        step(index)
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    return {"shape": shape, "compile": compiled, "threads": threads, "parameters": parameters,
            "tokens_per_s": BATCH * length / step_s, "step_s": step_s, "first_step_s": first_step_s,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10, "torch": torch.__version__}


def default_python() -> str:
    """`$ANCHOR_PYTHON`, else this interpreter if torch imports here, else "" (the anchor is skipped)."""
    if os.environ.get("ANCHOR_PYTHON"):
        return os.environ["ANCHOR_PYTHON"]
    return sys.executable if importlib.util.find_spec("torch") else ""


def unavailable(python: str, anchor_dir: str) -> str | None:
    """Why the anchor cannot run (one line), or None when it can."""
    if not python:
        return "torch is not importable here (pip install -e '.[bench]') and no --anchor-python was given"
    if not anchor_dir or not os.path.isfile(os.path.join(anchor_dir, "src", "nanollama", "model", "transfomer.py")):
        return (f"no composable-llm tree at --anchor-dir={anchor_dir or '(unset)'} (or $ANCHOR_DIR): extract its "
                "HEAD there")
    probe = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True, check=False)
    if probe.returncode:
        return f"{python} cannot import torch; pass an interpreter that can with --anchor-python"
    return None


def measure(python: str, anchor_dir: str, shape: str, compiled: bool, threads: int, steps: int, warmup: int,
            timeout: float = 1800) -> dict:
    """Times one cell in a subprocess of `python`; its row, or `{"shape", "compile", "error"}`."""
    command = [python, os.path.abspath(__file__), f"--anchor-dir={anchor_dir}", f"--cell={shape}",
               f"--compile={'on' if compiled else 'off'}", f"--threads={threads}", f"--steps={steps}",
               f"--warmup={warmup}"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"shape": shape, "compile": compiled, "error": f"timed out after {timeout:g} s"}
    if result.returncode:
        lines = result.stderr.strip().splitlines() or ["no output"]
        return {"shape": shape, "compile": compiled, "error": lines[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def arguments(parser: argparse.ArgumentParser) -> None:
    """The anchor's flags, shared with benchmarks.train_step."""
    parser.add_argument("--anchor-dir", default=os.environ.get("ANCHOR_DIR", ""),
                        help="extracted composable-llm tree (default $ANCHOR_DIR)")
    parser.add_argument("--anchor-python", default=None,
                        help="interpreter with torch for the anchor's cells (default $ANCHOR_PYTHON, else this one "
                             "if torch imports, else the anchor is skipped)")
    parser.add_argument("--anchor-compile", choices=("on", "off"), default="on",
                        help="torch.compile the anchor's model (composable-llm's default: on)")
    parser.add_argument("--anchor-threads", type=int, default=os.cpu_count(), help="torch threads (default: all)")
    parser.add_argument("--anchor-steps", type=int, default=5, help="timed anchor steps per cell")
    parser.add_argument("--anchor-warmup", type=int, default=2, help="untimed anchor steps first (compile included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments(parser)
    parser.add_argument("--shapes", default=",".join(SHAPES), help="shapes to time")
    parser.add_argument("--cell", default="", help="internal: time this one shape in this process, print JSON")
    parser.add_argument("--compile", choices=("on", "off"), default="on", help="internal, with --cell")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="internal, with --cell")
    parser.add_argument("--steps", type=int, default=5, help="internal, with --cell")
    parser.add_argument("--warmup", type=int, default=2, help="internal, with --cell")
    options = parser.parse_args()
    if options.cell:
        # Run as a script, this file's folder heads sys.path; its modules must not shadow what torch imports.
        if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
            sys.path.pop(0)
        print(json.dumps(run_cell(options.anchor_dir, options.cell, options.compile == "on", options.threads,
                                  options.steps, options.warmup)))
        return
    python = default_python() if options.anchor_python is None else options.anchor_python
    reason = unavailable(python, options.anchor_dir)
    if reason:
        raise SystemExit(f"the anchor cannot run: {reason}")
    print("| shape | torch | compile | threads | tokens/s | first step s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for shape in options.shapes.split(","):
        row = measure(python, options.anchor_dir, shape, options.anchor_compile == "on", options.anchor_threads,
                      options.anchor_steps, options.anchor_warmup)
        if "error" in row:
            print(f"| {shape} | | {options.anchor_compile} | | error: {row['error'][:100]} | | |", flush=True)
            continue
        print(f"| {shape} | {row['torch']} | {options.anchor_compile} | {row['threads']} | "
              f"{row['tokens_per_s']:,.0f} | {row['first_step_s']:.1f} | {row['peak_rss_mib']:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
