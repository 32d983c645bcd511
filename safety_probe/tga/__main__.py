"""``python -m safety_probe.tga --model organism --layers 2-4 ...`` (also under ``accelerate launch -m safety_probe.tga``).

The options are the fields of :class:`safety_probe.tga.TGAConfig`; the project CLI's ``safety-probe tga`` is
the same thing.
"""

from __future__ import annotations

import sys

from safety_probe.errors import InputError


def main(argv: list[str] | None = None) -> int:
    import simple_parsing

    from safety_probe.tga import TGAConfig, run_tga

    cfg = simple_parsing.parse(TGAConfig, args=argv, add_option_string_dash_variants=simple_parsing.DashVariant.AUTO)
    try:
        out = run_tga(cfg)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out / "compare.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
