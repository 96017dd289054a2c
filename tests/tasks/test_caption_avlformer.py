"""AVLFormer's captioning extras (lib.tasks.caption): the LM + MLM loss, the learned sparse mask's L1 loss,
and long paragraphs (300-token captions, 115 decoded tokens with the key/value cache)."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from quick_training import freeze_for_speed

from lib.engine.config import ConfigError, load_config
from lib.model import layouts
from lib.model.layouts import IGNORE_INDEX
from lib.tasks.build import build_model, context_tokens
from lib.tasks.caption import CaptionTask
from lib.tasks.decode import generate


def task_and_model(tiny_args, tokenizer, *extra: str) -> tuple[CaptionTask, torch.nn.Module]:
    cfg = load_config([*tiny_args, "--type", "captioning", "--task", "demo-captioning", *extra])
    torch.manual_seed(0)
    return CaptionTask(cfg, tokenizer), build_model(cfg, tokenizer)


def first_items(task: CaptionTask, n: int = 4) -> list[dict]:
    stream = task.train_stream()
    return [stream.dataset[i] for i in range(n)]


def batch_of(task: CaptionTask, items: list[dict], seed: int = 0) -> dict:
    random.seed(seed)
    torch.manual_seed(seed)
    return task.collate_train(items)


def test_the_lm_layout_labels_each_position_with_the_next_token(tokenizer):
    layout = layouts.caption_lm(tokenizer, ["a dog runs", "a cat"], 8)
    assert layout.attn == "seq2seq" and layout.task == "cap"
    for row in range(2):
        n = int(layout.mask[row].sum())
        assert layout.labels[row, : n - 1].tolist() == layout.ids[row, 1:n].tolist()  # up to [SEP]
        assert (layout.labels[row, n - 1 :] == IGNORE_INDEX).all()  # [SEP] and padding predict nothing
    assert (layout.ids != tokenizer.mask_token_id).all()  # the text as it is


def test_lm_plus_mlm_is_the_weighted_sum_of_the_two_cross_entropies(tiny_args, tokenizer):
    task, model = task_and_model(
        tiny_args, tokenizer, "--caption_loss", "lm+mlm", "--caption_lm_weight", "0.3"
    )
    model.eval()
    batch = batch_of(task, first_items(task))
    lm, mlm = batch["lm_layout"], batch["layout"]
    with torch.no_grad():
        out = task.step(model, batch)
        by_hand = []
        for layout in (lm, mlm):  # the head on every position of a plain forward pass, picked by hand
            logits = model(batch["video"], layout.ids, layout.mask, attn="seq2seq", task="cap")
            kept = layout.labels != IGNORE_INDEX
            by_hand.append(F.cross_entropy(logits[kept], layout.labels[kept]))
    assert out["lm_loss"].item() == pytest.approx(by_hand[0].item(), rel=1e-5)
    assert out["mlm_loss"].item() == pytest.approx(by_hand[1].item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx((0.3 * by_hand[0] + 0.7 * by_hand[1]).item(), rel=1e-5)
    lm_only, _ = task_and_model(tiny_args, tokenizer, "--caption_loss", "lm")
    assert "layout" not in batch_of(lm_only, first_items(lm_only)) and "layout" in batch


def test_the_sparse_mask_adds_its_weighted_l1_loss_under_its_own_name(tiny_args, tokenizer):
    task, model = task_and_model(
        tiny_args, tokenizer, "--sparse_mask", "true", "--sparse_mask_weight", "0.25"
    )
    model.eval()
    assert model.config.sparse_mask_tokens == context_tokens(model, task.cfg) == 4 * (1 + 2 * 2)
    batch = batch_of(task, first_items(task))
    with torch.no_grad():
        out = task.step(model, batch)
        feat, mask = model.encode_video(batch["video"])
        from lib.model.mlm import masked_token_loss

        mlm = masked_token_loss(model, feat, mask, batch["layout"])["loss"]
        l1 = model.sparse_mask.sparsity_loss()
    assert out["sparse_loss"].item() == pytest.approx(l1.item())
    assert out["loss"].item() == pytest.approx((mlm + 0.25 * l1).item(), rel=1e-6)


def test_with_the_options_off_the_model_and_loss_are_bit_identical(tiny_args, tokenizer):
    """Keys given at their defaults build the very model the config without them builds."""
    plain_task, plain = task_and_model(tiny_args, tokenizer)
    task, model = task_and_model(
        tiny_args, tokenizer, "--sparse_mask", "false", "--caption_loss", "mlm", "--sparse_mask_hard", "false"
    )
    assert model.sparse_mask is None and model.config == plain.config
    state, plain_state = model.state_dict(), plain.state_dict()
    assert state.keys() == plain_state.keys() and all(torch.equal(state[k], plain_state[k]) for k in state)
    items = first_items(task)
    plain.eval(), model.eval()
    with torch.no_grad():
        a = plain_task.step(plain, batch_of(plain_task, items))
        b = task.step(model, batch_of(task, items))
    assert a.keys() == b.keys() == {"loss", "acc"} and torch.equal(a["loss"], b["loss"])


def test_option_errors_name_the_key(tiny_args, tokenizer):
    with pytest.raises(ConfigError, match="caption_loss"):
        task_and_model(tiny_args, tokenizer, "--caption_loss", "lm-mlm")
    with pytest.raises(ConfigError, match="caption_lm_weight"):
        task_and_model(tiny_args, tokenizer, "--caption_lm_weight", "1.5")
    with pytest.raises(ConfigError, match="sparse_mask_hard"):
        task_and_model(tiny_args, tokenizer, "--sparse_mask_hard", "true")


@pytest.mark.parametrize(
    "option",
    [("--caption_loss", "lm"), ("--caption_loss", "lm+mlm"), ("--sparse_mask", "true")],
    ids=["lm", "lm+mlm", "sparse_mask"],
)
def test_a_few_steps_on_one_batch_lower_the_loss(tiny_args, tokenizer, option):
    task, model = task_and_model(tiny_args, tokenizer, *option)
    optimizer = torch.optim.AdamW(freeze_for_speed(model), lr=1e-3, weight_decay=0.0)
    items = first_items(task)
    losses, sparse = [], []
    for step in range(15):
        out = task.step(model, batch_of(task, items, seed=step))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
        sparse.append(out.get("sparse_loss", torch.zeros(())).item())
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3
    if option[0] == "--sparse_mask":
        assert sparse[-1] < sparse[0]  # the L1 term pulls the off-diagonal mask down


def test_an_lm_captioner_reads_the_next_word_at_its_last_word_with_and_without_the_cache(
    tiny_args, tokenizer
):
    task, model = task_and_model(tiny_args, tokenizer, "--caption_loss", "lm")
    assert CaptionTask.inference_entry(task.cfg, task)["read"] == "last"
    assert "read" not in CaptionTask.inference_entry(task_and_model(tiny_args, tokenizer)[0].cfg)
    model.eval()
    batch = batch_of(task, first_items(task, 2))
    with torch.no_grad():
        feat, mask = model.encode_video(batch["video"])
        for beam in (1, 2):
            cached = generate(model, tokenizer, feat, mask, beam, 6, read="last")
            again = generate(model, tokenizer, feat, mask, beam, 6, read="last", cache=False)
            assert [c.ids for c in cached] == [c.ids for c in again]
            first = F.log_softmax(model(batch["video"], batch["lm_layout"].ids[:, :1], torch.ones(2, 1,
                                  dtype=torch.long), attn="seq2seq", task="cap")[:, 0], -1)  # fmt: skip
            if beam == 1:  # the first word is the arg-max at [CLS] (no [MASK] appended)
                first[:, [tokenizer.cls_token_id, tokenizer.pad_token_id, tokenizer.mask_token_id]] = -1e9
                assert [c.ids[0] for c in cached] == first.argmax(-1).tolist()


# ---------------------------------------------------------------------------------- long paragraphs (FAVD)


def test_a_300_token_paragraph_trains_and_115_tokens_decode_with_the_cache(tiny_args, tokenizer):
    """FAVD's geometry (size_txt 300, max_gen_length 115) with every AVLFormer option on: MiniLM's 512
    positions hold the paragraph; one training step; greedy decoding runs all 115 steps on the cache and
    gives the captions of recomputation."""
    task, model = task_and_model(
        tiny_args, tokenizer, "--size_txt", "300", "--max_gen_length", "115", "--p_mask", "0.25",
        "--caption_loss", "lm+mlm", "--caption_lm_weight", "0.1", "--sparse_mask", "true",
    )  # fmt: skip
    paragraph = " ".join(f"the red square moves left and the blue circle number {i} stays" for i in range(40))
    items = first_items(task)
    for item in items:
        item["record"] = type(item["record"])(item["record"].video, (paragraph,))
    batch = batch_of(task, items)
    assert batch["layout"].ids.shape == (4, 300) and int(batch["lm_layout"].mask[0].sum()) == 300
    out = task.step(model, batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.sparse_mask.logits.grad is not None
    assert model.enc_txt.emb_txt.position_embeddings.weight.grad[:300].abs().sum() > 0
    model.eval()
    with torch.no_grad():
        model.fc_mtm.predictions.bias[tokenizer.sep_token_id] = -1e4  # never stop early
        feat, mask = model.encode_video(batch["video"][:2])
        predictor = task.make_predictor(model)
        cached = predictor.captions(feat, mask)
        again = generate(model, tokenizer, feat, mask, 1, 115, size_txt=300, cache=False)
    assert [len(c.ids) for c in cached] == [115, 115] and not any(c.finished for c in cached)
    assert [c.ids for c in cached] == [c.ids for c in again]
