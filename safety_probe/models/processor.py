"""Load a model's processor, also where a processor class insists on torchvision (Qwen-VL video)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import ProcessorMixin


def without_video(cls: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """Subclass of a Qwen-VL processor class that takes no video processor.

    transformers' video processors need torchvision, and ``ProcessorMixin`` refuses to build a Qwen-VL
    processor without one. The subclass drops ``video_processor`` from ``__init__`` (which is what
    ``ProcessorMixin`` inspects) and keeps the real class name, so ``save_pretrained`` records
    ``"processor_class": "Qwen2VLProcessor"``; images and text work unchanged, videos are unsupported.
    ``video_processor_config`` (set by :func:`load_processor`) is written back on save, so a saved folder
    (e.g. a trained model) loads like the one it came from.
    """

    def __init__(
        self: Any,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: Any = None,
        **kwargs: Any,
    ) -> None:
        cls.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    def to_dict(self: Any) -> dict[str, Any]:
        out = cls.to_dict(self)
        if self.video_processor_config is not None:
            out["video_processor"] = self.video_processor_config
        return out

    namespace = {"__init__": __init__, "to_dict": to_dict, "video_processor_config": None, "__module__": cls.__module__}
    return type(cls.__name__, (cls,), namespace)


def load_processor(path: str | Path, **kwargs: Any) -> ProcessorMixin:
    """``AutoProcessor.from_pretrained(path)``, still working for Qwen2-VL / Qwen2.5-VL without torchvision.

    Their processors require a video processor, and every video processor needs torchvision: there
    ``AutoProcessor`` raises ``ImportError``. The fallback loads the same processor class with its
    image processor and tokenizer only (see :func:`without_video`); it keys on the config's
    ``model_type``, so it should serve real Qwen-VL checkpoints as well (verified on the tiny ones only).
    """
    import transformers

    try:
        return transformers.AutoProcessor.from_pretrained(path, **kwargs)
    except ImportError as err:
        model_type = transformers.AutoConfig.from_pretrained(path).model_type
        name = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor"}.get(model_type)
        if name is None or "torchvision" not in str(err).lower():
            raise
        from transformers.video_processing_utils import BaseVideoProcessor

        processor = without_video(getattr(transformers, name)).from_pretrained(path, **kwargs)
        processor.video_processor_config = BaseVideoProcessor.get_video_processor_dict(str(path))[0]
        return processor


def save_processor(processor: Any, path: str | Path) -> None:
    """``processor.save_pretrained(path)`` with the fast tokenizer's padding and truncation cleared first.

    transformers leaves the last call's ``padding=True`` set on the backend tokenizer, and
    ``save_pretrained`` writes it into ``tokenizer.json``; clearing it makes the saved folder the same
    whether or not the processor was used before (a resumed run saves what an uninterrupted one does).
    Each call sets the state it needs again, so nothing is lost.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    backend = getattr(tokenizer, "backend_tokenizer", None)  # slow tokenizers have none
    if backend is not None:
        backend.no_padding()
        backend.no_truncation()
    processor.save_pretrained(path)
