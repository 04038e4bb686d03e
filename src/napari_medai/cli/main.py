"""Entry point of ``napari-medai``.

Top-level commands and the ``train`` / ``evaluate`` groups are built here; each tool module
``napari_medai.<tool>.cli`` adds its own sub-commands through ``register(groups)``. Refused input
exits 2 with one ``error:`` line on stderr and no traceback (unless ``--debug``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import CancelledError, MedaiError

TOOL_CLI_MODULES = (
    "napari_medai.enhance.cli",
    "napari_medai.steatosis.cli",
    "napari_medai.segmentation.cli",
    "napari_medai.retrieval.cli",
    "napari_medai.batch.cli",
)


@dataclass
class CommandGroups:
    """The sub-command groups each tool's ``register`` adds to (root, ``train``, ``evaluate``)."""
    root: Any
    train: Any
    evaluate: Any


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one ``error:`` line (exit 2), like refused input."""

    def error(self, message: str):  # type: ignore[override]
        raise MedaiError(f"{message} (see `{self.prog} --help`)")


def emit_json(document: Any) -> None:
    """Print exactly one JSON document on stdout (the contract for --json)."""
    json.dump(document, sys.stdout, indent=2, default=_json_default)
    sys.stdout.write("\n")


def _json_default(value: Any):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def cli_progress(enabled: bool = True):
    """A ``progress(i, n)`` callback drawing a tqdm bar on stderr when it is a terminal, else ``None``.

    The bar closes itself when ``i`` reaches ``n``; a new ``n`` (the next stage of a job) starts a new bar.
    """
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    state: dict = {}

    def progress(i: int, n: int) -> None:
        n = max(int(n), 1)
        bar = state.get("bar")
        if bar is None or bar.total != n or bar.disable:
            if bar is not None:
                bar.close()
            bar = state["bar"] = tqdm(total=n, file=sys.stderr, leave=True, dynamic_ncols=True)
        bar.update(max(0, min(int(i), n) - bar.n))
        if i >= n:
            bar.close()
            state.pop("bar", None)

    return progress


def build_parser() -> argparse.ArgumentParser:
    """The full ``napari-medai`` parser, with every installed tool's commands."""
    parser = _Parser(prog="napari-medai",
                     description="Medical-imaging AI tools (research use only, not a medical device).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    root = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    info = root.add_parser("info", help="versions, devices and models")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=run_info)

    models = root.add_parser("models", help="list registered models with their cards")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=run_models)

    demo = root.add_parser("demo", help="run every tool on the sample data and write results")
    demo.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    demo.add_argument("--gui", action="store_true", help="open napari with the widgets and samples instead")
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(func=run_demo)

    selftest = root.add_parser(
        "selftest", help="check this machine: every model and tool on the CPU and each GPU, with parity",
        description="Verify every model (SHA-256) and load it, run each tool on its packaged sample on the CPU and on "
                    "each accelerator present, compare the answers and time each step. Exits 1 naming what failed; "
                    "without a GPU it checks the CPU and says that no GPU was checked.")
    selftest.add_argument("--device", default="auto",
                          help="auto (the CPU and every GPU present, default), cpu, cuda, cuda:N or mps")
    selftest.add_argument("--json", action="store_true", help="print one JSON document and nothing else on stdout")
    selftest.set_defaults(func=run_selftest_command)

    train = root.add_parser("train", help="train a model").add_subparsers(dest="train_command", metavar="TASK",
                                                                          parser_class=_Parser)
    evaluate = root.add_parser("evaluate", help="evaluate results").add_subparsers(dest="evaluate_command",
                                                                                   metavar="TASK", parser_class=_Parser)
    groups = CommandGroups(root, train, evaluate)
    for module_name in TOOL_CLI_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that tool is not part of this build
            raise
        module.register(groups)
    return parser


def run_info(args) -> int:
    """``napari-medai info``: versions, devices and models."""
    from ..runtime.device import available_devices, resolve_device
    from ..runtime.provenance import package_versions
    from ..runtime.registry import list_models

    versions, _ = package_versions()
    choice = resolve_device("auto")
    document = {
        "versions": versions,
        "devices": available_devices(),
        "auto_device": {"device": choice.name, "reason": choice.reason, "cpu_fallback": choice.is_fallback},
        "models": [c.name for c in list_models()],
        "notice": "Research use only - not a medical device.",
    }
    if args.json:
        emit_json(document)
    else:
        for key, value in versions.items():
            print(f"{key:14s} {value}")
        print(f"devices        {', '.join(document['devices'])}")
        print(f"auto device    {choice.name} ({choice.reason})")
        print(f"models         {', '.join(document['models']) or 'none'}")
        print(document["notice"])
    return 0


def run_models(args) -> int:
    """``napari-medai models``: the registered model cards."""
    from ..runtime.registry import list_models

    cards = list_models()
    if args.json:
        emit_json([c.to_dict() for c in cards])
        return 0
    if not cards:
        print("no models registered")
    for card in cards:
        size = card.weights_path.stat().st_size / 1e6 if card.weights_path and card.weights_path.exists() else 0
        print(f"{card.name:24s} {card.task:14s} {card.architecture:28s} {size:6.2f} MB  sha256 {str(card.sha256)[:12]}")
    return 0


def run_demo(args) -> int:
    """``napari-medai demo``: every tool on the sample data (or the GUI with ``--gui``)."""
    from ..demo import open_gui, run_headless

    if args.gui:
        return open_gui()
    import contextlib

    # The per-tool progress lines go to stderr with --json: stdout holds one JSON document only.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        report = run_headless(args.out)
    if args.json:
        emit_json(report)
    return 0 if not report.get("failed") else 1


def run_selftest_command(args) -> int:
    """``napari-medai selftest``: models, tools and parity on this machine; exit 1 naming what failed."""
    import contextlib

    from ..runtime.selftest import run_selftest

    # A tool that prints (an out-of-memory note) must not break the one-JSON-document contract.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        report = run_selftest(args.device, progress=cli_progress())
    if args.json:
        emit_json(report.to_dict())
    else:
        print(report.format_table())
    if not report.ok:
        print(f"error: selftest failed: {'; '.join(report.failures)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point; returns the exit code (2 for refused input, 130 when cancelled, 141 when the
    reader of stdout went away, as a shell reports SIGPIPE)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        return int(args.func(args) or 0)
    except CancelledError:
        print("error: cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("error: interrupted; no output was written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed by the reader (`... --json | head`): not an error of ours
        import os

        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except (OSError, ValueError):  # stdout is not a real file (captured)
            pass
        return 141
    except MedaiError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: still one line, with a pointer to --debug
        if debug:
            raise
        print(f"error: internal error {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(rerun with --debug and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
