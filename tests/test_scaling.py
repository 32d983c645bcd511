"""Scaling out: a model spread over devices (blocks in RAM and offloaded to disk) gives one device's results; probe,
eval and TGA under ``accelerate launch`` with two processes give one process's results."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from safety_probe.cli import main
from safety_probe.core.errors import InputError
from safety_probe.core.shards import batch_share
from safety_probe.data.pairs import load_pairs
from safety_probe.models.generate import generate
from safety_probe.models.load import load_vlm
from safety_probe.models.placement import parse_device_map
from safety_probe.models.vlm import SUPPORTED_FAMILIES
from safety_probe.probe.lens import lens_logprobs
from safety_probe.probe.patching import block_outputs, patch_caption
from safety_probe.probe.record import BACKENDS, record
from safety_probe.testing.tiny import BRIDGE_FAMILIES

ROOT = Path(__file__).resolve().parents[1]


def split_map(vlm) -> dict[str, str]:
    """A device map over every part of ``vlm``: odd blocks, the input embedding and the unembedding offloaded to
    disk (their parameters then sit on the meta device), everything else in CPU RAM."""
    names = {id(m): n for n, m in vlm.model.named_modules()}
    path = names[id(vlm.layers)].split(".")
    expand = {".".join(path[:i]) for i in range(len(path) + 1)} | {names[id(vlm.decoder)]}
    placed: dict[str, str] = {}

    def walk(prefix: str, module: torch.nn.Module) -> None:
        for name, _ in module.named_parameters(recurse=False):  # e.g. LLaVA-NeXT's image_newline
            placed[f"{prefix}.{name}" if prefix else name] = "cpu"
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if full in expand:
                walk(full, child)
            else:
                placed[full] = "cpu"

    walk("", vlm.model)
    placed.update({name: "disk" if i % 2 else "cpu" for i, name in enumerate(vlm.layer_module_names)})
    placed.update({names[id(vlm.embed)]: "disk", names[id(vlm.unembed)]: "disk"})
    return placed


@pytest.mark.parametrize("family", list(SUPPORTED_FAMILIES))
def test_device_map_over_ram_and_disk_gives_the_single_device_results(family, tiny_model_dir, pairs_file, tmp_path):
    """Bit-identical (tolerance 0): every block computes on the CPU either way; only where weights rest differs."""
    one = load_vlm(tiny_model_dir(family))
    two = load_vlm(tiny_model_dir(family), device_map=split_map(one), offload_folder=tmp_path / "offload")
    assert {"cpu", "disk"} <= set(two.model.hf_device_map.values())
    assert next(two.embed.parameters()).device.type == "meta" and two.device == torch.device("cpu")
    pairs = load_pairs(pairs_file)
    for backend in BACKENDS if family in BRIDGE_FAMILIES else ("hooks", "nnsight"):
        want, got = (record(v, pairs, batch_size=3, progress=False, backend=backend) for v in (one, two))
        for name, tensor in want.tensors().items():
            assert torch.equal(got.tensors()[name], tensor), (family, backend, name)
    assert torch.equal(lens_logprobs(two, want.caption_last), lens_logprobs(one, want.caption_last))
    patched = [patch_caption(v, batch := v.encode(pairs[:2], "image"), block_outputs(v, batch), want.caption_mean[:2],
                             [0, 1]) for v in (one, two)]
    assert torch.equal(*patched)
    assert generate(two, pairs[:2], "image", max_new_tokens=3) == generate(one, pairs[:2], "image", max_new_tokens=3)


def test_device_map_option_loads_sharded_and_records_the_same_states(tiny_model_dir, pairs_file, tmp_path):
    path = tiny_model_dir("llava")
    one = load_vlm(path)
    spec = tmp_path / "map.json"
    spec.write_text(json.dumps(split_map(one)))
    out = tmp_path / "run"
    assert main(["probe", "--model", str(path), "--pairs", str(pairs_file), "--out", str(out), "--device-map",
                 str(spec), "--figures", "false", "--patch-pairs", "0", "--batch-size", "3"]) == 0
    want = record(one, load_pairs(pairs_file), batch_size=3, progress=False)
    got = load_file(str(out / "states.safetensors"))
    for name, tensor in want.tensors().items():  # the text run's forward runs the eager kernel (it reads attention)
        torch.testing.assert_close(got[name], tensor, rtol=1e-5, atol=1e-5)
    assert json.loads((out / "run.json").read_text())["config"]["device_map"] == str(spec)


def test_device_map_errors_are_one_line(tiny_model_dir, pairs_file, tmp_path, capsys):
    assert parse_device_map("auto") == "auto"
    bad = tmp_path / "bad.json"
    for text, needle in (("[1, 2]", "expected a non-empty object"), ('{"lm_head": [0]}', "is not a device"),
                         ("{", "malformed JSON"), ("{}", "expected a non-empty object")):
        bad.write_text(text)
        with pytest.raises(InputError, match=needle):
            parse_device_map(str(bad))
    for text in ('{"lm_head": "tpu9"}', '{"lm_head": true}'):
        bad.write_text(text)
        with pytest.raises(InputError, match="is not a device"):
            parse_device_map(str(bad))
    bad.write_text('{"": 99}')
    with pytest.raises(InputError, match="but this machine has"):
        parse_device_map(str(bad))
    gap = tmp_path / "gap.json"
    gap.write_text(json.dumps({"": "cpu", "lm_head": "disk"}))  # overlapping entries: accelerate refuses
    base = ["probe", "--model", str(tiny_model_dir("llava")), "--pairs", str(pairs_file), "--out", str(tmp_path / "o")]
    for extra, needle in ((["--device-map", "everywhere"], "no such JSON file"),
                          (["--device-map", "auto", "--device", "cpu"], "drop --device cpu"),
                          (["--device-map", str(gap)], "--device-map for")):
        capsys.readouterr()
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


def test_batch_shares_are_whole_contiguous_batches_in_rank_order():
    from accelerate import PartialState

    class Rank:  # a stand-in for one process's state, split by accelerate's own method
        split_between_processes = PartialState.split_between_processes

        def __init__(self, rank: int, world: int):
            self.process_index, self.num_processes = rank, world

    def shares(n: int, batch: int, world: int) -> list[tuple[int, int]]:
        return [batch_share(n, batch, Rank(r, world)) for r in range(world)]

    assert shares(5, 2, 2) == [(0, 4), (4, 5)]  # 3 batches: 2 + 1, each padded as in one process
    assert shares(4, 2, 3) == [(0, 2), (2, 4), (4, 4)]  # fewer batches than processes: an empty share
    assert shares(9, 4, 2) == [(0, 8), (8, 9)]
    assert batch_share(7, 3, None) == (0, 7)


# ---------------------------------------------------------------------------------------------------------
# Two processes (gloo, CPU)
# ---------------------------------------------------------------------------------------------------------


def launch(*args: str) -> subprocess.CompletedProcess:
    """``accelerate launch`` of two CPU processes running ``python -m safety_probe ARGS`` (one torch thread each).

    On a machine without GPUs, accelerate 1.x starts N processes with ``--multi_gpu --num_processes N`` (torch's
    elastic launcher; the commands' ``--device cpu`` then makes the process group gloo); ``--cpu --num_processes N``
    starts one process unless an MPI hostfile is given.
    """
    with socket.socket() as s:  # a free port: other test runs on this machine may launch at the same time
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(port), "-m", "safety_probe", *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def one_thread(argv: list[str]) -> int:
    """``main(argv)`` in this process with one torch thread, like each launched process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(argv)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_probe_and_eval_on_two_processes_equal_one_process(tiny_model_dir, pairs_file, tmp_path):
    """5 pairs in batches of 2 -> shares of 4 and 1 pairs; states bit-identical, responses and metrics equal."""
    model = str(tiny_model_dir("llava"))
    probe = ["probe", "--model", model, "--pairs", str(pairs_file), "--device", "cpu", "--batch-size", "2",
             "--figures", "false", "--patch-pairs", "0"]
    evaluate = ["eval", "--model", model, "--pairs", str(pairs_file), "--device", "cpu", "--batch-size", "2",
                "--max-new-tokens", "4", "--figures", "false"]
    for command, out in ((probe, "probe"), (evaluate, "eval")):
        assert one_thread([*command, "--out", str(tmp_path / f"{out}1")]) == 0
        launch(*command, "--out", str(tmp_path / f"{out}2"))
    one, two = (load_file(str(tmp_path / d / "states.safetensors")) for d in ("probe1", "probe2"))
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    for name in ("layers.json", "layers.csv"):
        assert (tmp_path / "probe1" / name).read_text() == (tmp_path / "probe2" / name).read_text(), name
    for name in ("responses.jsonl", "metrics.json", "metrics.csv"):
        assert (tmp_path / "eval1" / name).read_text() == (tmp_path / "eval2" / name).read_text(), name
    leftovers = [p.name for d in ("probe2", "eval2") for p in (tmp_path / d).iterdir() if "partial" in p.name]
    assert leftovers == [], "the main process removes the shards after merging"


@pytest.mark.slow
def test_tga_on_two_processes_equals_one_process_with_the_same_global_batch(tmp_path, tiny_model_dir):
    """2 steps of 2 rows: two processes x batch 1 (DDP averages the two rows' gradients) against one process x
    batch 1 x 2 accumulation steps (accelerate averages them too): the same weights, bit for bit (weights hash).
    One process with batch 2 is not the same run: its LM loss is a mean over both rows' tokens, not a mean of
    per-row means, and Adam's first updates are nearly sign(gradient), so weights move differently."""
    from safety_probe.organism.preset import write_tga_data

    data = write_tga_data(seed=0, n=4, out_dir=tmp_path / "data", retrieval="world")
    common = ["tga", "--model", str(tiny_model_dir("llava")), "--layers", "0-1", "--data", str(data), "--stage", "2",
              "--lr", "1e-3", "--max-steps", "2", "--device", "cpu", "--threads", "1", "--baselines"]
    assert one_thread([*common, "--out", str(tmp_path / "one"), "--batch-size", "1", "--grad-accum", "2"]) == 0
    launch(*common, "--out", str(tmp_path / "two"), "--batch-size", "1")
    one, two = (json.loads((tmp_path / d / "train.json").read_text()) for d in ("one", "two"))
    assert one["total_steps"] == two["total_steps"] == 2
    assert two["weights_sha256"] == one["weights_sha256"]
    base = load_file(str(Path(tiny_model_dir("llava")) / "model.safetensors"))
    trained = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    assert any(not torch.equal(trained[k], base[k]) for k in base), "the weights moved"
