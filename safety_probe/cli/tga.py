"""`safety-probe tga`: TGA and its baselines through the comparison harness, with the model options of every command.

No ``from __future__ import annotations`` here: simple-parsing evaluates a command's annotations in the namespace of
the module that defines its first field (:mod:`safety_probe.cli.options`), where the nested config types of this
command are not names; real annotations need no evaluation.
"""

import argparse
import os
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

from safety_probe.cli import presets
from safety_probe.cli.options import ModelOptions, check_layer_option, launched_processes, load_model
from safety_probe.cli.presets import OrganismData
from safety_probe.compare import CompareConfig
from safety_probe.core.errors import InputError
from safety_probe.core.options import OptionTree
from safety_probe.models.load import n_layers_of


@dataclass
class TGACommand(ModelOptions, OptionTree):
    """safety-probe tga: Text-Guided Alignment (paper §4) and its baselines, trained and compared before/after.

    With --model organism (the default) or organism-smol, the documented recipe of docs/tga.md is the default (every
    option still wins) and the organism supplies what a real model must be given: --data, --eval-pairs,
    --safety-ft-data, --clip and the filter's vocabulary.
    """

    compare: CompareConfig = field(default_factory=CompareConfig)
    organism: OrganismData = field(default_factory=OrganismData)

    def validate(self) -> None:
        """Every option checked before any work (with an organism, on its folder, before any data is generated)."""
        self.organism.validate()
        ModelOptions.validate(self)
        if self.device_map:
            raise InputError(f"--device-map {self.device_map}: TGA trains a whole model on each process's device "
                             "(accelerate data parallel); drop it and use --device, or accelerate launch for several GPUs")
        self.compare.validate(generated=presets.is_organism(self.model))
        check_layer_option(self.compare.tga.method, "layers", n_layers_of(self.model, self.trust_remote_code),
                           files=True)


def run_tga_command(cfg: TGACommand) -> Path:
    """Run `safety-probe tga` (Text-Guided Alignment and its baselines; see docs/tga.md), holding the lock of its
    output folder (the first process of `accelerate launch` holds it for all)."""
    from safety_probe.compare import run_compare
    from safety_probe.core.lock import output_lock

    out = Path(cfg.compare.out)
    processes = launched_processes(cfg.device)
    with output_lock(out) if os.environ.get("RANK", "0") == "0" else nullcontext():
        compare, note = cfg.compare, None
        if presets.is_organism(cfg.model):
            compare, note = presets.tga_inputs(cfg.model, compare, cfg.organism, compare.tga.optim.seed, processes)
        result = run_compare(cfg.model, compare, lambda name: load_model(replace(cfg, model=name), processes), note)
        result.draw(out / "figures")
    print(f"aligned model -> {out / 'model'}; before/after -> {out / 'compare.json'}")
    return out


def initial_config(argv: list[str]) -> TGACommand | None:
    """The organism's preset as the starting config of `tga` on an organism (options given still win); --help shows
    the general defaults."""
    if {"-h", "--help"} & set(argv):
        return None
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model", default=ModelOptions.model)
    model = pre.parse_known_args(argv)[0].model
    return TGACommand.of(model=model, **presets.tga_defaults(model)) if presets.is_organism(model) else None
