"""Run configuration as validated data: one schema of every key, JSON files, `--key value` overrides.

Precedence: schema defaults < `--config file.json` (or a bare first argument ending in `.json`)
< `--key value`. Every key has a type (and, for numbers, a valid range: `lr > 0`, `size_batch >= 1`, every
float finite); unknown keys, wrong types and values out of range are errors that name the source and the
key, and list the valid keys. `help_text()` is what `main_*.py --help` prints: every key with its type,
default and help. Multi-task configs carry a `datasets` list of per-task dicts, validated against the
same schema; each task sees `cfg.override(task_dict)` (its keys override the global ones), see
`Config.task_configs()`.

Defaults follow the reference CLI (LAVENDER `utils/args.py`) except where the reference JSON configs all
agree on another value (`vis_backbone_init` "3d", `kinetics` 600, `max_grad_norm` 1.0, `lr` 2e-5). Outputs
go straight into `path_output` (no timestamped sub-folder), so `--resume true` finds the previous run.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import sys
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib.utils.atomic import write_json


class ConfigError(ValueError):
    """A config key or value is invalid; the message names the source and what to do."""


@dataclass(frozen=True)
class Bounds:
    """The valid range of a number (of each item of a list): ``low`` / ``high`` inclusive unless open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return (
            f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        )


AT_LEAST_0, AT_LEAST_1, ABOVE_0 = Bounds(0), Bounds(1), Bounds(0, low_open=True)
UNIT, UNIT_OPEN = Bounds(0, 1), Bounds(0, 1, high_open=True)  # [0, 1] and [0, 1)


@dataclass(frozen=True)
class Key:
    """One config key: its type (a typing expression: `int`, `list[str]`, `str | None`), default, help,
    the allowed values (``choices``) or the valid range of a number (``bounds``; None is always allowed
    where the type allows it)."""

    name: str
    type: Any
    default: Any
    help: str
    choices: tuple | None = None
    bounds: Bounds | None = None


MODALITY_GROUPS = ("tv", "ta", "tva")
"""VALOR's modality groups: the text (t) with video (v), audio (a) or both."""

_IMG_TRANSFORMS = ("img_rand_crop", "img_center_crop", "pad_resize", "vid_rand_crop", "vid_center_crop")

# fmt: off
SCHEMA: tuple[Key, ...] = (
    # ---- task and data
    Key("type", str, "", "a registered task (pretrain, retrieval, qaoe, qamc, captioning, …) or multi-task"),
    Key("task", str, "", "task name, e.g. msrvtt-retrieval, msrvtt-qa, tgif-action, msrvtt-cap"),
    Key("dataset", str | list[str], "", "dataset name (a list for pretraining, e.g. [webvid2.5m, cc3m])"),
    Key("datasets", list[dict], [], "multi-task: per-task dicts whose keys override the global ones"),
    Key("data_dir", str, "./_datasets", "folder holding every dataset"),
    Key("txt_dir", str, "", "folder of the text annotation JSON files ('' = data_dir)"),
    Key("img_tsv_dir", str, "", "folder of the frame TSV files ('' = data_dir)"),
    Key("train_yaml", str, "", "captioning: train split description, relative to data_dir"),
    Key("val_yaml", str, "", "captioning: validation split description, relative to data_dir"),
    Key("test_yaml", str, "", "captioning: test split description, relative to data_dir"),
    Key("data_ratio", float, 1.0, "fraction of the training data to use"),
    Key("n_workers", int, 4, "DataLoader worker processes per rank"),
    # ---- inputs
    Key("size_img", int, 224, "frame side in pixels"),
    Key("size_frame", int, 4, "frames per clip"),
    Key("size_txt", int, 25, "text length in tokens"),
    Key("size_txt_pre", int, 25, "length of the pre-text (prompt) in tokens"),
    Key("size_patch", int, 32, "image patch size (pixels per visual token side)"),
    Key("max_size_frame", int, 6, "frames covered by the temporal position embedding"),
    Key("max_size_patch", int, 14, "patches per side covered by the spatial position embedding"),
    Key("img_transform", list[str], ["img_rand_crop"],
        "training transform (a bare string is read as [string])", _IMG_TRANSFORMS),
    Key("resize_on", str, "auto",
        "where train crops are resized to size_img: worker (the DataLoader), device (the model resizes the "
        "batch; the workers only crop), auto = device when CUDA is available, else worker",
        ("auto", "worker", "device")),
    Key("multi_clip_testing", bool, False, "retrieval: average scores over several clips per video"),
    # ---- task-specific values
    Key("size_vocab", int, -1, "open-ended QA answer vocabulary size (-1 = the whole BERT vocabulary)"),
    Key("size_test", int, 0, "official test-set size used to report accuracy (0 = number of test items)"),
    Key("size_option", int, 5, "multiple choice: options per question"),
    Key("temp", float, 1.0, "temperature of contrastive / retrieval scores"),
    Key("size_part", int, 8, "pretraining: number of shards per dataset"),
    Key("pretrain_tasks", list[str], ["mtm", "vtm"], "pretraining objectives", ("mtm", "vtm")),
    Key("p_mask", float, 0.15, "masking probability for MLM / captioning"),
    Key("enable_task_token", bool, False, "add a learned task token before the text"),
    Key("task_token", str | None, None, "task token used in fine-tuning", ("vtm", "mc", "oe", "cap", None)),
    Key("enable_prompt", bool, False, "prepend a task prompt to the text"),
    Key("mask_pos", str, "append", "where the answer [MASK] goes",
        ("append", "prepend", "insert", "replace")),
    Key("max_gen_length", int, 20, "captioning: maximum generated tokens"),
    Key("attn_mask_type", str, "full", "captioning attention mask", ("full", "seq2seq")),
    Key("reinit_head", bool, False, "QA: re-initialise the answer head"),
    Key("on_bad_item", str, "raise", "annotation item with a missing / malformed video: raise or skip",
        ("raise", "skip")),
    Key("tf_score", str, "prob", "true/false score: 2-way softmax (prob) or the reference's logit ratio",
        ("prob", "ratio")),
    Key("vtm_negatives", int, 3, "retrieval / VTM training: negative captions per video (from its batch)"),
    Key("eval_pair_batch", int, 256, "retrieval evaluation: (text, video) pairs per fusion pass"),
    Key("vtm_negatives_global", bool, False, "pretraining VTM: negatives from all ranks' batches"),
    Key("vtm_negatives_from", str, "batch",
        "retrieval training: matching negatives drawn at random from the batch, or (vtc) ALPRO's hard "
        "negatives sampled from the contrastive similarities (one per video and one per text)",
        ("batch", "vtc")),
    Key("contrastive_dim", int, 0,
        "contrastive head: size of the shared video / text space (ALPRO: 256; 0 = no head)"),
    Key("contrastive_temp", float, 0.07,
        "contrastive head: initial temperature (learned, clamped to [0.001, 0.5])"),
    Key("contrastive_text_pool", str, "cls",
        "contrastive head: a text's [CLS] state (ALPRO, BERT) or the mean of its token states (mean: for "
        "sentence-transformer encoders such as all-MiniLM-L6-v2, whose [CLS] is about the same for any text)",
        ("cls", "mean")),
    Key("vtc_weight", float, 0.0,
        "retrieval training: weight of the contrastive loss (VTC) added to the matching loss (ALPRO: 1)"),
    Key("vtc_gather", bool, True, "contrastive loss: negatives gathered from every rank (with gradients)"),
    Key("pem_prompter", str, "",
        "entity prompts (task pem): the frozen prompter, a checkpoint folder with a contrastive head"),
    Key("pem_entities", str, "", "entity prompts: a list file, one entity per line ('' = from the captions)"),
    Key("pem_n_entities", int, 1000, "entity prompts: most frequent caption words used as entities"),
    Key("pem_threshold", float, 0.2, "entity prompts: pseudo-labels less confident than this are left out"),
    Key("pem_region", list[float], [0.3, 0.5], "entity prompts: region area, a fraction of the frame"),
    Key("retrieval_mode", str, "full",
        "retrieval evaluation: full (every pair through the fusion encoder), dual (dot products of the "
        "contrastive embeddings), rerank (the dual top rerank_k re-scored by the matching head)",
        ("full", "dual", "rerank")),
    Key("rerank_k", int, 16, "retrieval_mode rerank: candidates per query re-scored by the matching head"),
    Key("dual_softmax", bool, False, "retrieval_mode dual / rerank: VALOR's dual softmax of similarities"),
    Key("shortlist_index", str, "auto",
        "top-k search of large galleries: exact torch matrix products, or faiss-cpu (auto: faiss from "
        "lib.model.shortlist.FAISS_MIN_GALLERY videos when installed)", ("auto", "torch", "faiss")),
    Key("embedding_cache", str, "",
        "folder caching retrieval embeddings per (checkpoint, frame TSV, clip settings); '' = off"),
    Key("beam_size", int, 1, "captioning: beam width of decoding (1 = greedy)"),
    Key("caption_eval_backend", str, "auto", "caption metrics: pycocoevalcap (Java), python, or auto",
        ("auto", "pycocoevalcap", "python")),
    Key("caption_val_backend", str | None, None,
        "caption metrics on splits other than test (None = caption_eval_backend); python skips METEOR, whose "
        "Java start-up costs ~15 s per validation pass", ("auto", "pycocoevalcap", "python", None)),
    Key("caption_entity_score", str, "",
        "captioning: also FAVDBench's EntityScore of the test captions, its similarity term from this local "
        "text encoder (a folder, or all-MiniLM-L6-v2 from its PyPI package); '' = off"),
    Key("caption_loss", str, "mlm",
        "captioning loss: masked tokens (mlm, LAVENDER / SwinBERT), next-token prediction at every caption "
        "position under the causal mask (lm; decoding then reads the next word at the last word, not at an "
        "appended [MASK]), or AVLFormer's mix caption_lm_weight * lm + (1 - caption_lm_weight) * mlm; one "
        "MLM head for all", ("mlm", "lm", "lm+mlm")),
    Key("caption_lm_weight", float, 0.5,
        "caption_loss lm+mlm: the LM weight lambda (AVLFormer's default 0.5; its README trains with 0.1)"),
    Key("sparse_mask", bool, False,
        "SwinBERT / AVLFormer: learn a sparse attention mask over the context (video + audio) tokens, sized "
        "for the run's frames, frame size and audio slices (every modality of the model); captioning adds "
        "its L1 loss"),
    Key("sparse_mask_weight", float, 0.5,
        "sparse_mask: weight of its L1 sparsity loss in the captioning loss (AVLFormer loss_sparse_w, "
        "README 0.5)"),
    Key("sparse_mask_hard", bool, False,
        "sparse_mask: binarise the mask at 0.5 (SwinBERT / AVLFormer sparse_mask_soft2hard; the mask then "
        "gets no gradient)"),
    Key("qa_answer_space", str, "candidates", "open-ended QA answers: candidate list or the whole vocabulary",
        ("candidates", "vocab")),
    Key("qa_layout", str, "auto", "open-ended QA input layout", ("auto", "open", "fill_blank")),
    Key("mc_style", str, "auto", "multiple choice: one sequence with all options, or one per option",
        ("auto", "sequence", "retrieval")),
    Key("mc_shifts", int, 1, "one-sequence multiple choice at evaluation: average the option probabilities "
        "over this many cyclic shifts of the option order (1 = the reference's single order; size_option = "
        "every option once at every position)", tuple(range(1, 11))),
    # ---- long-form video (LF-VILA: lib.model.long_form, lib.data.multi_clip)
    Key("vis_temporal_windows", list[int] | None, None,
        "Video Swin HTWA: a temporal window per stage, growing with depth (e.g. [2, 4, 8, 16]; LF-VILA's "
        "6 layers: [2, 4, 8, 16, 16, 32] over 32 frames), spatial shifts only; None = vis_window everywhere"),
    Key("vis_local_window", int, 8,
        "HTWA: the local (clip-level) feature map is the input of the first stage whose temporal window "
        "exceeds this many frames (LF-VILA: 8, its frames per clip)"),
    Key("long_form_dim", int, 0,
        "long-form head: clip / sentence projection size of the temporal contrastive loss (MTC) and "
        "sentence-index embeddings (0 = none; needs vis_temporal_windows)"),
    Key("max_sentences", int, 8, "long-form: sentences of a paragraph (the sentence-index embeddings)"),
    Key("sentence_layers", int, 0,
        "long-form: text layers that run per sentence before the paragraph layers (0 = half of them)"),
    Key("long_clips", int, 4,
        "long-form tasks: consecutive clips per video (LF-VILA: 4); size_frame must be long_clips x "
        "long_frames_per_clip, the frames of one sample"),
    Key("long_frames_per_clip", int, 8, "long-form tasks: frames per clip (LF-VILA: 8, so 32 per sample)"),
    Key("long_sampling", str, "whole",
        "long-form paragraphs: clips spread over the whole video (paragraph retrieval, LF-VILA), or one clip "
        "within each sentence's timestamps (ActivityNet; a row without frame times needs the duration)",
        ("whole", "timestamps")),
    Key("long_size_sentence", int, 50,
        "long-form paragraphs: tokens per sentence with its [CLS] and [SEP] in the dual path (LF-VILA: 50)"),
    Key("long_stage", int, 1,
        "long-form training stage (LF-VILA): 1 = the dual path (global video-paragraph InfoNCE + MTC); 2 = "
        "the MLM head on the fusion ([MASK] matching / answers / class names) with every stage-1 weight "
        "frozen (video encoder, text encoder, contrastive and long-form heads; needs path_ckpt and text "
        "layers: txt_backbone_embed_only false); 0 = both at once, nothing frozen. What is frozen follows "
        "the top-level value of a multi-task config (one model); an entry's value picks its task's losses",
        (0, 1, 2)),
    Key("mtc_weight", float, 0.25, "long-form stage 1: weight of MTC beside global InfoNCE (LF-VILA: 0.25)"),
    Key("mtc_num_key", int, 2, "MTC: query positions (sentences; or clips) per sample (LF-VILA: 2)"),
    Key("mtc_num_value", int, 2, "MTC: candidate positions of the other modality per sample (LF-VILA: 2)"),
    Key("mtc_num_other", int, 3,
        "MTC: extra negatives per sample, each from another sample of any rank's batch (LF-VILA: 3)"),
    Key("long_subtitles", bool, True,
        "long-form multiple-choice QA: append an item's subtitle text (How2QA / VIOLIN) to its question"),
    Key("long_class_prompt", str, "what happens in the video?",
        "long-video classification: the text before the [MASK]s where the class name is predicted"),
    # ---- audio (VALOR's audio branch: lib.data.audio features, lib.model.encoders.audio)
    Key("modalities", list[str], ["video"],
        "context modalities the model fuses, in this order; audio reads each video's row of "
        "PREFIX.audio.tsv beside its frame TSV (_tools/extract_video-frame.py --audio), by video id",
        ("video", "audio")),
    Key("modality_groups", list[str], [],
        "VALOR's modality groups a task uses: t (text) + v (video) and / or a (audio): tv, ta, tva; several "
        "= one task per group (named TASK%group, metrics per group); [] = every modality of the model",
        MODALITY_GROUPS),
    Key("audio_encoder", dict, {},
        "audio encoder options (lib.model.encoders.audio.AudioEncoderConfig: width, depth, heads, mlp_ratio, "
        "patch, max_slices, layer_norm_eps, tokens all|cls); n_mels and slice_frames come from "
        "audio_mel_bins and audio_slice_frames"),
    Key("audio_ckpt", str, "",
        "audio encoder initialisation: the public AST AudioSet checkpoint (audioset_10_10_0.4593.pth, read "
        "with weights_only) or a safetensors file of its tensors; '' = random"),
    Key("audio_rate", int, 22050, "audio sampling rate of the stored audio (VALOR 22050)"),
    Key("audio_mel_bins", int, 64, "audio filterbank mel bins (VALOR 64)"),
    Key("audio_slices", int, 2,
        "filterbank slices per clip, spread over the clip (VALOR: 1 pretraining, 2 fine-tuning, 4-8 long)"),
    Key("audio_slice_frames", int, 512, "filterbank frames (10 ms each) per slice (VALOR 512)"),
    Key("audio_front_end", str, "fbank",
        "the audio encoder's input: VALOR's Kaldi filterbank (fbank), or FAVDBench's PaSST log-mel (passt: "
        "computed at load time from a stored waveform, --audio flac --audio_rate 32000; audio_rate 32000, "
        "audio_mel_bins 128, the first 10 s; sliced like the filterbank)", ("fbank", "passt")),
    # ---- model
    Key("vis_backbone", str, "vidswin", "visual backbone", ("vidswin",)),
    Key("vis_backbone_size", str, "base", "Video Swin size", ("tiny", "small", "base", "large", "custom")),
    Key("vis_backbone_init", str, "3d", "Video Swin initialisation", ("2d", "3d", "random")),
    Key("kinetics", int, 600, "Kinetics variant of the Video Swin weights (-1 = none)", (400, 600, -1)),
    Key("txt_backbone", str, "bert-base-uncased", "text embeddings / tokenizer (name or local folder)"),
    Key("txt_backbone_embed_only", bool, True, "use only the BERT embeddings for text (no text encoder)"),
    Key("txt_layers", int | None, None,
        "text-only BERT layers before the fusion when txt_backbone_embed_only is false (None = all of the "
        "text backbone's; initialised from its first layers)"),
    Key("fusion_encoder", str, "bert-base-uncased", "fusion encoder (name or local folder)"),
    Key("fusion_encoder_rand_init", bool, False, "initialise the fusion encoder randomly"),
    Key("path_ckpt", str, "", "initial weights ('' = backbone initialisation); a missing file is an error"),
    Key("ckpt_partial", bool, False,
        "path_ckpt may lack model tensors or hold tensors the model lacks beyond the allow-list "
        "(lib.tasks.build.CKPT_MAY_LACK): they are reported and keep their initialisation; a checkpoint that "
        "fits less than half of the model is an error even so"),
    Key("vis_backbone_ckpt", str, "",
        "vis_backbone_init 3d/2d: this Video Swin weights file instead of the Kinetics / ImageNet release "
        "file under _models/video_swin_transformer/ (e.g. a Swin trained by the demo)"),
    Key("vis_embed_dim", int | None, None, "custom Video Swin: embedding dim of stage 1"),
    Key("vis_depths", list[int] | None, None, "custom Video Swin: blocks per stage"),
    Key("vis_heads", list[int] | None, None, "custom Video Swin: attention heads per stage"),
    Key("vis_window", list[int] | None, None, "custom Video Swin: window size [T, H, W]"),
    Key("vis_patch_size", list[int] | None, None,
        "custom Video Swin: patch embedding kernel [T, H, W] (None = VIOLET's [2, 4, 4])"),
    Key("vis_stem_convs", int, 0,
        "Video Swin: stride-2 3x3 convolutions before the patch projection (0 = the reference's stem)"),
    Key("vis_drop_path", float, 0.2, "Video Swin stochastic depth of the last block (reference: 0.2)"),
    Key("fusion_dropout", float | None, None,
        "fusion encoder dropout (hidden and attention; None = the BERT folder's, 0.1 for BERT)"),
    Key("video_attends_text", bool, True,
        "fusion: video tokens attend to the text (the reference); false = they attend to video only (the "
        "prefix mask of captioning), so each video is fused once for all its texts (QA, options, pairs)"),
    Key("fusion_hidden_size", int | None, None, "custom fusion encoder: hidden size"),
    Key("fusion_layers", int | None, None, "custom fusion encoder: number of layers"),
    Key("fusion_heads", int | None, None, "custom fusion encoder: attention heads"),
    Key("fusion_intermediate_size", int | None, None, "custom fusion encoder: MLP size"),
    # ---- optimisation
    Key("size_epoch", int, 20, "training epochs (0 = evaluate only)"),
    Key("size_batch", int, 8, "batch size per rank"),
    Key("grad_accum", int, 1, "micro-batches per optimizer step"),
    Key("steps_per_epoch", int, 0, "optimizer steps per epoch (0 = one pass over every stream)"),
    Key("task_sampling", str, "uniform", "multi-task stream choice per step: uniform or by dataset size",
        ("uniform", "size")),
    Key("task_weight", float, 1.0, "multi-task: relative probability that a step trains this task's stream"),
    Key("task_start", float, 0.0,
        "multi-task: fraction of the epochs before this task's stream is first drawn, in [0, 1) (a "
        "curriculum: e.g. a task that needs the others' grounding first)"),
    Key("freeze_params", list[str], [],
        "parameter-name prefixes left untrained, e.g. enc_txt.emb_txt.word_embeddings (each must match)"),
    Key("items_per_video", int, 1,
        "QA training (open-ended, multiple choice): questions of one video per batch slot (its clip "
        "encoded once for all)"),
    Key("lr", float, 2e-5, "peak learning rate"),
    Key("decay", float, 1e-3, "AdamW weight decay (not applied to biases and normalisation weights)"),
    Key("betas", list[float], [0.9, 0.98], "AdamW betas"),
    Key("warmup_ratio", float, 0.1, "fraction of all optimizer steps used for linear warm-up"),
    Key("vis_backbone_lr_mul", float, 1.0, "learning-rate multiplier of parameters named '*swin.*'"),
    Key("max_grad_norm", float, 1.0, "gradient clipping norm (<= 0 disables clipping)"),
    Key("precision", str, "auto",
        "autocast dtype; auto = bf16 (fp16 without bf16) on GPU; on CPU bf16 where native "
        "(AVX-512 BF16 / AMX), else fp32",
        ("fp32", "bf16", "fp16", "auto")),
    Key("use_checkpoint", bool, False, "gradient checkpointing inside the model"),
    Key("find_unused_parameters", bool, False,
        "DDP: allow parameters without gradients in a step (streams using different parts of the model)"),
    Key("deepspeed", bool, False, "train with DeepSpeed ZeRO"),
    Key("deepspeed_config", str, "", "DeepSpeed JSON config ('' = built from the other keys)"),
    Key("zero_stage", int, 1, "DeepSpeed ZeRO stage", (0, 1, 2)),
    Key("max_nan_steps", int, 10, "abort after this many non-finite steps in a row"),
    Key("seed", int, 88, "random seed"),
    # ---- run control and outputs
    Key("path_output", str, "./_snapshot", "output folder: args.json, log.jsonl, checkpoints, model weights"),
    Key("resume", bool | str, False, "true = latest checkpoint in path_output, or a checkpoint folder"),
    Key("eval_only", bool, False, "only evaluate (the weights come from path_ckpt or resume)"),
    Key("eval_every", int, 1, "evaluate every N epochs (0 = only after the last epoch)"),
    Key("eval_before_train", bool, False, "evaluate once before training (zero-shot numbers)"),
    Key("save_every_steps", int, 0, "also checkpoint every N optimizer steps (0 = only at epoch ends)"),
    Key("keep_last_ckpts", int, 2, "training checkpoints kept on disk"),
    Key("save_model_every_epoch", bool, True,
        "write inference weights after every epoch (always at the end)"),
    Key("logging_steps", int, 20, "log every N optimizer steps"),
    Key("tensorboard", bool, True, "write TensorBoard events next to log.jsonl"),
    Key("dist_timeout_s", int, 1800, "timeout of collective operations in seconds"),
)
# The valid range of every numeric key (of each item of a list); any float must also be finite.
BOUNDS: dict[str, Bounds] = {
    "data_ratio": ABOVE_0, "n_workers": AT_LEAST_0, "size_img": AT_LEAST_1, "size_frame": AT_LEAST_1,
    "size_txt": AT_LEAST_1, "size_txt_pre": AT_LEAST_1, "size_patch": AT_LEAST_1,
    "max_size_frame": AT_LEAST_1, "max_size_patch": AT_LEAST_1, "size_vocab": Bounds(-1),
    "size_test": AT_LEAST_0, "size_option": AT_LEAST_1, "temp": ABOVE_0, "size_part": AT_LEAST_1,
    "p_mask": UNIT, "max_gen_length": AT_LEAST_1, "vtm_negatives": AT_LEAST_0,
    "eval_pair_batch": AT_LEAST_1, "contrastive_dim": AT_LEAST_0, "contrastive_temp": ABOVE_0,
    "vtc_weight": AT_LEAST_0, "pem_n_entities": AT_LEAST_1, "pem_threshold": AT_LEAST_0,
    "pem_region": Bounds(0, 1, low_open=True), "rerank_k": AT_LEAST_1, "beam_size": AT_LEAST_1,
    "txt_layers": AT_LEAST_1, "vis_embed_dim": AT_LEAST_1, "vis_depths": AT_LEAST_1,
    "vis_heads": AT_LEAST_1, "vis_window": AT_LEAST_1, "vis_patch_size": AT_LEAST_1,
    "vis_stem_convs": AT_LEAST_0, "vis_drop_path": UNIT_OPEN, "fusion_dropout": UNIT_OPEN,
    "fusion_hidden_size": AT_LEAST_1, "fusion_layers": AT_LEAST_1, "fusion_heads": AT_LEAST_1,
    "fusion_intermediate_size": AT_LEAST_1, "size_epoch": AT_LEAST_0, "size_batch": AT_LEAST_1,
    "grad_accum": AT_LEAST_1, "steps_per_epoch": AT_LEAST_0, "task_weight": AT_LEAST_0,
    "task_start": UNIT_OPEN, "items_per_video": AT_LEAST_1, "lr": ABOVE_0, "decay": AT_LEAST_0,
    "betas": UNIT_OPEN, "warmup_ratio": UNIT, "vis_backbone_lr_mul": AT_LEAST_0,
    "max_nan_steps": AT_LEAST_1, "eval_every": AT_LEAST_0, "save_every_steps": AT_LEAST_0,
    "keep_last_ckpts": AT_LEAST_1, "logging_steps": AT_LEAST_1, "dist_timeout_s": AT_LEAST_1,
    "long_clips": AT_LEAST_1, "long_frames_per_clip": AT_LEAST_1, "long_size_sentence": Bounds(3),
    "mtc_weight": AT_LEAST_0, "mtc_num_key": AT_LEAST_1, "mtc_num_value": AT_LEAST_1,
    "mtc_num_other": AT_LEAST_0, "long_form_dim": AT_LEAST_0, "max_sentences": AT_LEAST_1,
    "sentence_layers": AT_LEAST_0, "vis_local_window": AT_LEAST_1, "vis_temporal_windows": AT_LEAST_1,
    "audio_rate": Bounds(1000, 192000), "audio_mel_bins": AT_LEAST_1, "audio_slices": AT_LEAST_1,
    "audio_slice_frames": AT_LEAST_1, "caption_lm_weight": UNIT, "sparse_mask_weight": AT_LEAST_0,
}
# fmt: on

KEYS: dict[str, Key] = {k.name: dataclasses.replace(k, bounds=BOUNDS.get(k.name, k.bounds)) for k in SCHEMA}
SCHEMA = tuple(KEYS.values())

# Keys the reference wrote into its own args.json that are derived, not settings: accepted and dropped.
_DERIVED_REFERENCE_KEYS = frozenset(
    {"local_rank", "tokenizer", "effective_batch_size", "num_gpus", "distributed"}
)


# ---- types


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _union_members(tp: Any) -> tuple | None:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return typing.get_args(tp)
    return None


def _check(value: Any, tp: Any) -> Any:
    """Return `value` (normalised) if it has type `tp`, else raise TypeError naming the expected type."""
    members = _union_members(tp)
    if members is not None:
        for member in members:
            try:
                return _check(value, member)
            except TypeError:
                continue
        raise TypeError(f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict:
        if isinstance(value, Mapping):
            return dict(value)
    elif typing.get_origin(tp) is list:
        (item_tp,) = typing.get_args(tp)
        if item_tp is str and isinstance(value, str):
            return [value]  # the reference's tgif configs give img_transform as a bare string
        if isinstance(value, list | tuple):
            return [_check(v, item_tp) for v in value]
    else:
        raise AssertionError(f"unsupported schema type {tp!r}")
    raise TypeError(f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


def _accepts(value: Any, tp: Any) -> bool:
    try:
        _check(value, tp)
    except TypeError:
        return False
    return True


def _parse_text(text: str, tp: Any) -> Any:
    """Parse a command-line string as `tp`: true/false, ints, floats, JSON lists/dicts, null for None."""
    members = _union_members(tp)
    if members is not None:
        if text.lstrip().startswith(("[", "{")):
            return _check(_json_value(text), tp)
        for member in sorted(members, key=lambda m: m is str):  # a string is the last resort
            if member is dict or typing.get_origin(member) is list:
                continue  # only JSON text (handled above) becomes a list or dict here
            try:
                return _parse_text(text, member)
            except (TypeError, ValueError):
                continue
        raise TypeError(f"cannot read {text!r} as {_type_name(tp)}")
    if tp is type(None):
        if text.lower() in {"none", "null"}:
            return None
    elif tp is bool:
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
    elif tp is int:
        try:
            return int(text)
        except ValueError:
            pass
    elif tp is float:
        try:
            return float(text)
        except ValueError:
            pass
    elif tp is str:
        return text
    elif tp is dict or typing.get_origin(tp) is list:
        if typing.get_args(tp) == (str,) and not text.lstrip().startswith("["):
            return [text]
        return _check(_json_value(text), tp)
    raise TypeError(f"cannot read {text!r} as {_type_name(tp)}")


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TypeError(f"{text!r} is not valid JSON ({e.msg}); write lists as JSON, e.g. '[1, 2]'") from e


# ---- validation


def _unknown_key_error(name: str, source: str) -> ConfigError:
    close = difflib.get_close_matches(name, KEYS, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(
        f"unknown config key {name!r} in {source}.{hint}\nValid keys: {', '.join(sorted(KEYS))}"
    )


def _validate_value(name: str, value: Any, source: str) -> Any:
    key = KEYS.get(name)
    if key is None:
        raise _unknown_key_error(name, source)
    try:
        value = _check(value, key.type)
    except TypeError as e:
        raise ConfigError(f"config key {name!r} in {source}: {e} ({key.help})") from None
    if key.choices is not None:
        bad = [v for v in (value if isinstance(value, list) else [value]) if v not in key.choices]
        if bad:
            raise ConfigError(
                f"config key {name!r} in {source}: {bad[0]!r} is not one of {list(key.choices)} ({key.help})"
            )
    for number in value if isinstance(value, list) else [value]:
        problem = _range_problem(number, key.bounds)
        if problem:
            raise ConfigError(f"config key {name!r} in {source}: {number!r} {problem} ({key.help})")
    if name == "datasets":
        value = [_validate_task_dict(d, f"{source}, datasets[{i}]") for i, d in enumerate(value)]
    return value


def _range_problem(value: Any, bounds: Bounds | None) -> str | None:
    """Why a number is out of range (a float must be finite, e.g. not nan), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "is not a finite number"
    if bounds is not None and value not in bounds:
        return f"is out of range: it must be {bounds}"
    return None


def _validate_task_dict(d: Mapping[str, Any], source: str) -> dict[str, Any]:
    if "datasets" in d:
        raise ConfigError(f"{source}: a per-task dict cannot contain 'datasets'")
    return {k: _validate_value(k, v, source) for k, v in d.items()}


def validate(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Validate a partial mapping of keys (types, choices, per-task dicts); returns normalised values."""
    return {k: _validate_value(k, v, source) for k, v in values.items() if k not in _DERIVED_REFERENCE_KEYS}


# ---- Config


class Config(Mapping[str, Any]):
    """An immutable, validated set of every schema key, read as `cfg.lr` or `cfg["lr"]`.

    Change values with `cfg.override({...})`, which validates and returns a copy.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any] | None = None, source: str = "config"):
        merged = {k.name: _copy(k.default) for k in SCHEMA}
        merged.update(validate(values or {}, source))
        object.__setattr__(self, "_values", merged)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(str(_unknown_key_error(name, "attribute access"))) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"Config is immutable; use cfg.override({{{name!r}: ...}}) to get a changed copy"
        )

    def __reduce__(self):
        return (Config, (self._values,))

    def __repr__(self) -> str:
        changed = {k: v for k, v in self._values.items() if v != KEYS[k].default}
        return f"Config({changed})"

    def to_dict(self) -> dict[str, Any]:
        """A deep, JSON-serialisable copy of every key."""
        return _copy(self._values)

    def override(self, values: Mapping[str, Any], source: str = "override") -> Config:
        """A copy with `values` (validated) replacing the current ones."""
        return Config({**self._values, **values}, source=source)

    def task_configs(self) -> list[Config]:
        """Multi-task: one config per entry of `datasets` (global keys overridden by the task's keys)."""
        return [
            self.override({**d, "datasets": []}, source=f"datasets[{i}]") for i, d in enumerate(self.datasets)
        ]

    def save(self, folder: str | Path) -> Path:
        """Write the resolved config as `folder/args.json` (atomically); returns the path."""
        return write_json(Path(folder) / "args.json", self.to_dict(), indent=2, sort_keys=True)


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


# ---- loading


def load_json_config(path: str | Path) -> dict[str, Any]:
    """Read a JSON config file (a JSON object) and validate its keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object, not {type(data).__name__}")
    return validate(data, f"config file {path}")


_LAUNCHER_FLAGS = ("--local_rank", "--local-rank")


def parse_overrides(argv: Sequence[str]) -> tuple[str | None, dict[str, Any]]:
    """Split argv into (config path, {key: typed value}).

    Accepts `--key value`, `--key=value`, a bare `--flag` for bool keys (= true), a first positional argument
    ending in `.json` as the config, and drops the launcher's `--local_rank X` / `--local-rank=X` (the rank
    comes from the LOCAL_RANK environment variable).
    """
    config_path: str | None = None
    values: dict[str, Any] = {}
    args = list(argv)
    if args and not args[0].startswith("-") and args[0].endswith(".json"):
        config_path = args.pop(0)
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(f"unexpected command-line argument {arg!r}; write options as --key value")
        name, has_eq, text = arg[2:].partition("=")
        takes_next = not has_eq and i + 1 < len(args) and not args[i + 1].startswith("--")
        if not has_eq and takes_next:
            text = args[i + 1]
        i += 2 if takes_next else 1
        if f"--{name}" in _LAUNCHER_FLAGS:
            continue
        if name == "config":
            if not (has_eq or takes_next):
                raise ConfigError("--config needs a path to a JSON file")
            config_path = text
            continue
        key = KEYS.get(name)
        if key is None:
            raise _unknown_key_error(name, "the command line")
        if not (has_eq or takes_next):
            if not _accepts(True, key.type):
                raise ConfigError(f"--{name} needs a value ({_type_name(key.type)}: {key.help})")
            text = "true"
        try:
            values[name] = _parse_text(text, key.type)
        except TypeError as e:
            raise ConfigError(f"--{name}: {e} ({key.help})") from None
    return config_path, validate(values, "the command line")


def load_config(argv: Sequence[str] | None = None) -> Config:
    """Build the run's Config from `argv` (default `sys.argv[1:]`): defaults < JSON config < `--key value`."""
    config_path, cli_values = parse_overrides(sys.argv[1:] if argv is None else argv)
    file_values = load_json_config(config_path) if config_path else {}
    return Config({**file_values, **cli_values}, source="the command line")


# ---- --help

LAVENDER_FLAGS = (
    ("--config FILE.json", "a JSON config (the reference's _args/*.json); a first argument ending in .json "
     "works too (VIOLET)"),
    ("--path_output DIR", "where the run writes args.json, log.jsonl, checkpoints and model/"),
    ("--path_ckpt PATH", "initial weights: a LAVENDER / VIOLET / SwinBERT .pt or one of our model folders"),
    ("--resume true|DIR", "continue a killed run from path_output's latest checkpoint, or from DIR"),
    ("--eval_only true", "evaluate only (weights from --path_ckpt or --resume)"),
    ("--deepspeed true", "train with DeepSpeed ZeRO"),
    ("--KEY VALUE", "any config key below (also --KEY=VALUE; a bare --KEY sets a bool key to true)"),
    ("--local_rank N", "accepted from torch.distributed.launch and ignored (the rank comes from LOCAL_RANK)"),
    ("--debug", "on an error, print the full traceback (or set LAVENDER_DEBUG=1)"),
)  # fmt: skip


def help_text(prog: str, task: str) -> str:
    """``--help`` of an entry point: usage, the LAVENDER command-line flags, then every config key with its
    type, default (and range or choices) and help text, in schema order."""
    lines = [
        f"usage: python {prog} [--config FILE.json] [--KEY VALUE ...]",
        f"       torchrun --nproc_per_node N {prog} --config FILE.json [--KEY VALUE ...]",
        "",
        f"Trains and/or evaluates the registered task {task!r} (config key 'type'); precedence: key defaults "
        "< --config file < --KEY VALUE.",
        "",
        "options:",
        *(f"  {flag:<22} {text}" for flag, text in LAVENDER_FLAGS),
        "",
        "config keys (--KEY VALUE; type, default: help):",
    ]
    for key in SCHEMA:
        limits = f"; {key.bounds}" if key.bounds else ""
        if key.choices is not None:
            limits = "; one of " + ", ".join("null" if c is None else str(c) for c in key.choices)
        default = json.dumps(key.default)
        lines.append(f"  --{key.name}  ({_type_name(key.type)}, default {default}{limits})")
        lines.append(f"      {key.help}")
    return "\n".join(lines) + "\n"
