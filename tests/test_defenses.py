"""Inference-time defenses on the tiny models: the hooks edit exactly the chosen blocks and positions (checked against
a forward that adds the vector by hand), nothing stays attached after an exception, batched equals one-at-a-time
generation on every family, states round-trip, the detector's threshold comes from calibration only, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import PAIR_ROWS, write_pairs_file
from torch import nn

from safety_probe.cli import main
from safety_probe.core.errors import InputError
from safety_probe.data.pairs import load_pairs
from safety_probe.data.prompts import DEFAULT_PROMPTS
from safety_probe.defenses import DefenseOptions, calibrate, load_defense, method_name, parse_method
from safety_probe.defenses.base import DefenseState, generate_edited, parse_strength, position_masks
from safety_probe.defenses.hidden_detect import fpr_threshold, lens_scores
from safety_probe.defenses.refusal_steering import RefusalSteering
from safety_probe.defenses.self_check import SelfCheck
from safety_probe.defenses.shift_correction import ShiftCorrection
from safety_probe.models.generate import generate
from safety_probe.models.load import load_vlm
from safety_probe.probe.record import record
from safety_probe.testing.tiny import TINY_FAMILIES

METHODS = ("refusal_steering", "refusal_steering:ablate", "shift_correction:cmrm", "shift_correction:shiftdc",
           "hidden_detect:cosine", "hidden_detect:logprob", "self_check")
OPTIONS = DefenseOptions(strength="1", max_new_tokens=4, batch_size=8, caption_prompt="Describe this image.")


@pytest.fixture(scope="module")
def pairs(pairs_file):
    return load_pairs(pairs_file)


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory):
    """Calibration pairs: other prompts than the test pairs (image i is drawn from seed i, so rows are shifted by
    one), two of each label at least."""
    rows = [PAIR_ROWS[1]] + [(f"{c} seen again", i, label, scene) for c, i, label, scene in PAIR_ROWS]
    return write_pairs_file(tmp_path_factory.mktemp("calibration"), rows)


def _hooks(vlm) -> int:
    return sum(len(b._forward_hooks) + len(b._forward_pre_hooks) for b in vlm.layers)


class AddAfter(nn.Module):
    """A block followed by ``hidden + mask * vector``: the by-hand edit, without hooks."""

    def __init__(self, block: nn.Module, vector: torch.Tensor, mask: torch.Tensor):
        super().__init__()
        self.block, self.vector, self.mask = block, vector, mask
        if hasattr(block, "attention_type"):  # decoders pick a block's attention mask by this attribute
            self.attention_type = block.attention_type

    def forward(self, *args, **kwargs):
        out = self.block(*args, **kwargs)
        hidden = out[0] if isinstance(out, tuple) else out
        new = hidden + self.mask[:, :hidden.shape[1], None].to(hidden.dtype) * self.vector
        return (new, *out[1:]) if isinstance(out, tuple) else new


def _by_hand(vlm, inputs: dict, layer: int, vector: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    original = vlm.layers[layer]
    vlm.layers[layer] = AddAfter(original, vector, mask)
    try:
        with torch.no_grad():
            return vlm.model(**inputs).logits
    finally:
        vlm.layers[layer] = original


def _steering(vlm, layer: int, seed: int = 0) -> RefusalSteering:
    direction = torch.randn(1, vlm.d_model, generator=torch.Generator().manual_seed(seed))
    return RefusalSteering(DefenseState("refusal_steering:add", [layer], {"directions": direction},
                                        {"mode": "add", "strength": 2.0}))


def _shift(vlm, layer: int, positions: str, mode: str = "cmrm", strength: float = 1.5) -> ShiftCorrection:
    g = torch.Generator().manual_seed(1)
    tensors = {"shift": torch.randn(1, vlm.d_model, generator=g), "refusal_direction": torch.randn(1, vlm.d_model, generator=g)}
    return ShiftCorrection(DefenseState(f"shift_correction:{mode}", [layer], tensors,
                                        {"mode": mode, "positions": positions, "strength": strength}))


def test_method_names_and_bad_input_are_one_line_errors(tiny_model_dir, pairs):
    assert parse_method("shift_correction") == ("shift_correction", "cmrm")
    assert method_name("hidden_detect") == "hidden_detect:cosine" and method_name("self_check") == "self_check"
    for bad, needle in (("sharpen", "unknown defense"), ("shift_correction:pca", "unknown mode"),
                        ("self_check:x", "no modes")):
        with pytest.raises(InputError, match=needle):
            parse_method(bad)
    assert parse_strength("auto") is None and parse_strength("0.5") == 0.5
    for bad in ("-1", "0", "nan", "inf", "strong"):
        with pytest.raises(InputError, match="strength"):
            parse_strength(bad)
    vlm = load_vlm(tiny_model_dir("llava"))
    with pytest.raises(InputError, match="out of range"):
        calibrate("refusal_steering", vlm, pairs, [2], OPTIONS)
    with pytest.raises(InputError, match="positions"):
        calibrate("shift_correction", vlm, pairs, [1], DefenseOptions(positions="everywhere"))
    with pytest.raises(InputError, match="2 harmful and 2 benign"):
        calibrate("hidden_detect", vlm, pairs[:2], [1], OPTIONS)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_edits_equal_adding_the_vector_to_the_block_output_by_hand(tiny_model_dir, pairs, family):
    vlm = load_vlm(tiny_model_dir(family))
    for run, defense, where in (("text", _steering(vlm, 1), "all"), ("image", _steering(vlm, 0), "all"),
                                ("image", _shift(vlm, 1, "image"), "image"), ("image", _shift(vlm, 0, "after"), "after")):
        batch = vlm.encode(pairs, run, padding_side="left")
        ids, real = batch.inputs["input_ids"], batch.inputs["attention_mask"].bool()
        assert not real.all()  # the batch really pads
        image = (ids == vlm.image_token_id) & real
        mask = {"all": real, "image": image, "after": (image.long().cumsum(1) > 0) & real}[where]
        assert mask.any()
        layer = defense.layers[0]
        with torch.no_grad():
            clean = vlm.model(**batch.inputs).logits
            with defense_trace(vlm, defense, batch) as seen:
                edited = vlm.model(**batch.inputs).logits
        by_hand = _by_hand(vlm, batch.inputs, layer, defense.vectors[layer], mask)
        assert torch.allclose(edited, by_hand, atol=1e-5), (family, run, where)
        assert not torch.allclose(edited, clean, atol=1e-3)
        delta = seen.outputs[layer] - seen_clean(vlm, batch, layer)
        assert torch.allclose(delta[~mask], torch.zeros_like(delta[~mask]), atol=1e-5)  # padding and the rest untouched
        assert torch.allclose(delta[mask], defense.vectors[layer].expand_as(delta[mask]), atol=1e-5)
        assert _hooks(vlm) == 0


def defense_trace(vlm, defense, batch):
    """The defense's edit on its layers with the edited outputs kept (the Trace generation uses)."""
    from safety_probe.models.hooks import Trace

    return Trace(vlm.layers, defense.layers, edit_output=defense.edit(batch))


def seen_clean(vlm, batch, layer: int) -> torch.Tensor:
    from safety_probe.models.hooks import Trace

    with torch.no_grad(), Trace(vlm.layers, [layer]) as trace:
        vlm.model(**batch.inputs)
    return trace.outputs[layer]


def _greedy_by_hand(vlm, batch, layer: int, vector: torch.Tensor, prompt_mask: torch.Tensor,
                    generated: torch.Tensor, steps: int) -> list[str]:
    """Greedy decoding without a cache, every step a full forward with the vector added by hand: the prompt's
    positions where ``prompt_mask``, each generated position of the rows where ``generated``."""
    inputs = dict(batch.inputs)
    ids, attention, mask = inputs["input_ids"], inputs["attention_mask"], prompt_mask
    eos = vlm.tokenizer.eos_token_id
    for _ in range(steps):
        logits = _by_hand(vlm, {**inputs, "input_ids": ids, "attention_mask": attention}, layer, vector, mask)
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
        mask = torch.cat([mask, generated[:, None]], dim=1)
    out = []
    for row in ids[:, batch.inputs["input_ids"].shape[1]:].tolist():
        row = row[:row.index(eos)] if eos in row else row
        out.append(vlm.tokenizer.decode(row, skip_special_tokens=True).strip())
    return out


def test_generation_edits_every_generated_token_as_a_cacheless_forward_does(tiny_model_dir, pairs):
    vlm = load_vlm(tiny_model_dir("llava"))
    for run, defense in (("text", _steering(vlm, 1, seed=3)), ("image", _shift(vlm, 0, "after")),
                         ("image", _shift(vlm, 0, "image", strength=20.0))):
        batch = vlm.encode(pairs, run, padding_side="left")
        layer = defense.layers[0]
        prompt_mask, generated = position_masks(batch, defense.positions if isinstance(defense, ShiftCorrection)
                                                else "all")
        expected = _greedy_by_hand(vlm, batch, layer, defense.vectors[layer], prompt_mask, generated, steps=5)
        assert generate_edited(vlm, pairs, run, DEFAULT_PROMPTS, 5, defense.layers, defense.edit) == expected
        assert expected != generate(vlm, pairs, run, max_new_tokens=5)


def test_ablation_removes_the_direction_at_the_chosen_block_only(tiny_model_dir, pairs):
    vlm = load_vlm(tiny_model_dir("llava"))
    direction = torch.randn(1, vlm.d_model, generator=torch.Generator().manual_seed(2))
    defense = RefusalSteering(DefenseState("refusal_steering:ablate", [0], {"directions": direction},
                                           {"mode": "ablate", "strength": 1.0}))
    batch = vlm.encode(pairs, "image", padding_side="left")
    real = batch.inputs["attention_mask"].bool()
    with torch.no_grad(), defense_trace(vlm, defense, batch) as seen:
        vlm.model(**batch.inputs)
    unit = defense.units[0]
    assert (seen.outputs[0][real] @ unit).abs().max() < 1e-4
    clean = seen_clean(vlm, batch, 0)
    assert torch.equal(seen.outputs[0][~real], clean[~real])
    assert set(seen.outputs) == {0}


def test_shiftdc_adds_only_the_shift_along_the_refusal_direction(tiny_model_dir):
    vlm = load_vlm(tiny_model_dir("llava"))
    cmrm, shiftdc = _shift(vlm, 1, "image"), _shift(vlm, 1, "image", mode="shiftdc")
    r = shiftdc.state().tensors["refusal_direction"][0]
    unit = r / r.norm()
    assert torch.allclose(shiftdc.vectors[1], (cmrm.vectors[1] @ unit) * unit, atol=1e-6)


def _calibrated(vlm, method, calibration_file):
    return calibrate(method, vlm, load_pairs(calibration_file), [1], OPTIONS)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_batched_defenses_answer_as_one_pair_at_a_time(tiny_model_dir, pairs, calibration_file, family):
    vlm = load_vlm(tiny_model_dir(family))
    for method in METHODS:
        defense = _calibrated(vlm, method, calibration_file)
        for run in ("image", "text"):
            batched = defense(vlm, pairs, run, DEFAULT_PROMPTS, 4)
            alone = [defense(vlm, [p], run, DEFAULT_PROMPTS, 4)[0] for p in pairs]
            assert [t for t, _ in batched] == [t for t, _ in alone], (family, method, run)
            if method.startswith("hidden_detect"):
                assert [i["score"] for _, i in batched] == pytest.approx([i["score"] for _, i in alone], abs=1e-4)
        assert _hooks(vlm) == 0


@pytest.mark.parametrize("method", METHODS)
def test_hooks_are_gone_after_an_exception_and_states_round_trip(tiny_model_dir, pairs, calibration_file, method,
                                                                 tmp_path, monkeypatch):
    vlm = load_vlm(tiny_model_dir("llava"))
    defense = _calibrated(vlm, method, calibration_file)
    before = [defense(vlm, pairs, run, DEFAULT_PROMPTS, 4) for run in ("image", "text")]
    defense.state().save(tmp_path / "state")
    assert {p.name for p in (tmp_path / "state").iterdir()} == {"state.safetensors", "state.json"}
    loaded = load_defense(tmp_path / "state")
    assert type(loaded) is type(defense) and loaded.name == method_name(method) and loaded.layers == [1]
    assert [loaded(vlm, pairs, run, DEFAULT_PROMPTS, 4) for run in ("image", "text")] == before
    generate_once = vlm.model.generate

    def fails_midway(**kwargs):
        generate_once(**{**kwargs, "max_new_tokens": 1})
        assert _hooks(vlm) > 0 or method == "self_check"  # the defense's hooks are attached while it generates
        raise RuntimeError("interrupted")

    monkeypatch.setattr(vlm.model, "generate", fails_midway)
    with pytest.raises(RuntimeError, match="interrupted"):
        defense(vlm, pairs, "image", DEFAULT_PROMPTS, 4)
    assert _hooks(vlm) == 0
    assert all(not b._forward_hooks for b in vlm.layers)


def test_detector_scores_in_generation_equal_the_recorded_ones_and_threshold_comes_from_calibration(
        tiny_model_dir, pairs, calibration_file):
    vlm = load_vlm(tiny_model_dir("qwen2_vl"))
    cal = load_pairs(calibration_file)
    for mode in ("cosine", "logprob"):
        defense = _calibrated(vlm, f"hidden_detect:{mode}", calibration_file)
        states = record(vlm, pairs, layers=[1], progress=False)
        for run, last in (("image", states.image_last), ("text", states.caption_last)):
            replies = defense(vlm, pairs, run, DEFAULT_PROMPTS, 4)
            scores = lens_scores(vlm, last, defense.vector, mode)
            assert [i["score"] for _, i in replies] == pytest.approx(scores.tolist(), abs=1e-4)
            flagged = [s > defense.thresholds[run] for s in scores.tolist()]
            assert [i["flagged"] for _, i in replies] == flagged
            assert all(t == OPTIONS.refusal_phrase for (t, _), f in zip(replies, flagged) if f)
        cal_states = record(vlm, cal, layers=[1], progress=False)
        benign = [i for i, p in enumerate(cal) if p.label == "benign"]
        cal_scores = lens_scores(vlm, cal_states.image_last[benign], defense.vector, mode).numpy()
        assert defense.thresholds["image"] == pytest.approx(fpr_threshold(cal_scores, OPTIONS.max_fpr))
    assert fpr_threshold(list(range(10)), 0.2) == 7  # scores 8 and 9 flagged: 2 of 10
    assert fpr_threshold([3.0, 1.0, 2.0], 0.0) == 3.0


def test_self_check_answers_flagged_images_from_their_own_caption_in_text(tiny_model_dir, pairs, calibration_file,
                                                                          monkeypatch):
    vlm = load_vlm(tiny_model_dir("llava"))
    defense = _calibrated(vlm, "self_check", calibration_file)
    assert isinstance(defense, SelfCheck) and set(defense.state().settings["calibration"]) == {"harmful", "benign"}
    monkeypatch.setattr(SelfCheck, "unsafe", lambda self, vlm, pairs, answers, sp, n: [True, False] * 2 + [True])
    replies = defense(vlm, pairs, "image", DEFAULT_PROMPTS, 4)
    plain = generate(vlm, pairs, "image", max_new_tokens=4)
    for i, (text, info) in enumerate(replies):
        assert info["first_answer"] == plain[i]
        if info["unsafe"] and info["caption"]:
            from dataclasses import replace

            assert text == generate(vlm, [replace(pairs[i], caption=info["caption"])], "text", max_new_tokens=4)[0]
        elif not info["unsafe"]:
            assert text == plain[i]
    assert [t for t, _ in defense(vlm, pairs, "text", DEFAULT_PROMPTS, 4)] == generate(vlm, pairs, "text", max_new_tokens=4)


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


def test_defend_command_writes_metrics_auroc_cost_and_a_loadable_state(tiny_model_dir, pairs_file, calibration_file,
                                                                      tmp_path, capsys):
    out = tmp_path / "defend"
    base = ["defend", "--model", str(tiny_model_dir("llava")), "--calibrate", str(calibration_file),
            "--pairs", str(pairs_file), "--layers", "1", "--max-new-tokens", "2", "--repeats", "1"]
    capsys.readouterr()
    assert main([*base, "--method", "hidden_detect", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    plain = json.loads((out / "metrics_plain.json").read_text())
    printed = capsys.readouterr().out  # plain and defended side by side, with the difference
    assert "plain vs hidden_detect:cosine" in printed
    for key in ("image_dsr", "text_benign_refusal"):
        line = next(line for line in printed.splitlines() if f" {key} " in line)  # the overall group comes first
        a, b = plain["overall"][key], metrics["overall"][key]
        assert line.split()[-6:-1:2] == [f"{a:.3f}", f"{b:.3f}", f"{b - a:+.3f}"], line
    assert metrics["overall"]["n_pairs"] == plain["overall"]["n_pairs"] == 5
    assert set(metrics["overall"]) == set(plain["overall"]) and metrics["judge"] == plain["judge"] == "keyword"
    for run in ("image", "text"):
        assert {"auroc", "lower", "upper"} <= set(metrics["auroc"][run])
        assert metrics["auroc"][run]["lower"] <= metrics["auroc"][run]["auroc"] <= metrics["auroc"][run]["upper"]
    assert metrics["cost"]["ratio"] > 0 and metrics["defense"]["method"] == "hidden_detect:cosine"
    state = json.loads((out / "state" / "state.json").read_text())
    assert state["calibration"] == str(calibration_file) and state["layers"] == [1]
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["method"] == "hidden_detect" and run["layers"] == [1]
    again = tmp_path / "again"
    assert main([*base, "--method", "hidden_detect", "--state", str(out / "state"), "--out", str(again)]) == 0
    rows = [json.loads(line) for line in (again / "responses.jsonl").read_text().splitlines()]
    assert [r["image_response"] for r in rows] == [json.loads(line)["image_response"]
                                                   for line in (out / "responses.jsonl").read_text().splitlines()]
    assert all(r["defense"] == "hidden_detect:cosine" and "score" in r["image_defense"] for r in rows)
    capsys.readouterr()
    for extra, needle in ((["--method", "sharpen"], "unknown defense"),
                          (["--method", "refusal_steering", "--strength", "-1"], "strength"),
                          (["--method", "refusal_steering", "--layers", "5"], "out of range"),
                          (["--method", "self_check", "--calibrate", str(tmp_path / "none.jsonl")], "not found"),
                          (["--method", "self_check", "--calibrate", str(pairs_file)], "test pairs file")):
        assert main([*base, "--out", str(tmp_path / "bad"), *extra]) == 2
        assert needle in _error(capsys)


def test_compare_adds_defense_rows_with_their_cost(tiny_model_dir, pairs_file, calibration_file, tmp_path):
    from safety_probe.compare import CompareConfig, run_compare
    from safety_probe.organism.preset import write_tga_data
    from safety_probe.viz.evaluation import METHOD_COLORS

    data = write_tga_data(seed=0, n=4, out_dir=tmp_path / "data", retrieval="world")
    model = str(tiny_model_dir("llava"))
    cfg = CompareConfig.of(layers="1", out=str(tmp_path / "run"), data=str(data), eval_pairs=str(pairs_file), stage=1,
                           lr=1e-3, max_steps=1, batch_size=2, max_new_tokens=2,
                           defenses=["hidden_detect", "shift_correction:shiftdc"],
                           defense_calibration=str(calibration_file), defense_strength="1")
    result = run_compare(model, cfg)
    compare = result.record
    assert set(compare["rows"]) == {"before", "tga", "hidden_detect:cosine", "shift_correction:shiftdc"}
    for name in ("hidden_detect:cosine", "shift_correction:shiftdc"):
        row = compare["rows"][name]
        assert row["overall"]["n_pairs"] == 5 and row["cost"]["ratio"] > 0 and name in METHOD_COLORS
        assert (tmp_path / "run" / "defenses" / name.replace(":", "-") / "state" / "state.safetensors").is_file()
    assert "auroc" in compare["rows"]["hidden_detect:cosine"]
    assert any(p.name == "tga_dsr.png" for p in result.draw(tmp_path / "figures"))
    with pytest.raises(InputError, match="test pairs file"):
        run_compare(model, cfg.replace(defense_calibration=str(pairs_file)))
