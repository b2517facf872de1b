"""A pretraining checkpoint's backbone as a model directory (``config.json`` + weights + model card)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..backbone import DEFAULT_STAGES, Backbone
from ..hub import save_pretrained
from .checkpoint import load_checkpoint
from .pretrain_run import CHECKPOINT_FORMATS

__all__ = ["export_backbone"]


def export_backbone(
    checkpoint_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    card_info: dict | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write the query encoder's backbone of a pretraining checkpoint as a Hub-layout directory.

    ``load_backbone(out_dir)`` reads it back (the paper's default hypercolumn stages, the preset's
    mean/std and input size in ``config.json``). The model card lists the data, recipe, epochs,
    steps and training time; ``card_info`` adds or overrides entries (e.g. ``{"license": ...}``);
    ``dtype`` (e.g. ``torch.float16``) stores the weights in that precision (loading casts back).

    Returns:
        ``Path(out_dir)``.
    """
    saved = load_checkpoint(checkpoint_path, expected_format=CHECKPOINT_FORMATS, kind="MoCo pretraining checkpoint")
    config, preset = saved["config"], saved["preset"]
    size = int(preset["image_size"])
    backbone = Backbone(config["arch"], DEFAULT_STAGES, mean=preset["mean"], std=preset["std"], input_size=(size, size))
    prefix = "backbone.body."
    body = {k.removeprefix(prefix): v for k, v in saved["encoder_q"].items() if k.startswith(prefix)}
    backbone.body.load_state_dict(body, strict=True)
    position = saved["position"]
    info = {
        "data": ", ".join([*config["data"], *config.get("video", [])]),
        "images": saved["num_images"],
        "recipe": (
            f"MoCo ({'MLP' if config['mlp_head'] else 'linear'} {config['dim']}-d head), queue "
            f"{config['queue_size']}, temperature {config['temperature']}, key momentum "
            f"{config['key_momentum']}; SGD lr {config['lr']} momentum {config['momentum']} wd "
            f"{config['weight_decay']}, {config['schedule']} schedule, batch {config['batch_size']}; "
            f"preset {preset['name']} ({size} px, border {preset['border']}), "
            f"jpeg={preset.get('jpeg', config['jpeg'])}, blur={preset.get('blur', config['blur'])}, "
            f"min_scale={preset.get('min_scale', config['min_scale'])}, "
            f"equivariance={config.get('equivariance', 0.0)}"
        ),
        "epochs": f"{position['global_step'] / saved['steps_per_epoch']:.2f} of {config['epochs']} "
        f"({position['global_step']} steps)",
        "training time": f"{saved.get('train_time_s', 0.0) / 3600:.2f} h",
        "seed": config["seed"],
    }
    info.update(card_info or {})
    rows = "\n".join(f"| {key} | {value} |" for key, value in info.items())
    card = (
        f"---\nlibrary_name: contrastive_landmarks\ntags: [landmarks, keypoints, moco]\n---\n\n"
        f"# {config['arch']} MoCo backbone\n\nSelf-supervised (MoCo) {config['arch']} for object-landmark "
        f"representations (Cheng, Su & Maji, ICCV 2021). Load with "
        f'`contrastive_landmarks.load_backbone("{Path(out_dir).name}")`.\n\n'
        f"| item | value |\n|---|---|\n{rows}\n"
    )
    return save_pretrained(out_dir, backbone.body.state_dict(), backbone.config, card=card, dtype=dtype)
