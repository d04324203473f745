"""Model specs -> SAM, and our checkpoint format (architectures: see :mod:`.architectures`).

A *spec* is a string the user types or picks:

- ``tiny``: a small SAM built from ``segment_anything.modeling`` (~0.4 M parameters, 256 px
  input) for tests and offline use; ``tiny:SEED`` gives other random weights;
- ``tiny_cells``: that architecture trained on synthetic round cells, shipped in the package
  (``weights/tiny_cells.pt``, made by ``scripts/make_tiny_checkpoint.py``): the offline default;
- a micro-sam model name (``vit_b``, ``vit_b_lm``, ...), fetched through micro-sam's registry;
- a path to a checkpoint file: an original SAM state dict, a micro-sam/torch-em checkpoint with
  ``model_state``, or one of ours.

Our checkpoint is ``{"model_state": ..., "model_type": ..., "napari_raysam": {...}}``: plain
tensors and plain Python values, so it loads with ``torch.load(weights_only=True)``, and a
standard-architecture one loads with ``micro_sam.util.get_sam_model(model_type, checkpoint_path)``.

Each model carries its *normalisation* (how pixels were scaled when it was trained,
:meth:`..images.ImagePolicy.normalisation`): ours records it under ``napari_raysam``; ours
written before it was recorded were trained with :data:`..images.LEGACY` (percentile); micro-sam
models and foreign checkpoints get micro-sam's min-max, as in micro-sam's own pipeline.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from napari_raysam.core.images import LEGACY, ImageError, ImagePolicy
from napari_raysam.core.sam.architectures import (
    ModelError,
    TinyConfig,
    build_standard_sam,
    build_tiny_sam,
)

CHECKPOINT_FORMAT = 1
OUR_KEY = "napari_raysam"
TINY_CELLS = "tiny_cells"  # the shipped offline model (see shipped_weights)
_WIDTH_TO_TYPE = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


@dataclass
class LoadedModel:
    """A SAM ready for inference, with what the embedding cache and lineage need."""

    spec: str
    model_type: str
    sam: Any  # segment_anything.modeling.Sam
    device: str
    tiny_config: TinyConfig | None = None
    lineage: dict | None = None
    decoder_state: dict | None = None  # micro-sam instance-segmentation decoder, if any
    normalisation: dict = field(default_factory=lambda: ImagePolicy().normalisation())
    _fingerprint: str | None = field(default=None, repr=False)
    _predictor: Any = field(default=None, repr=False)
    _ais_decoder: Any = field(default=None, repr=False)

    @property
    def encoder_fingerprint(self) -> str:
        """Hash of the image encoder's weights: equal encoders share cached embeddings."""
        if self._fingerprint is None:
            self._fingerprint = module_fingerprint(self.sam.image_encoder, self.model_type)
        return self._fingerprint

    @property
    def predictor(self):
        """A ``segment_anything.SamPredictor`` for this model (created once)."""
        if self._predictor is None:
            from segment_anything import SamPredictor

            self._predictor = SamPredictor(self.sam)
        return self._predictor

    @property
    def ais_decoder(self):
        """micro-sam's instance-segmentation decoder, if this model ships one (else None)."""
        if self.decoder_state is None:
            return None
        if self._ais_decoder is None:
            from micro_sam.instance_segmentation import get_decoder

            self._ais_decoder = get_decoder(self.sam.image_encoder, self.decoder_state,
                                            self.device)
        return self._ais_decoder

    @property
    def img_size(self) -> int:
        return int(self.sam.image_encoder.img_size)

    def image_policy(self, policy: ImagePolicy = ImagePolicy()) -> ImagePolicy:
        """``policy``'s channels with this model's normalisation: what its pixels must be."""
        return policy.using(self.normalisation)


def best_device() -> str:
    """cuda, then mps, then cpu."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def module_fingerprint(module, tag: str = "") -> str:
    """sha256 over a module's parameter names, shapes, dtypes and values."""
    digest = hashlib.sha256(tag.encode())
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(tensor.view(-1).view(_byte_dtype()).numpy().tobytes())
    return digest.hexdigest()[:32]


def _byte_dtype():
    import torch

    return torch.uint8


# --- checkpoints ---------------------------------------------------------------------------


def save_checkpoint(
    path: str | os.PathLike,
    sam,
    model_type: str,
    tiny_config: TinyConfig | None = None,
    lineage: dict | None = None,
    decoder_state: dict | None = None,
    normalisation: dict | None = None,
) -> Path:
    """Write our checkpoint atomically (temporary file, then rename).

    ``decoder_state`` (micro-sam's instance-segmentation decoder) is kept under the key
    micro-sam uses, so automatic segmentation can use it here and in micro-sam.
    ``normalisation``: how the weights' training pixels were scaled (None: micro-sam's
    min-max, the default); inference uses it.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model_state": {k: v.detach().cpu() for k, v in sam.state_dict().items()},
        "model_type": model_type,
        OUR_KEY: {
            "format": CHECKPOINT_FORMAT,
            "tiny_config": asdict(tiny_config) if tiny_config else None,
            "normalisation": ImagePolicy().using(normalisation).normalisation(),
            "lineage": lineage or {},
        },
    }
    if decoder_state is not None:
        payload["decoder_state"] = {k: v.detach().cpu() for k, v in decoder_state.items()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint file safely (``weights_only=True``) with clear errors."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"Model file not found: {path}. Check the path, or pick a model name.")
    with open(path, "rb") as handle:
        head = handle.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml")):
        raise ModelError(
            f"{path} is a web page, not model weights (a broken download?). "
            "Delete it and download the checkpoint again."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not head.startswith(b"pk\x03\x04"):  # not even a torch zip archive
            raise ModelError(
                f"{path} is not a PyTorch checkpoint (truncated or corrupt). "
                "Download or copy it again."
            ) from exc
        raise ModelError(
            f"{path} contains pickled Python objects that are not loaded for safety "
            "(weights_only). If it is a torch-em/micro-sam training checkpoint, export the "
            "weights with micro_sam.util.export_custom_sam_model and load that file."
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise ModelError(
            f"{path} could not be read as a PyTorch checkpoint (truncated or corrupt: {exc}). "
            "Download or copy it again."
        ) from exc
    if not isinstance(state, dict):
        raise ModelError(f"{path} holds a {type(state).__name__}, not a SAM state dict.")
    return state


def _strip_prefixes(state: dict) -> dict:
    for prefix in ("module.sam.", "sam.", "module."):
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items()}
    return state


def infer_model_type(state: dict) -> str:
    """The standard architecture (vit_t/b/l/h) of a SAM state dict; ModelError if none."""
    state = _strip_prefixes(dict(state))
    weight = state.get("image_encoder.patch_embed.proj.weight")
    if weight is not None and int(weight.shape[0]) in _WIDTH_TO_TYPE:
        return _WIDTH_TO_TYPE[int(weight.shape[0])]
    if any(k.startswith("image_encoder.patch_embed.seq") for k in state):
        return "vit_t"
    raise ModelError(
        "Cannot tell which SAM architecture these weights belong to; "
        "they are not vit_t/b/l/h SAM weights."
    )


def load_checkpoint(path: str | os.PathLike, device: str | None = None) -> LoadedModel:
    """Load any supported checkpoint file into a :class:`LoadedModel`."""
    raw = read_checkpoint(path)
    ours = raw.get(OUR_KEY) if isinstance(raw.get(OUR_KEY), dict) else {}
    normalisation = checkpoint_normalisation(raw, path)
    state = raw.get("model_state", raw)
    state = _strip_prefixes(dict(state))
    tiny = ours.get("tiny_config")
    if tiny:
        config = TinyConfig(**tiny)
        sam, model_type = build_tiny_sam(config, seed=None), "tiny"
    else:
        config = None
        model_type = infer_model_type(state)
        sam = build_standard_sam(model_type)
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        expected = sam.state_dict()
        differ = sorted(set(expected) ^ set(state)) or [
            k for k in expected if tuple(expected[k].shape) != tuple(state[k].shape)
        ]
        raise ModelError(
            f"{path} does not match the {model_type} architecture ({len(differ)} weights differ, "
            f"e.g. {differ[0]!r}). It is a checkpoint for another model: pick the matching one."
        ) from exc
    device = device or best_device()
    sam.to(device).eval()
    return LoadedModel(
        spec=str(path),
        model_type=model_type,
        sam=sam,
        device=device,
        tiny_config=config,
        lineage=ours.get("lineage"),
        decoder_state=raw.get("decoder_state"),
        normalisation=normalisation,
    )


def checkpoint_normalisation(raw: dict, path) -> dict:
    """How a loaded checkpoint's (``read_checkpoint``) training pixels were scaled: ours
    records it (before it did: percentile); any other checkpoint is micro-sam's (min-max)."""
    ours = raw.get(OUR_KEY) if isinstance(raw.get(OUR_KEY), dict) else {}
    if not ours:
        return ImagePolicy().normalisation()
    return _normalisation(path, ours.get("normalisation"))


def _normalisation(path, recorded) -> dict:
    """Our checkpoint's normalisation: the recorded one, else the percentile scaling every
    checkpoint of ours was trained with before it was recorded."""
    if recorded is None:
        return LEGACY.normalisation()
    try:
        return ImagePolicy().using(recorded).normalisation()
    except ImageError as exc:
        raise ModelError(f"{path} records a normalisation this version cannot use ({exc}). "
                         "Upgrade napari-raysam, or fine-tune the model again.") from None


# --- specs ---------------------------------------------------------------------------------


def registry_names() -> list[str]:
    """Model names micro-sam's registry knows."""
    from micro_sam.util import get_model_names

    return sorted(n for n in get_model_names() if not n.endswith("_decoder"))


def load_model(spec: str, device: str | None = None) -> LoadedModel:
    """Resolve a model spec (see module docstring) to a :class:`LoadedModel`."""
    spec = str(spec).strip()
    if not spec:
        raise ModelError("No model given: pick a model name such as 'vit_b_lm', 'tiny' or a file.")
    device = device or best_device()
    if "://" in spec:  # an object in storage, e.g. a base model the client uploaded
        from napari_raysam.core.node_cache import model_on_node

        spec = model_on_node(spec)
    if spec == TINY_CELLS:
        loaded = load_checkpoint(shipped_weights(), device)
        loaded.spec = spec
        return loaded
    if spec == "tiny" or spec.startswith("tiny:"):
        seed = int(spec.split(":", 1)[1]) if ":" in spec else 0
        config = TinyConfig()
        sam = build_tiny_sam(config, seed=seed).to(device).eval()
        return LoadedModel(spec, "tiny", sam, device, tiny_config=config)
    if spec.startswith("run:"):  # a fine-tuned model fetched from a run
        from napari_raysam.core.errors import RaysamError
        from napari_raysam.core.model_store import registered_model_path

        try:
            path = registered_model_path(spec[4:])
        except RaysamError as exc:
            raise ModelError(str(exc)) from None
        loaded = load_checkpoint(path, device)
        loaded.spec = spec
        return loaded
    path = Path(spec).expanduser()
    if path.suffix in (".pt", ".pth", ".ckpt") or os.sep in spec or path.exists():
        loaded = load_checkpoint(path, device)
        loaded.spec = spec
        return loaded
    return _load_registry_model(spec, device)


def shipped_weights(name: str = TINY_CELLS) -> Path:
    """Path of a checkpoint shipped in the package (``napari_raysam/weights/<name>.pt``)."""
    from importlib.resources import files

    path = Path(str(files("napari_raysam") / "weights" / f"{name}.pt"))
    if not path.is_file():
        raise ModelError(
            f"The built-in model {name!r} is missing ({path}). Create it with "
            "`python scripts/make_tiny_checkpoint.py` (about 30 minutes on a CPU), or use 'tiny'."
        )
    return path


def _load_registry_model(name: str, device: str) -> LoadedModel:
    names = registry_names()
    if name not in names:
        raise ModelError(
            f"Unknown model {name!r}. Use 'tiny_cells', 'tiny', a checkpoint file path, or one of: "
            + ", ".join(names)
        )
    from napari_raysam.core.sam.model_download import ensure_registry_weights

    ensure_registry_weights(name)
    from micro_sam import util

    if name.startswith("vit_t") and not util.VIT_T_SUPPORT:
        return _load_registry_vit_t(name, device)
    predictor, state = util.get_sam_model(model_type=name, device=device, return_state=True)
    # eval() again: MobileSAM's TinyViT (vit_t with mobile_sam installed) caches its attention
    # bias on eval(), which micro-sam called before loading the weights
    sam = predictor.model.eval()
    loaded = LoadedModel(name, name[:5], sam, device, decoder_state=state.get("decoder_state"))
    loaded._predictor = predictor
    return loaded


def _load_registry_vit_t(name: str, device: str) -> LoadedModel:
    """A vit_t registry model without the ``mobile_sam`` package micro-sam builds vit_t with:
    the same files, fetched (hash-checked) by micro-sam's registry, into our vit_t."""
    from micro_sam.util import models

    registry = models()
    loaded = load_checkpoint(registry.fetch(name), device)
    if loaded.model_type != "vit_t":
        raise ModelError(f"The registry file of {name!r} holds {loaded.model_type} weights.")
    if f"{name}_decoder" in registry.registry:
        loaded.decoder_state = read_checkpoint(registry.fetch(f"{name}_decoder"))
    loaded.spec = name
    return loaded
