"""`safety-probe locate RUN`: choose the safety layers of a finished probe-layers run again, with other settings,
from its saved states and measurements alone (no model: seconds)."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from simple_parsing import field as option

from safety_probe.core.errors import InputError
from safety_probe.probe.config import LocateOptions


@dataclass
class LocateConfig:
    """safety-probe locate RUN: re-choose the safety layers of a probe-layers run from its states.safetensors and
    measurements without the model; rewrites layers.json, layers.csv and the figures, and notes the new settings in
    run.json (``locate``)."""

    run: str = option(default="", positional=True, nargs="?")
    """A probe-layers output folder (states.safetensors, measurements.safetensors, measurements.json)."""
    figures: bool = True
    """Redraw the figures (PDF, PNG, HTML) into RUN/figures."""
    locate: LocateOptions = field(default_factory=LocateOptions)

    def validate(self) -> None:
        """The run folder holds a finished probe-layers pass, and every option is in range."""
        from safety_probe.core.files import check_input_path, check_out_dir

        if not self.run:
            raise InputError("give the run folder: safety-probe locate RUN")
        run = check_input_path(self.run, "run folder", folder=True)
        for name in ("states.safetensors", "measurements.safetensors", "measurements.json"):
            if not (run / name).exists():
                raise InputError(f"{run} holds no {name}: is it a finished probe-layers run of every block?")
        self.locate.validate()
        check_out_dir(run / "figures", "figures folder")


def run_locate(cfg: LocateConfig) -> Path:
    """Run `safety-probe locate` (holding the lock of the run folder); returns the folder."""
    from safety_probe.analysis.analyze import analyze
    from safety_probe.cli.options import check_layer_option
    from safety_probe.cli.show import print_layers
    from safety_probe.core.files import read_json
    from safety_probe.core.lock import output_lock
    from safety_probe.probe.measure import Measurements
    from safety_probe.probe.record import PairStates

    run = Path(cfg.run)
    with output_lock(run):
        states, measurements = PairStates.load(run / "states.safetensors"), Measurements.load(run)
        check_layer_option(cfg.locate, "safety_layers", states.layers[-1] + 1)
        result = analyze(states, measurements, cfg.locate)
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        record = read_json(run / "run.json", "run record") if (run / "run.json").is_file() else None
        record = record if isinstance(record, dict) else result.run_record()
        result.save(run, figures=cfg.figures, run={**record, "locate": {"command": sys.argv, **asdict(cfg.locate)}})
    print_layers(result)
    print(f"results -> {run}")
    return run
