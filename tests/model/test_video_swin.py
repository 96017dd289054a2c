"""Video Swin 3D: shapes, window locality (plain and shifted), clipped-window biases, masks, caching."""

from __future__ import annotations

import copy

import pytest
import torch

from lib.model.video_swin import (
    MASKED,
    SwinBlock3D,
    SwinTransformer3D,
    WindowAttention3D,
    relative_position_index,
    window_attention_mask,
)


def tiny_swin(**kw) -> SwinTransformer3D:
    torch.manual_seed(0)
    args = {"embed_dim": 24, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 2, 4), "drop_path_rate": 0.0}
    return SwinTransformer3D(**{**args, **kw})


@pytest.fixture(scope="module")
def swin() -> SwinTransformer3D:
    return tiny_swin().eval()


@pytest.mark.parametrize("frames", [1, 4, 5, 8])
@pytest.mark.parametrize("size", [32, 64, 96])
def test_output_shape_keeps_every_frame(swin, frames, size):
    with torch.no_grad():
        out = swin(torch.randn(2, 3, frames, size, size))
    assert out.shape == (2, frames, size // 32, size // 32, 24 * 8)
    assert torch.isfinite(out).all()


def test_224_pixels_and_non_square():
    swin = tiny_swin(depths=(1, 1, 1, 1)).eval()
    with torch.no_grad():
        assert swin(torch.randn(1, 3, 2, 224, 224)).shape == (1, 2, 7, 7, 192)
        assert swin(torch.randn(1, 3, 3, 64, 128)).shape == (1, 3, 2, 4, 192)


def test_frame_size_must_be_a_multiple_of_32(swin):
    with pytest.raises(ValueError, match="multiple of 32"):
        swin(torch.randn(1, 3, 2, 48, 48))
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        swin(torch.randn(1, 2, 3, 32, 32))


def test_single_frame_equals_half_kernel_on_the_frame(swin):
    """T=1: the padded zero frame contributes nothing, so only the kernel's first time step acts."""
    x = torch.randn(1, 3, 1, 32, 32)
    proj = swin.patch_embed.proj
    expected = torch.nn.functional.conv2d(x[:, :, 0], proj.weight[:, :, 0], proj.bias, stride=4)
    with torch.no_grad():
        got = proj(torch.nn.functional.pad(x, (0, 0, 0, 0, 0, 1)))[:, :, 0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------------
# Locality: a token only sees its own window (and, when shifted, its own region of the rolled window)
# --------------------------------------------------------------------------------------------------------


def _block_output_changes(shifted: bool, query: tuple[int, int, int], touched: tuple[int, int, int]) -> bool:
    torch.manual_seed(0)
    block = SwinBlock3D(dim=8, num_heads=2, window_size=(2, 4, 4), shifted=shifted).eval()
    x = torch.randn(1, 2, 8, 8, 8)
    y = x.clone()
    y[(0, *touched)] += torch.randn(8)
    with torch.no_grad():
        a, b = block(x), block(y)
    return not torch.allclose(a[(0, *query)], b[(0, *query)], atol=1e-6)


@pytest.mark.parametrize(
    ("shifted", "query", "touched", "changes"),
    [
        (False, (0, 1, 1), (1, 3, 3), True),  # same 4x4 window [0:4, 0:4]
        (False, (0, 1, 1), (0, 4, 4), False),  # next window
        (False, (0, 3, 3), (0, 4, 4), False),  # adjacent pixel across the window border
        (True, (0, 3, 3), (0, 4, 4), True),  # shifted by 2: window [2:6, 2:6] joins them
        (True, (0, 2, 2), (1, 5, 5), True),
        (True, (0, 2, 2), (0, 1, 1), False),  # was together before the shift, not after
        (True, (0, 0, 0), (0, 1, 1), True),  # wrapped window: same region [0:2, 0:2]
        (True, (0, 0, 0), (0, 7, 7), False),  # same rolled window, other region: masked
        (True, (0, 0, 0), (0, 0, 7), False),
    ],
)
def test_block_sees_only_its_window(shifted, query, touched, changes):
    assert _block_output_changes(shifted, query, touched) is changes


def test_shift_mask_only_on_boundary_windows():
    mask = window_attention_mask((2, 8, 8), (2, 4, 4), (0, 2, 2), torch.device("cpu"))
    assert mask.shape == (4, 32, 32)
    assert (mask[0] == 0).all()  # interior window: no region boundary
    assert (mask[3] == MASKED).any()
    assert (mask.diagonal(dim1=1, dim2=2) == 0).all()  # a token always sees itself
    assert window_attention_mask((2, 8, 8), (2, 4, 4), (0, 0, 0), torch.device("cpu")) is None


def test_padding_tokens_are_masked_as_keys():
    """Map of width 6 with window 4 is padded to 8: the last two columns of the second window are padding."""
    mask = window_attention_mask((1, 1, 6), (1, 1, 4), (0, 0, 0), torch.device("cpu"))
    assert (mask[0] == 0).all()
    assert (mask[1][:, :2] == 0).all()
    assert (mask[1][:2, 2:] == MASKED).all()
    assert mask[1][2, 2] == 0 and mask[1][3, 3] == 0  # padded queries keep themselves (no empty rows)


def test_padded_map_matches_unpadded_content():
    """A 6-wide map (padded to 8 inside) gives the same outputs as attending within explicit windows."""
    torch.manual_seed(0)
    block = SwinBlock3D(dim=8, num_heads=2, window_size=(1, 1, 4), shifted=False).eval()
    torch.nn.init.normal_(block.attn.relative_position_bias_table)
    x = torch.randn(1, 1, 1, 6, 8)
    with torch.no_grad():
        full = block(x)
        tail = block(x[:, :, :, 4:])  # 2-wide map: the window is clipped to 2, nothing padded
    # the bias for offsets within 2 tokens is the same in both, and padding keys contribute nothing
    torch.testing.assert_close(full[:, :, :, 4:], tail, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------------
# Relative-position bias when the window is clipped
# --------------------------------------------------------------------------------------------------------


def test_clipped_window_uses_bias_of_the_true_offsets():
    torch.manual_seed(0)
    attn = WindowAttention3D(dim=8, num_heads=2, window_size=(2, 7, 7))
    torch.nn.init.normal_(attn.relative_position_bias_table)
    full = attn.attention_bias((2, 7, 7), torch.float32)
    small = attn.attention_bias((2, 3, 3), torch.float32)
    coords_small = [(d, h, w) for d in range(2) for h in range(3) for w in range(3)]
    index_full = {(d, h, w): (d * 7 + h) * 7 + w for d in range(2) for h in range(7) for w in range(7)}
    for i, a in enumerate(coords_small):
        for j, b in enumerate(coords_small):
            torch.testing.assert_close(small[:, i, j], full[:, index_full[a], index_full[b]])
    # upstream's slice of the full index [:N, :N] pairs up different offsets once H/W are clipped
    upstream = relative_position_index((2, 7, 7), (2, 7, 7))[:18, :18]
    assert not torch.equal(upstream, relative_position_index((2, 3, 3), (2, 7, 7)))
    # ... but agrees when only the depth is clipped
    torch.testing.assert_close(
        relative_position_index((8, 7, 7), (8, 7, 7))[:98, :98], relative_position_index((2, 7, 7), (8, 7, 7))
    )


def test_bias_cache_follows_in_place_updates(swin):
    model = copy.deepcopy(swin)
    x = torch.randn(1, 3, 2, 64, 64)
    with torch.no_grad():
        before = model(x)
        for block in model.layers[0].blocks:
            block.attn.relative_position_bias_table.add_(0.5)
        after = model(x)
        fresh = copy.deepcopy(model)
        for module in fresh.modules():
            if isinstance(module, WindowAttention3D):
                module._bias_cache.clear()
        torch.testing.assert_close(after, fresh(x))
    assert not torch.allclose(before, after)


# --------------------------------------------------------------------------------------------------------
# Implementations and training features
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("train", [False, True])
def test_sdpa_and_eager_agree(swin, train):
    eager = tiny_swin(attn_impl="eager")
    eager.load_state_dict(swin.state_dict())
    sdpa = copy.deepcopy(swin)
    eager.train(train)
    sdpa.train(train)
    x = torch.randn(2, 3, 3, 96, 96)
    with torch.set_grad_enabled(train):
        torch.testing.assert_close(sdpa(x), eager(x), rtol=1e-4, atol=1e-4)


def test_gradient_checkpointing_gives_same_gradients():
    plain, ckpt = tiny_swin(), tiny_swin(use_checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 2, 64, 64)
    grads = []
    for model in (plain, ckpt):
        model(x).square().mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert all(g is not None for g in grads[0].values())
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-6)


def test_training_after_inference_mode():
    """Caches filled under torch.inference_mode() must not poison a later training step."""
    swin = tiny_swin(depths=(2, 1, 1, 1))
    x = torch.randn(1, 3, 7, 64, 160)  # a geometry no other test uses: the caches are built here
    with torch.inference_mode():
        swin.eval()(x)
    swin.train()(x).square().mean().backward()
    assert swin.layers[0].blocks[1].attn.relative_position_bias_table.grad is not None


def test_drop_path_only_in_training():
    swin = tiny_swin(drop_path_rate=0.5)
    x = torch.randn(4, 3, 1, 32, 32)
    swin.eval()
    with torch.no_grad():
        torch.testing.assert_close(swin(x), swin(x))
        torch.manual_seed(1)
        swin.train()
        a = swin(x)
        torch.manual_seed(2)
        b = swin(x)
    assert not torch.allclose(a, b)


def test_reference_parameter_names():
    names = set(tiny_swin(depths=(2, 1, 1, 1)).state_dict())
    for key in (
        "patch_embed.proj.weight",
        "patch_embed.norm.weight",
        "layers.0.blocks.1.norm1.weight",
        "layers.0.blocks.1.attn.qkv.weight",
        "layers.0.blocks.1.attn.proj.bias",
        "layers.0.blocks.1.attn.relative_position_bias_table",
        "layers.0.blocks.1.norm2.bias",
        "layers.0.blocks.1.mlp.fc1.weight",
        "layers.0.blocks.1.mlp.fc2.weight",
        "layers.2.downsample.reduction.weight",
        "layers.2.downsample.norm.weight",
        "norm.weight",
    ):
        assert key in names, key
    assert not any("relative_position_index" in n or "layers.3.downsample" in n for n in names)


@pytest.mark.parametrize("stem_convs", [1, 2])
def test_conv_stem_keeps_the_patch_grid_and_learns(stem_convs):
    """Early convolutions before an 8x8 patch projection: same token grid as the plain stem, every stem
    parameter trained, temporal mixing still in the projection (a change in frame 1 reaches token 0)."""
    plain = tiny_swin(depths=(1, 1), num_heads=(1, 2), patch_size=(2, 8, 8))
    swin = tiny_swin(depths=(1, 1), num_heads=(1, 2), patch_size=(2, 8, 8), stem_convs=stem_convs)
    x = torch.randn(2, 3, 3, 64, 64)
    out = swin(x)
    assert out.shape == plain(x).shape == (2, 3, 4, 4, 48)
    out.square().mean().backward()
    stem = [n for n, p in swin.named_parameters() if n.startswith("patch_embed.stem.")]
    assert len(stem) == 4 * stem_convs  # conv weight and bias, norm weight and bias per layer
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in swin.parameters() if p.requires_grad)
    assert swin.patch_embed.proj.kernel_size == (2, 8 // 2**stem_convs, 8 // 2**stem_convs)
    y = x.clone()
    y[:, :, 1] += 1.0
    with torch.no_grad():
        assert not torch.allclose(swin(x)[:, 0], swin(y)[:, 0])


def test_conv_stem_needs_a_divisible_patch():
    with pytest.raises(ValueError, match="not divisible"):
        tiny_swin(patch_size=(2, 4, 4), stem_convs=3)
