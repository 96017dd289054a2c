"""Contrastive alignment: InfoNCE over ranks with gradients, hard negatives, shortlists, two-stage merging."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gloo_ranks import run_two_ranks

from lib.model.contrastive import ContrastiveHead, info_nce, sample_hard_negatives
from lib.model.shortlist import dual_softmax, merge_rerank, top_k, two_stage


def brute_info_nce(video: torch.Tensor, text: torch.Tensor, temp: float) -> torch.Tensor:
    """The textbook loss, one row at a time."""
    losses = []
    for i in range(len(video)):
        v2t = torch.stack([video[i] @ t for t in text]) / temp
        t2v = torch.stack([text[i] @ v for v in video]) / temp
        losses.append((-v2t.log_softmax(0)[i] - t2v.log_softmax(0)[i]) / 2)
    return torch.stack(losses).mean()


def test_info_nce_is_the_symmetric_cross_entropy_of_matched_rows():
    g = torch.Generator().manual_seed(0)
    video = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    text = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    out = info_nce(video, text, torch.tensor(0.07))
    assert out["loss"].item() == pytest.approx(brute_info_nce(video, text, 0.07).item(), rel=1e-6)
    aligned = info_nce(video, video, torch.tensor(0.07))
    assert aligned["loss"] < out["loss"] and aligned["acc"] == 1.0


def test_the_temperature_is_clamped_as_alpro():
    head = ContrastiveHead(16, 8, temp=0.07)
    with torch.no_grad():
        head.temp.fill_(5.0)
    assert head.temperature().item() == pytest.approx(0.5)
    with torch.no_grad():
        head.temp.fill_(-1.0)
    assert head.temperature().item() == pytest.approx(0.001)


def test_hard_negatives_never_pick_the_match_and_follow_the_similarity():
    sim = torch.tensor([[9.0, 8.0, -9.0], [0.0, 9.0, 8.5], [-9.0, 7.0, 9.0]])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_hard_negatives(sim, g) for _ in range(200)])
    assert (draws != torch.arange(3)).all()
    assert (draws[:, 0] == 1).float().mean() > 0.95  # row 0: the similar other, not the dissimilar one
    assert (draws[:, 2] == 1).float().mean() > 0.95


GATHER_SCRIPT = """
import json, sys
import torch
import torch.nn.functional as F
from lib.engine import distributed as D
from lib.model.contrastive import ContrastiveHead, info_nce

out = sys.argv[1]
D.init_distributed(force_process_group=True)
rank, world = D.get_rank(), D.get_world_size()
torch.manual_seed(0)
head = ContrastiveHead(12, 6)
feats = torch.randn(2 * world * 2, 12).double()  # 2B video rows then 2B text rows, B = 2 per rank
head = head.double()
B = 2
def local_rows(x):  # rank r holds rows r*B .. r*B + B - 1 of each modality
    return x[rank * B : rank * B + B]
video_all, text_all = feats[: B * world], feats[B * world :]
video, text = local_rows(video_all).requires_grad_(), local_rows(text_all).requires_grad_()
out_local = info_nce(head.video(video), head.text(text), head.temperature())
out_local["loss"].backward()
grads = {n: p.grad.clone() for n, p in head.named_parameters()}
for g in grads.values():  # DDP's average over ranks
    torch.distributed.all_reduce(g)
    g /= world
loss = torch.tensor([out_local["loss"].item()]).double()
torch.distributed.all_reduce(loss)
result = {"loss": loss.item() / world, "grads": {n: g.tolist() for n, g in grads.items()},
          "video_grad": (video.grad / world).tolist()}
torch.distributed.destroy_process_group()
if rank == 0:  # one process holding every rank's rows
    head.zero_grad()
    v, t = video_all.clone().requires_grad_(), text_all.clone().requires_grad_()
    single = info_nce(head.video(v), head.text(t), head.temperature())
    single["loss"].backward()
    result["single_loss"] = single["loss"].item()
    result["single_grads"] = {n: p.grad.tolist() for n, p in head.named_parameters()}
    result["single_video_grad"] = v.grad.tolist()
json.dump(result, open(f"{out}/rank{rank}.json", "w"))
"""


@pytest.mark.distributed
def test_two_gloo_ranks_of_b_equal_one_rank_of_2b_in_loss_and_gradients(tmp_path):
    ranks = run_two_ranks(GATHER_SCRIPT, tmp_path)
    zero = ranks[0]
    assert zero["loss"] == pytest.approx(zero["single_loss"], abs=1e-6)
    for name, grad in zero["single_grads"].items():
        for r in ranks:  # every rank ends the step with the same (averaged) gradient
            assert np.allclose(r["grads"][name], grad, atol=1e-6), name
    # a rank's rows get the gradient of every rank's loss (through the gather): / world, the single one's
    single = np.array(zero["single_video_grad"])
    for r, result in enumerate(ranks):
        assert np.allclose(result["video_grad"], single[2 * r : 2 * r + 2], atol=1e-6)


def test_top_k_equals_a_brute_force_shortlist():
    g = torch.Generator().manual_seed(1)
    queries, gallery = torch.randn(7, 5, generator=g), torch.randn(40, 5, generator=g)
    ids, sims = top_k(queries, gallery, 6, index="torch", chunk=3)
    brute = (queries @ gallery.T).numpy()
    for q in range(7):
        assert set(ids[q]) == set(np.argsort(-brute[q])[:6])
        assert np.allclose(sims[q], np.sort(brute[q])[::-1][:6], atol=1e-5)


def test_two_stage_with_k_equal_to_the_gallery_ranks_by_the_fine_scores_alone():
    rng = np.random.default_rng(0)
    coarse, fine = rng.normal(size=(5, 9)), rng.normal(size=(5, 9))
    merged, n_pairs = two_stage(coarse, 9, lambda rows, cols: fine[rows, cols])
    assert n_pairs == 45
    assert (np.argsort(-merged, axis=1) == np.argsort(-fine, axis=1)).all()


def test_two_stage_puts_the_reranked_shortlist_above_the_rest_in_its_fine_order():
    coarse = np.array([[0.9, 0.8, 0.7, 0.1, 0.0]])
    fine = np.array([[-5.0, 0.0, 3.0, 100.0, 100.0]])  # the last two are not shortlisted (k = 3)
    merged, n_pairs = two_stage(coarse, 3, lambda rows, cols: fine[rows, cols])
    assert n_pairs == 3
    assert list(np.argsort(-merged[0])) == [2, 1, 0, 3, 4]
    tied = merge_rerank(coarse, np.array([[0, 1]]), np.array([[1.0, 1.0]]))
    assert tied[0, 0] == tied[0, 1] > tied[0, 2]  # ties stay ties


def test_dual_softmax_reweights_each_video_column():
    sim = np.array([[0.9, 0.2], [0.8, 0.9]])
    out = dual_softmax(sim, temp=0.1)
    assert out.shape == sim.shape
    assert out[1, 1] > out[0, 1] and out[0, 0] > out[1, 0]


def test_the_faiss_index_finds_the_same_shortlists_as_torch():
    pytest.importorskip("faiss", reason="faiss-cpu: an optional extra (pip install .[fast]; dev has it)")
    g = torch.Generator().manual_seed(2)
    queries = F.normalize(torch.randn(20, 16, generator=g), dim=-1)
    gallery = F.normalize(torch.randn(300, 16, generator=g), dim=-1)
    exact, exact_sims = top_k(queries, gallery, 8, index="torch")
    found, sims = top_k(queries, gallery, 8, index="faiss")
    assert all(set(a) == set(b) for a, b in zip(exact, found))
    assert np.allclose(np.sort(sims, axis=1), np.sort(exact_sims, axis=1), atol=1e-5)
