"""AdamW parameter groups (decay by module type / shape, swin lr multiplier) and the lr schedule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lib.engine.config import Config
from lib.engine.optim import build_optimizer, build_scheduler, param_groups, warmup_linear_factor


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv3d(3, 4, kernel_size=(1, 2, 2))
        self.norm1 = nn.LayerNorm(4)  # a Swin-style norm: the reference (name rule) decays it, we do not
        self.scale = nn.Parameter(torch.ones(4))  # 1-D, not called bias


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc_img = nn.Module()
        self.enc_img.swin = Backbone()
        self.emb = nn.Embedding(10, 4)
        self.LayerNorm = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def groups_by_name(model: nn.Module, **kw) -> dict[str, dict]:
    return {g["name"]: g for g in param_groups(model, **kw)}


def test_groups_split_by_module_type_shape_and_swin_prefix():
    groups = groups_by_name(Model(), lr=1e-4, weight_decay=0.01, vis_lr_mul=3.0)
    names = {k: sorted(g["param_names"]) for k, g in groups.items()}
    assert names == {
        "swin_decay": ["enc_img.swin.proj.weight"],
        "swin_no_decay": ["enc_img.swin.norm1.bias", "enc_img.swin.norm1.weight", "enc_img.swin.proj.bias",
                          "enc_img.swin.scale"],
        "decay": ["emb.weight", "fc.weight"],
        "no_decay": ["LayerNorm.bias", "LayerNorm.weight", "fc.bias"],
    }  # fmt: skip
    assert [groups[k]["weight_decay"] for k in names] == [0.01, 0.0, 0.01, 0.0]
    assert [groups[k]["lr"] for k in names] == [pytest.approx(3e-4), pytest.approx(3e-4), 1e-4, 1e-4]


def test_build_optimizer_uses_config_betas_lr_decay():
    cfg = Config({"lr": 2e-4, "decay": 0.05, "vis_backbone_lr_mul": 0.5})
    opt = build_optimizer(Model(), cfg)
    assert isinstance(opt, torch.optim.AdamW)
    assert {g["name"]: (g["lr"], g["weight_decay"], g["betas"]) for g in opt.param_groups} == {
        "swin_decay": (1e-4, 0.05, (0.9, 0.98)),
        "swin_no_decay": (1e-4, 0.0, (0.9, 0.98)),
        "decay": (2e-4, 0.05, (0.9, 0.98)),
        "no_decay": (2e-4, 0.0, (0.9, 0.98)),
    }
    n_trainable = sum(p.numel() for p in Model().parameters() if p.requires_grad)
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == n_trainable


def test_schedule_values_warmup_then_linear_to_zero():
    assert [warmup_linear_factor(s, 10, 3) for s in range(10)] == pytest.approx(
        [1 / 3, 2 / 3, 1.0, 1.0, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7]
    )
    model = Model()
    opt = build_optimizer(model, Config({"lr": 1.0, "vis_backbone_lr_mul": 0.1}))
    sched = build_scheduler(opt, total_steps=20, warmup_ratio=0.1)  # 2 warm-up steps
    seen = []
    for _ in range(20):
        seen.append({g["name"]: g["lr"] for g in opt.param_groups})
        opt.step()
        sched.step()
    assert [s["decay"] for s in seen] == pytest.approx([0.5, 1.0] + [(20 - s) / 18 for s in range(2, 20)])
    assert [s["swin_decay"] for s in seen] == pytest.approx([0.1 * s["decay"] for s in seen])
    assert opt.param_groups[0]["lr"] == 0.0  # after the last step
    restored = build_scheduler(build_optimizer(Model(), Config({"lr": 1.0})), 20, 0.1)
    restored.load_state_dict(sched.state_dict())
    assert restored.get_last_lr() == pytest.approx(sched.get_last_lr())


def test_build_optimizer_fuses_on_cpu_and_steps_like_the_per_tensor_loop():
    cfg = Config({"lr": 1e-2, "decay": 0.05})
    models = [Model(), Model()]
    models[1].load_state_dict(models[0].state_dict())
    fused = build_optimizer(models[0], cfg)
    assert fused.defaults["fused"] is True
    loop = torch.optim.AdamW(param_groups(models[1], cfg.lr, cfg.decay), betas=(0.9, 0.98), eps=1e-8)
    x = torch.randn(3, 4)
    for _ in range(3):
        for model, opt in zip(models, (fused, loop)):
            opt.zero_grad()
            (model.fc(model.emb.weight[:3] + x).square().sum() + model.enc_img.swin.scale.sum()).backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.allclose(a, b, atol=1e-6)
