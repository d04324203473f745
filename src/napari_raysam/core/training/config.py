"""TrainConfig: every input of a training run, as plain values (travels to workers as a dict)."""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, fields

from ..errors import RaysamError

MODES = ("decoder", "lora", "full")
#: The base model when none is given: the shipped, trained ``tiny_cells`` (``tiny`` is random).
DEFAULT_MODEL = "tiny_cells"
NO_LORA_VIT_T = ("Mode 'lora' needs a ViT encoder (vit_b, vit_l, vit_h, tiny): micro-sam's LoRA "
                 "does not apply to vit_t's TinyViT. Use mode 'decoder' or 'full' for vit_t.")


@dataclass
class TrainConfig:
    """A fine-tuning run. Paths are plain strings so the config travels as JSON.

    dataset: training-set folder; model: base model spec (see core.models); mode: decoder (frozen
    encoder, cached embeddings), lora (micro-sam PEFT LoRA on the encoder) or full.
    workers/cpus_per_worker/gpus_per_worker: Ray ScalingConfig. objects_per_image: N objects
    sampled per image tile and step; correction_rounds: K iterative correction rounds after the
    first prompt; mask_prob: chance of feeding the previous low-res logits back as a mask prompt.
    images_per_step: image tiles per worker and optimizer step; steps_per_epoch: None means one
    pass over the training tiles (split across workers). storage: run storage folder
    (Ray's storage_path); name: run name (None: a fresh unique one; an existing one resumes).
    """

    dataset: str
    model: str = DEFAULT_MODEL
    mode: str = "decoder"
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    epochs: int = 5
    lr: float = 1e-4
    weight_decay: float = 1e-4
    objects_per_image: int = 8
    correction_rounds: int = 3
    mask_prob: float = 0.5
    min_object_px: int = 10
    box_distortion: float = 0.025
    images_per_step: int = 1
    steps_per_epoch: int | None = None
    eval_objects: int = 32
    lora_rank: int = 4
    seed: int = 0
    storage: str | None = None
    name: str | None = None
    max_failures: int = 2
    debug_pid_dir: str | None = None  # tests: rank 1 writes its PID here when epoch 2 starts
    debug_pause_s: float = 0.0  # tests: pause before and after writing the PID

    def validate(self) -> TrainConfig:
        """Raise RaysamError for values no run can use; returns self."""
        checks = [
            (self.mode in MODES, f"mode {self.mode!r} is unknown; use one of {', '.join(MODES)}."),
            (self.workers >= 1, f"workers={self.workers}: use at least 1 worker."),
            (self.cpus_per_worker > 0, "cpus_per_worker must be positive."),
            (self.gpus_per_worker >= 0, "gpus_per_worker cannot be negative."),
            (self.epochs >= 1, f"epochs={self.epochs}: train for at least 1 epoch."),
            (self.lr > 0, f"lr={self.lr}: the learning rate must be positive."),
            (self.objects_per_image >= 1, "objects_per_image must be at least 1."),
            (self.correction_rounds >= 0, "correction_rounds cannot be negative."),
            (0 <= self.mask_prob <= 1, "mask_prob is a probability: use 0..1."),
            (self.images_per_step >= 1, "images_per_step must be at least 1."),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1,
             "steps_per_epoch must be at least 1 (or unset for one pass over the data)."),
            (self.max_failures >= 0, "max_failures cannot be negative (0: a lost worker ends "
                                     "the run; 1 or more: it resumes from the last checkpoint)."),
            (not (self.mode == "lora" and str(self.model).startswith("vit_t")), NO_LORA_VIT_T),
        ]
        for ok, message in checks:
            if not ok:
                raise RaysamError(message)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def fresh_run_name(prefix: str = "run") -> str:
    """A unique run name: timestamp plus random suffix (a reused name would resume a run)."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
