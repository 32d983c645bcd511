"""Command line: `probe-layers` (= `safety-probe probe`) and `safety-probe locate | data | eval | caption | tga | defend |
figures`.

One module per command; each command's options are the fields of a dataclass config whose docstrings are the
--help text, and the resolved config is saved with the results (run.json, compare.json), so config, docs and
CLI are one object. This package is the only part of the pipeline that knows the organisms: their presets (default
pairs, refusal phrase, caption prompt, TGA data and recipe, CLIP, filter vocabulary) live in
:mod:`safety_probe.cli.presets`, are applied by the commands and recorded in the outputs. A command's module is imported only when that command runs, so `--help` stays fast.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from importlib import import_module
from typing import NoReturn

from simple_parsing import ArgumentParser

from safety_probe.core.errors import InputError

#: command -> (module of safety_probe.cli, its config dataclass, the function that runs it)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "probe": ("probe", "ProbeConfig", "probe_layers"),
    "locate": ("locate", "LocateConfig", "run_locate"),
    "data": ("data", "DataConfig", "make_data"),
    "eval": ("evaluate", "EvalConfig", "run_eval"),
    "caption": ("caption", "CaptionConfig", "run_caption"),
    "tga": ("tga", "TGACommand", "run_tga_command"),
    "defend": ("defend", "DefendConfig", "run_defend"),
    "figures": ("figures", "FiguresConfig", "redraw"),
}


def command(name: str) -> tuple[type, Callable]:
    """The config dataclass and run function of command ``name``."""
    module, config, run = COMMANDS[name]
    mod = import_module(f"safety_probe.cli.{module}")
    return getattr(mod, config), getattr(mod, run)


class _Parser(ArgumentParser):
    """simple-parsing's parser, whose errors (an unknown option, a value of the wrong type) are one-line InputErrors."""

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{message} (see {self.prog} --help)")

    def format_help(self) -> str:
        for action in self._actions:  # the usage line shows an option's first spelling: the dashed one
            action.option_strings.sort(key=lambda option: "_" in option)
            if action.help:  # a docstring's "95% interval" is text, not a %-placeholder of argparse
                action.help = re.sub(r"(?<!%)%(?![(%])", "%%", action.help)
        return super().format_help()


def _parse(config_type: type, prog: str, argv: list[str]):
    # a command module may start from a preset config (e.g. `tga --model organism`); options given still win
    initial = getattr(import_module(config_type.__module__), "initial_config", None)
    parser = _Parser(prog=prog, description=config_type.__doc__, add_option_string_dash_variants=True)
    parser.add_arguments(config_type, dest="cfg", default=initial(argv) if initial else None)
    return parser.parse_args(argv).cfg


def _guard(fn: Callable[[], object]) -> int:
    """Run a command: bad input or a failed write ends with one line on stderr and exit code 2, Ctrl-C with one line
    and exit code 130 (every output so far is whole, and a rerun resumes)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars say what runs; errors stay one line
    try:
        fn()
    except InputError as e:
        _say("error: " + " ".join(str(e).splitlines()))
        return 2
    except OSError as e:  # the file system refused where no check of ours looked (permissions, a vanished file)
        _say(f"error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
        return 2
    except KeyboardInterrupt:
        _say("interrupted: every output written so far is whole; rerun the same command to resume")
        return 130
    return 0


def _say(line: str) -> None:
    """Print ``line`` on stderr on a line of its own: a progress bar an error cut short is closed first."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
    print(line, file=sys.stderr)


def _run(name: str, prog: str, argv: list[str]) -> int:
    config_type, run = command(name)

    def parsed_and_checked() -> None:
        cfg = _parse(config_type, prog, argv)
        cfg.validate()  # every option checked before any work
        run(cfg)

    return _guard(parsed_and_checked)


def probe_layers_main(argv: list[str] | None = None) -> int:
    """Entry point of `probe-layers` (the same command as `safety-probe probe`)."""
    return _run("probe", "probe-layers", sys.argv[1:] if argv is None else argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `safety-probe COMMAND ...` and `python -m safety_probe COMMAND ...`."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        names = " | ".join(COMMANDS)
        print(f"usage: safety-probe {{{names}}} [options]  (each command takes --help)", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return _run(argv[0], f"safety-probe {argv[0]}", argv[1:])
