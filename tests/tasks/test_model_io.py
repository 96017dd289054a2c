"""Building the run's model from the config (lib.tasks.build): frozen parameters and fusion dropout."""

from __future__ import annotations

import json

import pytest
import torch

from lib.engine.config import ConfigError, load_config
from lib.engine.optim import build_optimizer
from lib.model.bert import BertSelfAttention
from lib.tasks.build import build_model

VOCAB_MATRICES = ["enc_txt.emb_txt.word_embeddings", "fc_mtm.predictions.decoder.weight"]


def test_freeze_params_leaves_matching_parameters_out_of_training(tiny_args, tokenizer):
    cfg = load_config([*tiny_args, "--freeze_params", json.dumps(VOCAB_MATRICES)])
    model = build_model(cfg, tokenizer)
    always = {
        n for n, p in build_model(load_config(tiny_args), tokenizer).named_parameters() if not p.requires_grad
    }
    assert always == {"enc_img.emb_odr", "emb_task"}  # VIOLET's frame order; task tokens not enabled
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad} - always
    assert frozen == {"enc_txt.emb_txt.word_embeddings.weight", "fc_mtm.predictions.decoder.weight"}
    trained = {id(p) for group in build_optimizer(model, cfg).param_groups for p in group["params"]}
    assert not any(id(p) in trained for n, p in model.named_parameters() if n in frozen)
    assert model.fc_mtm.predictions.bias.requires_grad  # the decoder's bias is another parameter

    before = model.enc_txt.emb_txt.word_embeddings.weight.clone()
    optimizer = build_optimizer(model, cfg)
    ids = torch.tensor([[101, 2054, 103, 102]])
    model(torch.zeros(1, 4, 3, 64, 64, dtype=torch.uint8), ids, torch.ones_like(ids)).sum().backward()
    optimizer.step()
    assert torch.equal(model.enc_txt.emb_txt.word_embeddings.weight, before)

    with pytest.raises(ConfigError, match="enc_txt.word_embedding"):
        build_model(load_config([*tiny_args, "--freeze_params", '["enc_txt.word_embedding"]']), tokenizer)


def test_txt_layers_puts_that_many_text_backbone_layers_before_the_fusion(tiny_args, tokenizer):
    assert build_model(load_config(tiny_args), tokenizer).enc_txt.txt_trsfr is None  # embeddings only
    model = build_model(load_config([*tiny_args, "--txt_backbone_embed_only", "false", "--txt_layers", "1"]))
    assert model.config.text_layers == 1 and len(model.enc_txt.txt_trsfr.layer) == 1
    assert len(model.trsfr.layer) == 2  # fusion_layers unchanged
    text, fusion = model.enc_txt.txt_trsfr.layer[0].state_dict(), model.trsfr.layer[0].state_dict()
    # both start as MiniLM's layer 0
    assert text.keys() == fusion.keys() and all(torch.equal(text[k], fusion[k]) for k in text)
    ids = torch.tensor([[101, 2054, 103, 102]])
    with torch.no_grad():
        assert not torch.equal(model.enc_txt(ids), model.enc_txt.emb_txt(ids))  # the layer runs
    with pytest.raises(ConfigError, match="txt_layers"):
        build_model(load_config([*tiny_args, "--txt_backbone_embed_only", "false", "--txt_layers", "0"]))
    with pytest.raises(ConfigError, match="txt_backbone_embed_only false"):
        build_model(load_config([*tiny_args, "--txt_layers", "1"]))  # would be ignored: an error instead


def test_fusion_dropout_overrides_the_bert_folder(tiny_args, tokenizer):
    default = build_model(load_config(tiny_args), tokenizer)
    assert default.config.hidden_dropout == 0.1  # all-MiniLM-L6-v2's config.json
    model = build_model(load_config([*tiny_args, "--fusion_dropout", "0", "--vis_drop_path", "0"]), tokenizer)
    assert model.config.hidden_dropout == model.config.attention_dropout == 0.0
    drops = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and set(drops) == {0.0}
    assert {m.dropout for m in model.modules() if isinstance(m, BertSelfAttention)} == {0.0}
    model.train()  # no dropout (nor stochastic depth): two training-mode passes agree
    ids = torch.tensor([[101, 2054, 103, 102]])
    video = torch.zeros(1, 4, 3, 64, 64, dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(model(video, ids, ids > 0), model(video, ids, ids > 0))
    with pytest.raises(ConfigError, match="fusion_dropout"):
        build_model(load_config([*tiny_args, "--fusion_dropout", "1.5"]), tokenizer)


def test_demo_geometry_keys_reach_the_model_and_its_saved_config(tiny_args, tokenizer, tmp_path):
    """vis_patch_size / vis_stem_convs / video_attends_text build that model, and a checkpoint folder
    rebuilds the same architecture (an older config.json without them means the reference layout)."""
    from lib.model.checkpoint import MODEL_CONFIG, save_model_dir
    from lib.model.lavender import LavenderConfig

    args = [*tiny_args, "--vis_patch_size", "[2, 8, 8]", "--vis_stem_convs", "2", "--vis_depths",
            "[1, 1, 1]", "--vis_heads", "[1, 2, 4]", "--video_attends_text", "false"]  # fmt: skip
    model = build_model(load_config(args), tokenizer)
    assert model.config.swin_patch_size == (2, 8, 8) and model.config.swin_stem_convs == 2
    assert model.config.video_attends_text is False
    feat, _ = model.encode_video(torch.zeros(1, 4, 3, 64, 64, dtype=torch.uint8))
    assert feat.shape[1] == 4 * (1 + 2 * 2)  # 64 px / (8 * 2 * 2) = 2x2 patches + [CLS] per frame
    folder = save_model_dir(model, tmp_path / "model")
    assert LavenderConfig.from_json(folder / MODEL_CONFIG) == model.config
    old = model.config.to_dict()
    for key in ("swin_patch_size", "swin_stem_convs", "video_attends_text"):
        old.pop(key)
    legacy = LavenderConfig.from_dict(old)
    assert (legacy.swin_patch_size, legacy.swin_stem_convs, legacy.video_attends_text) == ((2, 4, 4), 0, True)
