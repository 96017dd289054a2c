"""The learned sparse attention mask (SwinBERT / AVLFormer, lib.model.lavender.LearnedSparseMask): diagonal,
L1 loss, the effective attention of a saturated mask against the hand-built boolean mask, binarisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_lavender import clip, text_batch, tiny_model

from lib.model.lavender import LavenderModel, LearnedSparseMask, fusion_mask

N_VIDEO = 2 * (1 + 2 * 2)  # 2 frames of 64 px: per frame a [CLS] and 2 x 2 patches


def test_the_diagonal_is_one_whatever_the_logits():
    mask = LearnedSparseMask(5)
    with torch.no_grad():
        mask.logits.copy_(torch.linspace(-50, 50, 25).view(5, 5))
    soft = mask.mask()
    assert torch.equal(soft.diagonal(), torch.ones(5))
    off = soft[~torch.eye(5, dtype=torch.bool)]
    assert ((off >= 0) & (off <= 1)).all()
    torch.testing.assert_close(off, torch.sigmoid(mask.logits)[~torch.eye(5, dtype=torch.bool)])


def test_the_sparsity_loss_is_the_mean_of_the_off_diagonal_part():
    mask = LearnedSparseMask(3)
    logits = torch.tensor([[0.0, 1.0, -2.0], [3.0, 4.0, 0.5], [-1.0, 2.0, -5.0]])
    with torch.no_grad():
        mask.logits.copy_(logits)
    s = lambda x: 1 / (1 + torch.exp(torch.tensor(-x)))  # noqa: E731
    hand = (s(1.0) + s(-2.0) + s(3.0) + s(0.5) + s(-1.0) + s(2.0)) / 9  # six off-diagonal terms over 3 x 3
    assert mask.sparsity_loss().item() == pytest.approx(hand.item(), rel=1e-6)
    mask.sparsity_loss().backward()
    assert mask.logits.grad.diagonal().abs().sum() == 0 and mask.logits.grad.abs().sum() > 0


def saturated_model(pattern: torch.Tensor, **kw) -> LavenderModel:
    """A tiny model whose sparse mask logits are +-30 per ``pattern`` (sigmoid 1.0 / ~1e-13 in float32)."""
    model = tiny_model(sparse_mask_tokens=N_VIDEO, **kw)
    with torch.no_grad():
        model.sparse_mask.logits.copy_(torch.where(pattern, 30.0, -30.0))
    return model


def hand_built_fuse(model, feat, vmask, text, tmask, attn, keep, task=None) -> torch.Tensor:
    """One pass over [video ; task token? ; text] with the boolean fusion mask whose video-video block is
    also cut by ``keep`` (its diagonal always kept)."""
    context, cmask = feat, vmask.bool()
    token = model.task_token(task, len(feat))
    if token is not None:
        context, cmask = torch.cat([context, token], 1), F.pad(cmask, (0, 1), value=True)
    allowed = fusion_mask(cmask, tmask.bool(), attn)
    n = allowed.shape[-1]
    allowed = allowed.expand(len(feat), 1, n, n).clone()
    keep = keep | torch.eye(N_VIDEO, dtype=torch.bool)
    allowed[:, :, :N_VIDEO, :N_VIDEO] &= keep
    return model.trsfr(torch.cat([context, text], dim=1), allowed)[:, -text.shape[1] :]


@pytest.mark.parametrize("attn", ["seq2seq", "full"])
@pytest.mark.parametrize("task_token", [False, True])
def test_a_saturated_mask_attends_as_the_hand_built_boolean_mask(attn, task_token):
    pattern = torch.rand(N_VIDEO, N_VIDEO, generator=torch.Generator().manual_seed(3)) < 0.4
    pattern.fill_diagonal_(False)  # the diagonal is 1 even where the logit says 0
    model = saturated_model(pattern, enable_task_token=task_token)
    ids, mask = text_batch()
    with torch.no_grad():
        feat, vmask = model.encode_video(clip())
        vmask = vmask.clone()
        vmask[0, -3:] = False  # padded video tokens stay masked under the learned block
        task = "cap" if task_token else None
        text = model.embed_text(ids, mask, causal=attn == "seq2seq")
        got = model.fuse(feat, vmask, text, mask, attn=attn, task=task)
        want = hand_built_fuse(model, feat, vmask, text, mask, attn, pattern, task)
        plain = hand_built_fuse(model, feat, vmask, text, mask, attn, torch.ones_like(pattern), task)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got - plain).abs().max() > 1e-4  # the learned block does change the outputs


def test_the_hard_mask_is_the_soft_one_binarised_at_one_half():
    model = tiny_model(sparse_mask_tokens=N_VIDEO, sparse_mask_hard=True)
    keep = (model.sparse_mask.mask() >= 0.5).detach()
    ids, mask = text_batch()
    with torch.no_grad():
        feat, vmask = model.encode_video(clip())
        text = model.embed_text(ids, mask, causal=True)
        got = model.fuse(feat, vmask, text, mask, attn="seq2seq")
        want = hand_built_fuse(model, feat, vmask, text, mask, "seq2seq", keep)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_soft_mask_learns_through_the_fusion_and_the_decoding_context():
    """Values near 1 pass a gradient through the fusion (SwinBERT's bias (1 - m) * -10000: at m = 0.5 the pair
    is masked as good as fully and its gradient underflows to 0; the L1 loss still reaches it)."""
    model = tiny_model(sparse_mask_tokens=N_VIDEO).train()
    with torch.no_grad():
        model.sparse_mask.logits.fill_(9.0)  # m = 0.99988: a bias of -1.2
    ids, mask = text_batch()
    feat, vmask = model.encode_video(clip())
    logits = model(clip(), ids, mask, attn="seq2seq")
    (grad,) = torch.autograd.grad(logits.square().mean(), model.sparse_mask.logits)
    assert grad.abs().sum() > 0
    context = model.fusion_context(feat, vmask)  # decoding's once-per-video pass uses the same block
    assert context.states.shape[1] == N_VIDEO


def test_a_context_of_another_size_is_an_error_naming_both_counts():
    model = tiny_model(sparse_mask_tokens=N_VIDEO)
    ids, mask = text_batch()
    with pytest.raises(ValueError, match=f"covers {N_VIDEO} context tokens; this input has 15"):
        model(clip(frames=3), ids, mask, attn="seq2seq")


def test_without_the_mask_the_model_has_no_such_parameter():
    model = tiny_model()
    assert model.sparse_mask is None and model.sparsity_loss() is None
    assert not any(k.startswith("sparse_mask") for k in model.state_dict())
    with pytest.raises(ValueError, match="sparse_mask_hard"):
        tiny_model(sparse_mask_hard=True)
