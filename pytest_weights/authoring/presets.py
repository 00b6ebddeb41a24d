"""Architecture presets for ``init``: families recognised from tensor names, their role names,
and what distribution checks leave out (norms, embeddings, buffers)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    """An architecture family recognised from tensor names: role names and what to leave out."""

    name: str
    title: str
    #: A tensor name matching this regex identifies the architecture.
    detect: str
    #: Role suffix (the part after ``<depth>.``, without ``.weight``) → short role name.
    roles: Mapping[str, str] = field(default_factory=dict)
    #: Names (without ``.weight``) of single tensors → short name.
    singles: Mapping[str, str] = field(default_factory=dict)
    #: Globs of buffers that are not weights (e.g. GPT-2's causal masks): finiteness only.
    buffers: tuple[str, ...] = ()


#: Embedding-like matrices: a std band, no distribution checks.
EMBEDDING_GLOBS = ("*embed*", "*wte*", "*wpe*", "*lm_head*", "*cls_token*", "*mask_token*", "*dist_token*")
#: Norm weights (1-D, so also excluded by min_ndim; listed for norms stored as matrices).
NORM_GLOBS = ("*norm*", "*Norm*", "*.ln_*", "ln_*")

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "vit",
            "ViT (vision transformer)",
            r"(?:^|\.)blocks\.\d+\.attn\.qkv\.|vit\.encoder\.layer\.\d+\.|(?:^|\.)encoder\.layer\.\d+\.attention\.attention\.",
            {
                "attn.qkv": "qkv",
                "attn.proj": "attn-out",
                "mlp.fc1": "mlp-up",
                "mlp.fc2": "mlp-down",
                "attention.attention.query": "query",
                "attention.attention.key": "key",
                "attention.attention.value": "value",
                "attention.output.dense": "attn-out",
                "intermediate.dense": "mlp-up",
                "output.dense": "mlp-down",
            },
            {"head": "head", "classifier": "head", "vit.pooler.dense": "pooler", "pooler.dense": "pooler"},
        ),
        Preset(
            "gpt2",
            "GPT-2-style decoder",
            r"(?:^|\.)h\.\d+\.attn\.c_attn\.",
            {"attn.c_attn": "qkv", "attn.c_proj": "attn-out", "mlp.c_fc": "mlp-up", "mlp.c_proj": "mlp-down"},
            {},
            ("*.attn.bias", "*.attn.masked_bias"),
        ),
        Preset(
            "llama",
            "Llama/Mistral-style decoder",
            r"(?:^|\.)layers\.\d+\.self_attn\.q_proj\.",
            {
                "self_attn.q_proj": "q",
                "self_attn.k_proj": "k",
                "self_attn.v_proj": "v",
                "self_attn.o_proj": "attn-out",
                "mlp.gate_proj": "mlp-gate",
                "mlp.up_proj": "mlp-up",
                "mlp.down_proj": "mlp-down",
            },
        ),
        Preset(
            "bert",
            "BERT-style encoder",
            r"(?:^|\.)encoder\.layer\.\d+\.attention\.self\.query\.",
            {
                "attention.self.query": "query",
                "attention.self.key": "key",
                "attention.self.value": "value",
                "attention.output.dense": "attn-out",
                "intermediate.dense": "mlp-up",
                "output.dense": "mlp-down",
            },
            {"pooler.dense": "pooler"},
        ),
        Preset("generic", "generic (no known architecture)", r"(?!)"),
    ]
}


def detect_preset(names: Iterable[str]) -> Preset:
    """The first preset whose pattern matches a tensor name (``generic`` when none does)."""
    names = list(names)
    for preset in PRESETS.values():
        pattern = re.compile(preset.detect)
        if any(pattern.search(n) for n in names):
            return preset
    return PRESETS["generic"]
