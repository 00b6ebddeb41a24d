"""Depth and role extraction from tensor names; include/exclude/shape filters."""

from __future__ import annotations

import pytest
import torch

from pytest_weights.readers import TensorInfo
from pytest_weights.selection import Selection


@pytest.mark.parametrize(
    ("name", "depth", "role"),
    [
        ("model.layers.12.self_attn.q_proj.weight", 12, "model.layers.*.self_attn.q_proj.weight"),
        ("encoder.layer.3.attention.self.query.weight", 3, "encoder.layer.*.attention.self.query.weight"),
        ("transformer.h.0.attn.c_attn.weight", 0, "transformer.h.*.attn.c_attn.weight"),
        ("blocks.7.mlp.fc1.weight", 7, "blocks.*.mlp.fc1.weight"),
        ("embeddings.word_embeddings.weight", None, "embeddings.word_embeddings.weight"),
        ("model.layers.2", 2, "model.layers.*"),
        ("h.10.attn.weight", 10, "h.*.attn.weight"),
        ("graph.10.weight", None, "graph.10.weight"),
    ],
)
def test_default_depth_and_role(name, depth, role):
    s = Selection()
    assert s.depth(name) == depth
    assert s.role(name) == role


def test_depth_pattern_override():
    s = Selection(depth_pattern=r"stage(\d+)\.")
    assert s.depth("net.stage4.conv.weight") == 4
    assert s.role("net.stage4.conv.weight") == "net.stage*.conv.weight"


def info(name: str, shape=(4, 4), dtype=torch.float32, group="weights") -> TensorInfo:
    return TensorInfo(name, shape, dtype, "f", group)


def test_include_exclude_and_shape_filters():
    s = Selection(include=("*.weight",), exclude=("*norm*",), min_ndim=2, min_numel=10)
    assert s.matches(info("a.weight"))
    assert not s.matches(info("a.bias"))
    assert not s.matches(info("a.norm.weight"))
    assert not s.matches(info("a.weight", shape=(16,)))
    assert not s.matches(info("a.weight", shape=(3, 3)))
    assert Selection(ndim=(1,)).matches(info("b", shape=(5,)))


def test_optimizer_state_is_left_out_unless_selected():
    opt = info("optimizer.state.0.exp_avg", group="optimizer")
    assert not Selection().matches(opt)
    assert Selection(groups=("optimizer",)).matches(opt)
