"""What TGA trains: the projector (stage 1), plus the language model in full or through LoRA (stage 2), and a
hash of the weights for bitwise comparisons."""

from __future__ import annotations

import hashlib
import re

import torch
from torch import nn

from safety_probe.core.errors import InputError
from safety_probe.models.vlm import VLM

PROJECTOR_NAMES = ("multi_modal_projector", "mm_projector", "connector", "merger")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def find_projector(model: nn.Module) -> tuple[str, nn.Module]:
    """The vision→language projector module (LLaVA's ``multi_modal_projector`` and its kin)."""
    for name, module in model.named_modules():
        if name.split(".")[-1] in PROJECTOR_NAMES:
            return name, module
    raise InputError(f"{type(model).__name__}: cannot find the multimodal projector ({', '.join(PROJECTOR_NAMES)})")


def setup_trainable(vlm: VLM, stage: int, lora: bool = False, lora_r: int = 16, lora_alpha: int = 32):
    """Freeze everything, then unfreeze the projector (stage 1) and the language model (stage 2; full or LoRA).

    Returns the peft model when LoRA was injected (for merging), else None. The vision tower stays frozen.
    """
    if stage not in (1, 2):
        raise InputError(f"stage must be 1 (projector) or 2 (projector + language model), got {stage}")
    model = vlm.model
    for p in model.parameters():
        p.requires_grad_(False)
    _, projector = find_projector(model)
    peft_model = None
    if stage == 2 and lora:
        from peft import LoraConfig, get_peft_model

        names = {id(m): n for n, m in model.named_modules()}
        decoder = re.escape(names[id(vlm.decoder)])
        target = rf"{decoder}\.layers\.\d+\..*\b({'|'.join(LORA_TARGETS)})"
        config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules=target, bias="none")
        peft_model = get_peft_model(model, config)  # injects adapters into `model` in place
    elif stage == 2:
        for p in vlm.decoder.parameters():
            p.requires_grad_(True)
        for p in vlm.unembed.parameters():
            p.requires_grad_(True)
    for p in projector.parameters():
        p.requires_grad_(True)
    return peft_model


def trainable_names(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def weights_hash(model_or_state: nn.Module | dict) -> str:
    """sha256 over every tensor of a state dict (sorted by name): equal hashes = bitwise equal weights."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous().reshape(-1)  # 0-d tensors (CLIP logit_scale) cannot be viewed as bytes
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
