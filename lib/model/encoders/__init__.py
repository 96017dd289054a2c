"""Registered encoders: one module per modality, composed by :class:`lib.model.lavender.LavenderModel`.

An encoder turns one modality's input into tokens for the ONE fusion encoder. Each registers itself with
:func:`register_encoder` under its modality name and declares

* ``key_prefix``: the model attribute, and so the checkpoint key prefix, it lives under (``enc_img`` for
  video and ``enc_txt`` for text, LAVENDER's names, so reference checkpoints load unchanged);
* ``role``: ``"context"`` (tokens the text attends to: video, audio, …; ``forward(x, mask=None) ->
  (tokens (B, N, D), valid (B, N) bool)``) or ``"text"`` (``forward(ids, mask, causal) -> (B, L, D)``);
* ``type_embedding``: whether its tokens get a learned modality-type embedding before fusion
  (``emb_type.<modality>``). LAVENDER's video tokens carry their own position / frame embeddings and no
  type embedding, so video registers without one and the reference key layout stays exact; a new modality
  (audio) registers with one, so the fusion encoder can tell its tokens from video's.

A model's context modalities, in the order their tokens enter the fusion, are ``LavenderConfig.modalities``;
an encoder's own options are ``LavenderConfig.encoder_options[modality]`` (a dict the encoder checks).
A new encoder is one new module calling :func:`register_encoder`; built-in ones are listed in
:data:`BUILTIN` and imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

ROLES = ("context", "text")

BUILTIN: dict[str, str] = {
    "video": "lib.model.encoders.video",
    "text": "lib.model.encoders.text",
    "audio": "lib.model.encoders.audio",
}
"""Modality -> module that registers its encoder (imported lazily, on first lookup)."""


@dataclass(frozen=True)
class EncoderSpec:
    """A registered encoder: how to build it from the model config and where it sits in the model."""

    modality: str
    key_prefix: str
    role: str
    type_embedding: bool
    build: Callable[..., nn.Module]


_REGISTRY: dict[str, EncoderSpec] = {}


def register_encoder(
    modality: str, key_prefix: str, *, role: str = "context", type_embedding: bool = True
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: register ``cls(config)`` as the encoder of ``modality``."""
    if role not in ROLES:
        raise ValueError(f"encoder role must be one of {ROLES}, got {role!r}")

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        known = _REGISTRY.get(modality)
        if known is not None and known.build is not cls:
            raise ValueError(f"an encoder for modality {modality!r} is already registered ({known.build})")
        prefixes = {s.key_prefix: s.modality for s in _REGISTRY.values() if s.modality != modality}
        if key_prefix in prefixes:
            raise ValueError(f"key prefix {key_prefix!r} is taken by modality {prefixes[key_prefix]!r}")
        _REGISTRY[modality] = EncoderSpec(modality, key_prefix, role, type_embedding, cls)
        return cls

    return wrap


def encoder_spec(modality: str) -> EncoderSpec:
    """The registered encoder of ``modality`` (built-in ones are imported on first use)."""
    if modality not in _REGISTRY and modality in BUILTIN:
        importlib.import_module(BUILTIN[modality])
    if modality not in _REGISTRY:
        raise KeyError(
            f"no encoder registered for modality {modality!r}; known: {sorted({*BUILTIN, *_REGISTRY})} "
            "(register one with lib.model.encoders.register_encoder)"
        )
    return _REGISTRY[modality]


def encoder_modalities() -> list[str]:
    """Every modality with an encoder (built-in or registered)."""
    return sorted({*BUILTIN, *_REGISTRY})


__all__ = ["BUILTIN", "EncoderSpec", "encoder_modalities", "encoder_spec", "register_encoder"]
