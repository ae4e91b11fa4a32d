"""Shared 3D blocks: shapes over odd sizes, the time embedding, attention masking, divisibility errors."""

import pytest
import torch
from diffusion_helpers import randomize_zero_params

from ADDiffDoseLib.errors import ModelError
from ADDiffDoseLib.model.blocks import (CrossAttention3D, Downsample3D, ResBlock3D, SelfAttention3D, Upsample3D,
                                        check_divisible, group_norm, timestep_embedding)


@pytest.mark.parametrize(("channels", "groups"), [(8, 4), (16, 8), (12, 4), (3, 1), (2, 1)])
def test_group_norm_groups(channels, groups):
    assert group_norm(channels).num_groups == groups


@pytest.mark.parametrize("shape", [(8, 8, 8), (12, 8, 16)])
def test_res_down_up_shapes(shape):
    x = torch.randn(2, 8, *shape)
    temb = torch.randn(2, 32)
    assert ResBlock3D(8, 16, time_dim=32)(x, temb).shape == (2, 16, *shape)
    assert ResBlock3D(8, 8)(x).shape == x.shape
    down = Downsample3D(8, 16)(x)
    assert down.shape == (2, 16, *(s // 2 for s in shape))
    assert Upsample3D(16, 4)(down).shape == (2, 4, *shape)


def test_res_block_uses_time_embedding():
    block = ResBlock3D(8, 8, time_dim=16)
    randomize_zero_params(block)
    x = torch.randn(1, 8, 4, 4, 4)
    assert not torch.allclose(block(x, torch.zeros(1, 16)), block(x, torch.ones(1, 16)))


def test_timestep_embedding_known_values():
    emb = timestep_embedding(torch.tensor([0, 10]), 8)
    assert emb.shape == (2, 8)
    assert torch.allclose(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))  # cos(0), sin(0)
    assert torch.isclose(emb[1, 0], torch.cos(torch.tensor(10.0)))  # first frequency is 1
    assert timestep_embedding(torch.tensor([3]), 7).shape == (1, 7)


def test_cross_attention_ignores_padding_tokens():
    attn = CrossAttention3D(16, token_dim=6, heads=4)
    randomize_zero_params(attn)
    x = torch.randn(2, 16, 4, 4, 4)
    tokens = torch.randn(2, 5, 6)
    mask = torch.tensor([[True, True, False, False, False], [True, False, False, False, False]])
    out = attn(x, tokens, mask)
    changed = tokens.clone()
    changed[~mask] = 100.0  # padded tokens must not matter
    assert torch.allclose(out, attn(x, changed, mask), atol=1e-6)
    changed[0, 1] = 5.0  # a real token does
    assert not torch.allclose(out[0], attn(x, changed, mask)[0])
    assert out.shape == x.shape


def test_cross_attention_with_no_tokens_is_identity():
    attn = CrossAttention3D(8, token_dim=4, heads=2)
    randomize_zero_params(attn)
    x = torch.randn(1, 8, 2, 2, 2)
    out = attn(x, torch.randn(1, 3, 4), torch.zeros(1, 3, dtype=torch.bool))
    assert torch.isfinite(out).all() and torch.allclose(out, x)


def test_self_attention_shape_and_heads():
    attn = SelfAttention3D(16, heads=4)
    assert attn(torch.randn(2, 16, 2, 4, 2)).shape == (2, 16, 2, 4, 2)
    with pytest.raises(ValueError, match="divisible"):
        SelfAttention3D(10, heads=4)


def test_check_divisible():
    check_divisible((32, 48, 64), 16, "x")
    with pytest.raises(ModelError, match="multiple of 16"):
        check_divisible((32, 40, 64), 16, "x")
