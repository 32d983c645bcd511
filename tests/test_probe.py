"""The recorder on every supported family: equal to transformers' own block outputs, padding-proof, indexed right."""

from __future__ import annotations

import pytest
import torch

from safety_probe.core.errors import InputError
from safety_probe.data.pairs import load_pairs
from safety_probe.data.prompts import TEXT_TEMPLATES, PromptSettings, text_prompt_body
from safety_probe.models.layers import parse_layers
from safety_probe.models.load import load_vlm
from safety_probe.models.vlm import SUPPORTED_FAMILIES
from safety_probe.probe.record import BACKENDS, PairStates, record
from safety_probe.testing.tiny import BRIDGE_FAMILIES

FAMILIES = list(SUPPORTED_FAMILIES)


def reference_states(vlm, pairs) -> dict[str, torch.Tensor]:
    """Pooled block outputs computed from transformers' forward, one pair at a time (no padding, no nnsight)."""
    out = {k: [] for k in ("image_mean", "caption_mean", "image_last", "caption_last")}
    last_block = {}
    handle = vlm.layers[-1].register_forward_hook(lambda m, i, o: last_block.__setitem__("h", o[0] if isinstance(o, tuple) else o))
    try:
        for pair in pairs:
            for run, span in (("image", "image"), ("text", "caption")):
                batch = vlm.encode([pair], run)
                with torch.no_grad():
                    hs = vlm.model(**batch.inputs, output_hidden_states=True).hidden_states
                # hidden_states[l + 1] is block l's output, except the last entry (after the final norm).
                blocks = torch.stack([*hs[1:vlm.n_layers], last_block["h"]], dim=1)[0]  # [L, T, d]
                mask = (batch.image_mask if span == "image" else batch.caption_mask)[0]
                out[f"{span}_mean"].append(blocks[:, mask].mean(dim=1))
                out[f"{span}_last"].append(blocks[:, -1])
    finally:
        handle.remove()
    return {k: torch.stack(v) for k, v in out.items()}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module", params=FAMILIES)
def family_vlm(request, tiny_model_dir):
    return request.param, load_vlm(tiny_model_dir(request.param))


@pytest.mark.parametrize("backend", BACKENDS)
def test_recorded_states_equal_transformers_block_outputs(family_vlm, pairs_file, backend):
    family, vlm = family_vlm
    pairs = load_pairs(pairs_file)
    if backend == "transformerlens" and family not in BRIDGE_FAMILIES:
        with pytest.raises(InputError, match=f"bridge cannot run {family} .*; use --backend hooks$"):
            record(vlm, pairs, progress=False, backend=backend)
        return
    states = record(vlm, pairs, batch_size=1, progress=False, backend=backend)
    ref = reference_states(vlm, pairs)
    for name, tensor in states.tensors().items():
        assert tensor.shape == (len(pairs), vlm.n_layers, vlm.d_model) and tensor.dtype == torch.float32
        assert rel_err(tensor, ref[name]) < 1e-5, (family, name)


def test_backends_give_the_same_states_in_padded_batches(family_vlm, pairs_file):
    """hooks and nnsight run the same forward and pooling: bit-identical. The bridge runs its own wrapped modules:
    equal to 2e-6 relative (measured: at most 6e-7, Gemma 3)."""
    family, vlm = family_vlm
    pairs = load_pairs(pairs_file)
    backends = BACKENDS if family in BRIDGE_FAMILIES else ("hooks", "nnsight")
    hooks, *others = (record(vlm, pairs, batch_size=3, progress=False, backend=b) for b in backends)
    for backend, states in zip(backends[1:], others):
        for name, tensor in hooks.tensors().items():
            if backend == "nnsight":
                assert torch.equal(tensor, getattr(states, name)), (family, name)
            else:
                assert rel_err(getattr(states, name), tensor) < 2e-6, (family, backend, name)


@pytest.mark.parametrize("template", TEXT_TEMPLATES)
def test_caption_span_is_the_caption(family_vlm, pairs_file, template):
    family, vlm = family_vlm
    pairs = load_pairs(pairs_file)
    prompts = PromptSettings(text_template=template)
    batch = vlm.encode(pairs, "text", prompts, padding_side="right")
    states = record(vlm, pairs[:2], prompts=prompts, progress=False)
    for i, pair in enumerate(pairs):
        assert text_prompt_body(pair.caption, pair.instruction, template) in batch.texts[i]
        ids = batch.inputs["input_ids"][i][batch.caption_mask[i].cpu()]
        assert vlm.tokenizer.decode(ids).strip() == pair.caption, family
    assert torch.isfinite(states.caption_mean).all()
    image_batch = vlm.encode(pairs, "image")
    counts = image_batch.image_mask.sum(dim=1)
    assert (counts > 0).all() and not batch.image_mask.any()


def test_unknown_prompt_settings_are_refused():
    with pytest.raises(InputError, match="--text-template must be one of caption, scene, got .blank."):
        PromptSettings(text_template="blank")
    with pytest.raises(InputError, match="--padding-side must be one of left, right"):
        PromptSettings(padding_side="middle")


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batched_with_padding_equals_batch_of_one(family_vlm, pairs_file, padding_side):
    family, vlm = family_vlm
    pairs = load_pairs(pairs_file)[:4]
    lengths = {vlm.encode([p], "text").inputs["input_ids"].shape[1] for p in pairs}
    assert len(lengths) > 1, "the fixture must mix prompt lengths"
    one = record(vlm, pairs, batch_size=1, progress=False)
    four = record(vlm, pairs, batch_size=4, prompts=PromptSettings(padding_side=padding_side), progress=False)
    for name in one.tensors():
        assert rel_err(four.tensors()[name], one.tensors()[name]) < 1e-4, (family, padding_side, name)


def test_layer_subset_indexes_the_right_blocks(tiny_model_dir, pairs_file):
    vlm = load_vlm(tiny_model_dir("llava"))
    pairs = load_pairs(pairs_file)[:2]
    full = record(vlm, pairs, progress=False)
    subset = parse_layers(f"0,{vlm.n_layers - 1}", vlm.n_layers)
    part = record(vlm, pairs, layers=subset, progress=False)
    assert part.layers == subset and part.image_mean.shape[1] == 2
    for name in full.tensors():
        assert torch.allclose(part.tensors()[name], full.tensors()[name][:, subset], rtol=1e-5, atol=1e-6)


def test_parse_layers():
    assert parse_layers("all", 4) == [0, 1, 2, 3]
    assert parse_layers("1-3", 8) == [1, 2, 3]
    assert parse_layers("5,3,3", 8) == [3, 5]
    assert parse_layers("0-1,6", 8) == [0, 1, 6]
    from safety_probe.core.errors import InputError

    with pytest.raises(InputError, match="layer 8 is out of range"):
        parse_layers("8", 8)
    with pytest.raises(InputError, match="bad layer spec"):
        parse_layers("three", 8)


def test_interrupted_record_resumes_from_checkpoint(tiny_model_dir, pairs_file, tmp_path):
    import shutil

    from safety_probe.core.errors import InputError

    vlm = load_vlm(tiny_model_dir("llava"))
    folder = tmp_path / "pairs"
    shutil.copytree(pairs_file.parent, folder)
    pairs = load_pairs(folder / "pairs.jsonl")
    full = record(vlm, pairs, batch_size=2, progress=False)
    # The third image goes bad mid-run: the first batch is kept in the checkpoint.
    good = (folder / "img2.png").read_bytes()
    (folder / "img2.png").write_bytes(b"not a png")
    ckpt = tmp_path / "partial.safetensors"
    with pytest.raises(InputError, match="img2.png"):
        record(vlm, pairs, batch_size=2, checkpoint=ckpt, progress=False)
    assert ckpt.exists()
    (folder / "img2.png").write_bytes(good)
    calls = []
    encode = vlm.encode
    vlm.encode = lambda chunk, *a, **k: calls.append(len(chunk)) or encode(chunk, *a, **k)  # counts this instance
    resumed = record(vlm, pairs, batch_size=2, checkpoint=ckpt, progress=False)
    assert sum(calls) == 2 * (len(pairs) - 2), "the first batch must not be recomputed"
    assert not ckpt.exists()
    for name in full.tensors():
        assert torch.allclose(resumed.tensors()[name], full.tensors()[name], atol=1e-6)
    full.save(tmp_path / "s.safetensors")
    back = PairStates.load(tmp_path / "s.safetensors")
    assert back.layers == full.layers and torch.equal(back.image_mean, full.image_mean)


def test_llava_states_agree_with_transformerlens_bridge(tiny_model_dir, pairs_file):
    """An independent implementation: TransformerLens' bridge caches blocks.{l}.hook_resid_post on the same model."""
    from transformer_lens.model_bridge import TransformerBridge

    path = tiny_model_dir("llava")
    vlm = load_vlm(path)
    pairs = load_pairs(pairs_file)[:2]
    states = record(vlm, pairs, batch_size=2, progress=False)
    bridge = TransformerBridge.boot_transformers(str(path), device="cpu")
    for i, pair in enumerate(pairs):
        for run, span in (("image", "image"), ("text", "caption")):
            batch = vlm.encode([pair], run)
            inputs = dict(batch.inputs)
            _, cache = bridge.run_with_cache(inputs.pop("input_ids"), **inputs)
            mask = (batch.image_mask if span == "image" else batch.caption_mask)[0]
            for layer in range(vlm.n_layers):
                resid = cache[f"blocks.{layer}.hook_resid_post"][0]  # [T, d]
                assert rel_err(states.tensors()[f"{span}_mean"][i, layer], resid[mask].mean(0)) < 1e-5
                assert rel_err(states.tensors()[f"{span}_last"][i, layer], resid[-1]) < 1e-5
