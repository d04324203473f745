"""TrainConfig: every input of a training run, as plain values (travels to workers as a dict).

It is the one option schema: a field with a ``help`` in its metadata is a command-line option
(``--cpus-per-worker`` for ``cpus_per_worker``) of ``napari-raysam train``, ``submit`` and the
job entrypoint alike (:func:`add_arguments`), and :func:`option_argv` turns a dock's or a
client's ``{name: value}`` into the job's command line, checked against the same schema.
"""

from __future__ import annotations

import argparse
import secrets
import time
import typing
from dataclasses import asdict, dataclass, field, fields

from napari_raysam.core.errors import RaysamError
from napari_raysam.core.images import SCALINGS, ImagePolicy

MODES = ("decoder", "lora", "full")
#: constant: the learning rate ``lr`` throughout; plateau: micro-sam's default schedule
#: (``micro_sam.training.training._get_optimizer_and_scheduler``: ReduceLROnPlateau, factor 0.9,
#: patience 3), here on the val box mIoU, the score that picks the checkpoint.
LR_SCHEDULES = ("constant", "plateau")
#: How the learning rate follows the number of workers. DDP averages the workers' gradients,
#: so N workers take one step per N * images_per_step images: none keeps ``lr`` (micro-sam's
#: recipe, one process), sqrt and linear multiply it by sqrt(N) or N (the usual large-batch
#: rules) so a step moves as far as the bigger batch warrants.
LR_SCALINGS = ("none", "sqrt", "linear")
#: The base model when none is given: the shipped, trained ``tiny_cells`` (``tiny`` is random).
DEFAULT_MODEL = "tiny_cells"
NO_LORA_VIT_T = ("Mode 'lora' needs a ViT encoder (vit_b, vit_l, vit_h, tiny): micro-sam's LoRA "
                 "does not apply to vit_t's TinyViT. Use mode 'decoder' or 'full' for vit_t.")


def _opt(default, help: str, **extra):
    """A field that is also a command-line option (``help`` states what it is)."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainConfig:
    """A fine-tuning run. Paths are plain strings so the config travels as JSON.

    dataset: training-set folder; model: base model spec (see core.models); mode: decoder (frozen
    encoder, cached embeddings), lora (micro-sam PEFT LoRA on the encoder) or full.
    workers/cpus_per_worker/gpus_per_worker: Ray ScalingConfig. objects_per_image: N objects
    sampled per image tile and step; correction_rounds: K iterative correction rounds after the
    first prompt; mask_prob: chance of feeding the previous low-res logits back as a mask prompt.
    images_per_step: image tiles per worker and optimizer step; steps_per_epoch: None means one
    pass over the training tiles (split across workers). epochs None: the run is sized from the
    training set (``data.plan_run``). patience: early stopping (None: off); lr_schedule: one of
    LR_SCHEDULES. storage: run storage folder
    (Ray's storage_path); name: run name (None: a fresh unique one; an existing one resumes).
    """

    dataset: str
    model: str = _opt(DEFAULT_MODEL, "base model: tiny_cells (shipped, trained on round cells), "
                      "tiny (random weights), a micro-sam name such as vit_b_lm, run:NAME (a "
                      "fine-tuned model, see `napari-raysam models list`) or a checkpoint file")
    mode: str = _opt("decoder", "what is trained: decoder (frozen encoder, cached embeddings, "
                     "CPU-friendly), lora (LoRA adapters on the encoder) or full", choices=MODES)
    workers: int = _opt(1, "Ray Train workers")
    cpus_per_worker: float = _opt(1.0, "CPUs each worker reserves")
    gpus_per_worker: float = _opt(0.0, "GPUs each worker reserves; 0 trains on CPUs")
    epochs: int | None = _opt(None, "passes over the training images (default: sized from the "
                              "training set: at least 100 samples per epoch, micro-sam's rule, "
                              "and 5-20 epochs; progress shows them with an ETA)")
    lr: float = _opt(1e-4, "learning rate of AdamW")
    weight_decay: float = 1e-4
    patience: int | None = _opt(None, "early stopping: end the run when the val box mIoU has "
                                "not improved for this many epochs; the best epoch is returned "
                                "either way (default: off)")
    lr_schedule: str = _opt("constant", "constant, or plateau: micro-sam's ReduceLROnPlateau "
                            "(x0.9 after 3 epochs without a better val box mIoU)",
                            choices=LR_SCHEDULES)
    lr_scaling: str = _opt("none", "how lr follows the workers, whose gradients are averaged "
                           "into one step: none (the same lr at any size), sqrt (lr x "
                           "sqrt(workers)) or linear (lr x workers)", choices=LR_SCALINGS)
    objects_per_image: int = _opt(8, "annotated objects sampled per image and step")
    correction_rounds: int = _opt(3, "correction clicks after the first prompt, in training and "
                                  "in the 'corrected' val score")
    mask_prob: float = 0.5
    min_object_px: int = 10
    box_distortion: float = 0.025
    images_per_step: int = _opt(1, "images per worker and optimizer step")
    steps_per_epoch: int | None = _opt(None, "optimizer steps per epoch (default: one pass over "
                                       "the training images)")
    eval_objects: int = 32
    lora_rank: int = 4
    normalisation: str | None = _opt(
        None, "pixel scaling: minmax (micro-sam's) or percentile (1st to 99.8th, robust to hot "
        "pixels); the model records it and always segments with it (default: the base "
        "model's)", choices=SCALINGS)
    seed: int = _opt(0, "random seed of prompts and sampling")
    storage: str | None = _opt(None, "run storage: a folder, or s3://bucket/prefix[?endpoint_"
                               "override=host:port&scheme=http] or gs://bucket/prefix (Ray "
                               "storage_path) (default: the runs folder in the user cache; for "
                               "submit: the cluster profile's storage)")
    name: str | None = _opt(None, "run name; an existing run of the same data resumes (default: "
                            "a fresh unique name)")
    max_failures: int = _opt(2, "worker failures a run survives by resuming from its last "
                             "checkpoint; 0 ends the run at the first")
    debug_pid_dir: str | None = None  # tests: rank 1 writes its PID here when epoch 2 starts
    debug_pause_s: float = 0.0  # tests: pause before and after writing the PID

    def scaled_lr(self, world: int) -> float:
        """The learning rate of a run with ``world`` workers (:data:`LR_SCALINGS`)."""
        factor = {"none": 1.0, "sqrt": world ** 0.5, "linear": float(world)}[self.lr_scaling]
        return self.lr * factor

    def validate(self) -> TrainConfig:
        """Raise RaysamError for values no run can use; returns self."""
        checks = [
            (self.mode in MODES, f"mode {self.mode!r} is unknown; use one of {', '.join(MODES)}."),
            (self.workers >= 1, f"workers={self.workers}: use at least 1 worker."),
            (self.cpus_per_worker > 0, "cpus_per_worker must be positive."),
            (self.gpus_per_worker >= 0, "gpus_per_worker cannot be negative."),
            (self.epochs is None or self.epochs >= 1,
             f"epochs={self.epochs}: train for at least 1 epoch (or leave it unset to size the "
             "run from the training set)."),
            (self.patience is None or self.patience >= 1,
             f"patience={self.patience}: use at least 1 epoch (or leave it unset: no early "
             "stopping)."),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule {self.lr_schedule!r} is unknown; "
                                               f"use one of {', '.join(LR_SCHEDULES)}."),
            (self.lr > 0, f"lr={self.lr}: the learning rate must be positive."),
            (self.lr_scaling in LR_SCALINGS, f"lr_scaling {self.lr_scaling!r} is unknown; "
                                             f"use one of {', '.join(LR_SCALINGS)}."),
            (self.objects_per_image >= 1, "objects_per_image must be at least 1."),
            (self.correction_rounds >= 0, "correction_rounds cannot be negative."),
            (0 <= self.mask_prob <= 1, "mask_prob is a probability: use 0..1."),
            (self.images_per_step >= 1, "images_per_step must be at least 1."),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1,
             "steps_per_epoch must be at least 1 (or unset for one pass over the data)."),
            (self.max_failures >= 0, "max_failures cannot be negative (0: a lost worker ends "
                                     "the run; 1 or more: it resumes from the last checkpoint)."),
            (not (self.mode == "lora" and str(self.model).startswith("vit_t")), NO_LORA_VIT_T),
            (self.normalisation in (None, *SCALINGS), f"normalisation {self.normalisation!r} "
             f"is unknown; use one of {', '.join(SCALINGS)} (or leave it out)."),
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


def run_normalisation(config: TrainConfig, base_normalisation: dict) -> dict:
    """The normalisation a run trains with and records: ``config.normalisation`` when given,
    else the base model's (a fine-tune sees pixels scaled as its base model did)."""
    if config.normalisation is None:
        return dict(base_normalisation)
    return ImagePolicy(scaling=config.normalisation).normalisation()


def option_fields() -> list:
    """The fields of TrainConfig that are command-line options, in order."""
    return [f for f in fields(TrainConfig) if "help" in f.metadata]


def _kind(f):
    """int, float or str: the option's type from the field's annotation (``int | None`` is
    int)."""
    hint = typing.get_type_hints(TrainConfig)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every option of the schema to ``parser``; each help states its default."""
    for f in option_fields():
        text = f.metadata["help"]
        if "(default:" not in text:
            text += " (default: %(default)s)"
        parser.add_argument("--" + f.name.replace("_", "-"), type=_kind(f), default=f.default,
                            choices=f.metadata.get("choices"), help=text)


def from_namespace(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed arguments (``args.dataset`` plus every option)."""
    return TrainConfig(dataset=args.dataset,
                       **{f.name: getattr(args, f.name) for f in option_fields()})


def option_argv(options: dict, reserved: tuple[str, ...] = ()) -> list[str]:
    """The job's command-line options for ``{name: value}`` (None: left out), each value
    converted and checked against the schema (type, choices, :meth:`TrainConfig.validate`)
    before anything is uploaded; ``reserved`` names are set by the caller itself."""
    known = {f.name: f for f in option_fields() if f.name not in reserved}
    argv: list[str] = []
    values = {}
    for key, value in options.items():
        if key not in known:
            raise RaysamError(f"{key!r} is not a training option you can set here; use one of "
                              f"{', '.join(sorted(known))}.")
        if value is None:
            continue
        f = known[key]
        try:
            values[key] = _kind(f)(value)
        except (TypeError, ValueError):
            raise RaysamError(f"Invalid training option: {key}={value!r} is not a "
                              f"{_kind(f).__name__}. Fix the value and submit again.") from None
        if f.metadata.get("choices") and values[key] not in f.metadata["choices"]:
            raise RaysamError(f"Invalid training option: {key}={value!r}; use one of "
                              f"{', '.join(f.metadata['choices'])}.")
        argv += ["--" + key.replace("_", "-"), str(values[key])]
    TrainConfig(dataset="DATASET", **values).validate()
    return argv


def fresh_run_name(prefix: str = "run") -> str:
    """A unique run name: timestamp plus random suffix (a reused name would resume a run)."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
