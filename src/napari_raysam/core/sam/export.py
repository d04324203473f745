"""Share a fine-tuned model as a bioimage.io package, written by micro-sam's exporter
(:func:`micro_sam.bioimageio.export_sam_model`) and checked with ``bioimageio.core``.

Our lineage (base model, training set and its content hash, configuration, metrics, versions)
goes into the package's description and documentation. Only the standard SAM architectures
(vit_t/b/l/h) can be exported: bioimage.io rebuilds the model from micro-sam's architecture code,
which knows nothing of our tiny one. Every check runs before the (minutes-long) export starts;
the package is written under a temporary name next to ``out`` and renamed into place only once
it validated, so a failed or interrupted export leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_raysam.core.errors import RaysamError
from napari_raysam.core.images import MINMAX, ImagePolicy
from napari_raysam.core.sam.architectures import STANDARD_TYPES
from napari_raysam.core.sam.models import (
    OUR_KEY,
    checkpoint_normalisation,
    infer_model_type,
    read_checkpoint,
)

MOBILE_SAM_PIP = "pip install git+https://github.com/ChaoningZhang/MobileSAM.git"
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_+\- ()]")


@dataclass
class ExportSource:
    """A checkpoint that can be exported: where it is, its architecture, its lineage."""

    spec: str
    name: str  # the model's name (a fetched model's, else the file's stem)
    path: Path
    model_type: str
    lineage: dict
    has_decoder: bool
    normalisation: dict  # how its training pixels were scaled (models.checkpoint_normalisation)


@dataclass
class ExportResult:
    """A written, validated package."""

    path: Path
    model_type: str
    size_bytes: int
    validation: str  # bioimageio.core's status: "passed"
    note: str | None = None  # scaling_note: the model was not trained on micro-sam's pixels


def resolve_export_source(spec: str) -> ExportSource:
    """A fetched model (``run:NAME`` or just ``NAME``) or a checkpoint file -> an
    :class:`ExportSource`; a clear RaysamError for anything that cannot be exported (a tiny
    model, an unknown name, a missing file)."""
    from napari_raysam.core.model_store import registered_model_path

    spec = str(spec).strip()
    path, name = Path(spec).expanduser(), None
    if spec in ("tiny", "tiny_cells") or spec.startswith("tiny:"):
        raise RaysamError(_tiny_message(spec))
    if spec.startswith("run:"):
        name = spec[4:]
    elif not path.is_file():
        if path.suffix in (".pt", ".pth", ".ckpt") or os.sep in spec:
            raise RaysamError(f"Checkpoint file not found: {path}. Check the path, or give "
                              "a fetched model's name (`napari-raysam models list`).")
        name = spec  # a bare name: a fetched model; the error lists the ones there are
    if name is not None:
        path = Path(registered_model_path(name))
    raw = read_checkpoint(path)
    ours = raw.get(OUR_KEY) if isinstance(raw.get(OUR_KEY), dict) else {}
    if ours.get("tiny_config"):
        raise RaysamError(_tiny_message(spec))
    state = raw.get("model_state", raw)
    model_type = infer_model_type(state)
    if model_type not in STANDARD_TYPES:
        raise RaysamError(f"{spec}: architecture {model_type!r} cannot be exported; "
                          f"bioimage.io packages hold {', '.join(STANDARD_TYPES)}.")
    if model_type == "vit_t" and not _has_module("mobile_sam"):
        raise RaysamError(
            f"{spec} is a vit_t model: micro-sam's exporter builds vit_t with the MobileSAM "
            f"package, which is not installed. Install it ({MOBILE_SAM_PIP}) and export again.")
    return ExportSource(spec, name or path.stem, path, model_type,
                        dict(ours.get("lineage") or {}), "decoder_state" in raw,
                        checkpoint_normalisation(raw, path))


def scaling_note(normalisation: dict) -> str | None:
    """What a user of the package must know when the model was not trained on micro-sam's
    min-max pixels (micro-sam's tools scale every image min-max); None when it was."""
    if ImagePolicy().using(normalisation).scaling == MINMAX:
        return None
    return (f"Note: this model was trained on {describe_scaling(normalisation)} pixels, but "
            "micro-sam's tools scale every image min-max, so it segments worse there than in "
            "napari-raysam. For use with micro-sam, fine-tune with `--normalisation minmax`.")


def describe_scaling(normalisation: dict) -> str:
    """'min-max (micro-sam's)' or 'percentile-scaled (1-99.8th)'."""
    policy = ImagePolicy().using(normalisation)
    if policy.scaling == MINMAX:
        return "min-max (micro-sam's)"
    return f"{policy.scaling}-scaled ({policy.lower:g}-{policy.upper:g}th)"


def _tiny_message(spec: str) -> str:
    return (f"{spec} is not exportable to bioimage.io: it uses napari-raysam's tiny test "
            "architecture (256 px, 0.4 M parameters), which bioimage.io tools and micro-sam "
            "cannot rebuild; packages hold the standard SAM architectures "
            f"({', '.join(STANDARD_TYPES)}) only. Fine-tune a standard base model (for example "
            "--model vit_b_lm) and export that, or share the checkpoint file itself (it loads "
            "in napari-raysam).")


def _has_module(name: str) -> bool:
    from importlib.util import find_spec

    return find_spec(name) is not None


def check_output_path(out: str | os.PathLike, need_bytes: int = 0,
                      overwrite: bool = False) -> Path:
    """The package path, checked before any work: a ``.zip`` in an existing, writable folder
    with room for ``need_bytes``; an existing file only with ``overwrite``."""
    out = Path(out).expanduser()
    if out.is_dir():
        raise RaysamError(f"{out} is a folder: give the package's file name, e.g. "
                          f"{out / 'model.zip'}.")
    if out.suffix.lower() != ".zip":
        raise RaysamError(f"{out}: a bioimage.io package is a .zip file; name it "
                          f"{out.with_suffix('.zip').name}.")
    parent = out.parent.resolve()
    if not parent.is_dir():
        raise RaysamError(f"The folder {parent} does not exist: create it or choose another "
                          "place for the package.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RaysamError(f"Cannot write to {parent}: choose a folder you can write to.")
    if out.exists() and not overwrite:
        raise RaysamError(f"{out} exists already: choose another name or overwrite it "
                          "(--overwrite).")
    free = shutil.disk_usage(parent).free
    if need_bytes and free < need_bytes:
        raise RaysamError(f"Not enough space in {parent}: the package needs about "
                          f"{need_bytes / 1e6:.0f} MB, {free / 1e6:.0f} MB are free. Free some "
                          "space or choose another place.")
    return parent / out.name


def export_bioimageio(spec: str | ExportSource, out: str | os.PathLike, *,
                      authors: list[str] | None = None,
                      overwrite: bool = False, validate: bool = True,
                      progress: Callable[[str], None] | None = None) -> ExportResult:
    """Export the model ``spec`` (what :func:`resolve_export_source` takes, or its result) to
    the bioimage.io package ``out`` (``.zip``) with micro-sam's exporter, then test it with
    ``bioimageio.core`` (offline, on the CPU). Checks run first; ``out`` appears only when
    everything passed."""
    say = progress or (lambda _msg: None)
    source = spec if isinstance(spec, ExportSource) else resolve_export_source(spec)
    size = source.path.stat().st_size
    # micro-sam re-saves the weights into a temporary folder, then the zip holds them again
    out = check_output_path(out, need_bytes=int(size * 1.1) + 50_000_000, overwrite=overwrite)
    if shutil.disk_usage(tempfile.gettempdir()).free < size * 2:
        raise RaysamError(f"Not enough space in the temporary folder {tempfile.gettempdir()} "
                          f"for the export (about {2 * size / 1e6:.0f} MB); free some space or "
                          "set TMPDIR to a roomier folder.")
    note = scaling_note(source.normalisation)
    if note:
        say(note)
    image, labels = export_test_image()
    partial = out.with_name(f".{out.stem}.partial-{os.getpid()}-{secrets.token_hex(4)}.zip")
    try:
        with tempfile.TemporaryDirectory(prefix="raysam-bioimageio-") as tmp:
            doc = Path(tmp) / "documentation.md"
            doc.write_text(documentation(source), encoding="utf-8")
            cover = write_cover(Path(tmp) / "cover.png", image, labels)
            say(f"Exporting {source.model_type} (micro-sam runs it on a test image)...")
            _run_exporter(source, image, labels, partial, doc, cover, authors)
        status = "not validated"
        if validate:
            say("Testing the package with bioimage.io (offline)...")
            status = validate_package(partial)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    say(f"Wrote {out}.")
    return ExportResult(out, source.model_type, out.stat().st_size, status, note)


def _run_exporter(source: ExportSource, image, labels, path: Path, doc: Path, cover: Path,
                  authors: list[str] | None) -> None:
    import bioimageio.spec.model.v0_5 as spec
    from micro_sam.bioimageio import export_sam_model
    from micro_sam.bioimageio.model_export import DEFAULTS

    base = str(source.lineage.get("base_model") or source.model_type)
    names = authors or [os.environ.get("USER") or "napari-raysam user"]
    try:
        export_sam_model(
            image, labels, source.model_type, package_name(source.name), path,
            checkpoint_path=str(source.path),
            description=description(source),
            documentation=str(doc),
            covers=[str(cover)],  # ours: micro-sam's cover goes through pyplot (not in threads)
            authors=[spec.Author(name=a.replace("/", "-")) for a in names],
            tags=[*DEFAULTS["tags"], "napari-raysam", "fine-tuned", _tag(base)],
        )
    except RuntimeError as exc:  # e.g. the instance decoder finds no object in the test image
        raise RaysamError(f"micro-sam's exporter stopped: {exc}") from exc


def validate_package(path: str | os.PathLike) -> str:
    """Test a package with ``bioimageio.core`` (format, test outputs reproduced, inference at
    other sizes) on the CPU; its status, or a RaysamError listing what failed."""
    from bioimageio.core import test_description

    summary = test_description(str(path), devices=["cpu"])
    if summary.status != "passed":
        errors = [f"{d.name}: {e.msg}" for d in summary.details for e in d.errors]
        raise RaysamError("The package did not pass bioimage.io's test, so it was not "
                          f"written: {'; '.join(errors)[:800] or summary.status}")
    return str(summary.status)


def package_name(name: str) -> str:
    """A bioimage.io model name (letters, digits, ``_+- ()``; 5-64 characters)."""
    clean = _NAME_CHARS.sub("-", f"{name} (napari-raysam)")
    return clean[-64:] if len(clean) > 64 else clean


def _tag(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-") or "sam"


def export_test_image(shape: tuple[int, int] = (256, 256)):
    """The export's test image: synthetic round cells (uint8) with their labels, relabelled
    1..N (micro-sam's exporter prompts objects 1 and 2)."""
    from napari_raysam.core.dataset.synthetic import make_sample

    sample = make_sample(shape, style="round", seed=0, dtype=np.uint8)
    ids = [i for i in np.unique(sample.labels) if i]
    labels = np.zeros(sample.labels.shape, np.uint32)
    for new, old in enumerate(ids, start=1):
        labels[sample.labels == old] = new
    return sample.image, labels



def write_cover(path: Path, image: np.ndarray, labels: np.ndarray) -> Path:
    """The package's cover: the test image with its objects outlined (no pyplot)."""
    from matplotlib.image import imsave
    from scipy import ndimage as ndi

    grey = image.astype(np.float32)
    grey = (grey - grey.min()) / max(float(np.ptp(grey)), 1e-6) * 255
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.uint8)
    edges = labels != ndi.grey_erosion(labels, size=3)
    rgb[edges & (labels > 0)] = (255, 200, 0)
    imsave(path, rgb)
    return path


def description(source: ExportSource) -> str:
    """One-paragraph description: what was fine-tuned on what, and what it bought."""
    lin = source.lineage
    base = lin.get("base_model") or source.model_type
    parts = [f"SAM ({source.model_type}) fine-tuned with napari-raysam from {base}"]
    if lin.get("mode"):
        parts.append(f"mode {lin['mode']}")
    if lin.get("dataset_content_hash"):
        parts.append(f"training set sha256 {str(lin['dataset_content_hash'])[:16]}")
    before, after = _before_after(lin)
    if after.get("val_miou_box") is not None and before.get("val_miou_box") is not None:
        parts.append(f"held-out box mIoU {before['val_miou_box']:.3f} -> "
                     f"{after['val_miou_box']:.3f}")
    return ("; ".join(parts) + ". Lineage in the documentation.")[:500]


def _before_after(lineage: dict) -> tuple[dict, dict]:
    before = lineage.get("baseline") or {}
    history = [h for h in lineage.get("metrics") or [] if isinstance(h, dict)]
    best = lineage.get("best_epoch")
    after = next((h for h in history if h.get("epoch") == best), history[-1] if history else {})
    return dict(before), dict(after)


def documentation(source: ExportSource) -> str:
    """The package's documentation (markdown): lineage, held-out scores, history, config,
    versions and the full lineage as JSON."""
    lin = source.lineage
    rows = [("model", source.name), ("architecture", source.model_type),
            ("base model", lin.get("base_model")), ("run", lin.get("run")),
            ("mode", lin.get("mode")), ("training set", lin.get("dataset")),
            ("training-set content hash (sha256)", lin.get("dataset_content_hash")),
            ("best epoch", lin.get("best_epoch")),
            ("pixel scaling in training", describe_scaling(source.normalisation)),
            ("partial (last checkpoint of an unfinished run)", lin.get("partial")),
            ("instance-segmentation decoder", "yes" if source.has_decoder else "no")]
    lines = [f"# {source.name}", "", description(source), "", "## Lineage", "",
             "| what | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows if v is not None]
    before, after = _before_after(lin)
    keys = sorted(k for k in {*before, *after}
                  if isinstance(after.get(k, before.get(k)), int | float) and k != "epoch")
    lines += ["", "## Validation", ""]
    if keys:
        lines += ["Scores on the held-out (val) split of the training set, before and after "
                  "fine-tuning:", "", "| metric | before | after |", "| --- | --- | --- |"]
        lines += [f"| {k} | {_num(before.get(k))} | {_num(after.get(k))} |" for k in keys]
    else:
        lines.append("No held-out scores were recorded for this model.")
    history = [h for h in lin.get("metrics") or [] if isinstance(h, dict)]
    if history:
        cols = sorted({k for h in history for k in h if isinstance(h[k], int | float)} - {"epoch"})
        lines += ["", "## Training history", "", "| epoch | " + " | ".join(cols) + " |",
                  "| --- " * (len(cols) + 1) + "|"]
        lines += [f"| {h.get('epoch')} | " + " | ".join(_num(h.get(c)) for c in cols) + " |"
                  for h in history]
    lines += ["", "## Use", "", "In napari with micro-sam (the package's weights load with "
              f"`micro_sam.util.get_sam_model(model_type='{source.model_type}', "
              "checkpoint_path=...)`), in napari-raysam, or in any bioimage.io tool.",
              *(["", note] if (note := scaling_note(source.normalisation)) else []),
              "", "## Lineage (machine-readable)", "", "```json",
              json.dumps(lin, indent=1, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines)


def _num(value) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "-"
