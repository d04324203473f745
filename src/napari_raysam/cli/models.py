"""`napari-raysam models ...` and `napari-raysam cache ...`: what models exist (and sharing one
as a bioimage.io package), what is cached."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="list, check and export SAM models")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    listing = models_sub.add_parser("list", help="model names you can use as --model")
    listing.set_defaults(func=_list)
    check = models_sub.add_parser("check", help="load a model spec and print what it is")
    check.add_argument("spec", help="tiny_cells, tiny, a micro-sam name such as vit_b_lm, "
                                        "run:NAME or a checkpoint file")
    check.set_defaults(func=_check)
    export = models_sub.add_parser(
        "export", help="write a fine-tuned model as a bioimage.io package (.zip), tested with "
                       "bioimage.io's own checks")
    export.add_argument("name", help="a fetched model (NAME or run:NAME) or a checkpoint file "
                                     "of a vit_t/b/l/h model")
    export.add_argument("--out", required=True, help="the package to write, FILE.zip")
    export.add_argument("--author", action="append", default=None,
                        help="author named in the package (repeatable; default: $USER)")
    export.add_argument("--overwrite", action="store_true",
                        help="replace an existing FILE.zip (default: refuse)")
    export.add_argument("--no-validate", dest="validate", action="store_false",
                        help="skip bioimage.io's test of the written package (default: test "
                             "it; about a minute of CPU for vit_b)")
    export.set_defaults(func=_export)

    cache = sub.add_parser("cache", help="the on-disk embedding cache")
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="ACTION")
    info = cache_sub.add_parser("info", help="where the cache is and how big")
    info.set_defaults(func=_cache_info)
    clear = cache_sub.add_parser("clear", help="delete all cached embeddings")
    clear.set_defaults(func=_cache_clear)


def _list(args) -> int:
    print(models_text())
    return 0


def models_text() -> str:
    """Every model name ``--model`` and the Segment dock take, grouped: built-in, micro-sam's
    registry, and fine-tuned models registered here (``run:NAME``)."""
    from napari_raysam.core.model_store import list_registered_models
    from napari_raysam.core.runs.text import model_label
    from napari_raysam.core.sam.models import registry_names

    lines = ["built-in (shipped, offline):",
             "  tiny_cells   tiny SAM trained on synthetic round cells (the default base model)",
             "  tiny         the same tiny architecture with random weights (tests)",
             "micro-sam (downloaded on first use):"]
    try:
        names = registry_names()
    except Exception as exc:  # noqa: BLE001 - the rest of the list still helps
        names, lines = [], [*lines, f"  (micro-sam's registry is unavailable: {exc})"]
    lines += [f"  {name}" for name in names]
    lines.append("fine-tuned here (from `train`, `submit`, `runs fetch` or the Train dock):")
    registered = list_registered_models()
    for m in registered:
        after = (m.metrics or {}).get("after") or {}
        score = (f", val box mIoU {after['val_miou_box']:.3f}"
                 if after.get("val_miou_box") is not None else "")
        lines.append(f"  {model_label(m)}  (base {m.base_model}{score})")
    if not registered:
        lines.append("  none yet: `napari-raysam train` or `submit` registers its model as "
                     "run:NAME")
    return "\n".join(lines)


def _check(args) -> int:
    from napari_raysam.core.sam.models import load_model

    model = load_model(args.spec)
    params = sum(p.numel() for p in model.sam.parameters())
    print(f"{args.spec}: {model.model_type}, {params / 1e6:.2f} M parameters, "
          f"input {model.img_size} px, device {model.device}, "
          f"encoder {model.encoder_fingerprint[:12]}")
    return 0


def _export(args) -> int:
    from napari_raysam.core.sam.export import export_bioimageio

    result = export_bioimageio(args.name, args.out, authors=args.author,
                               overwrite=args.overwrite, validate=args.validate,
                               progress=lambda msg: print(msg, flush=True))
    print(f"{result.path}: bioimage.io package of a {result.model_type} model, "
          f"{result.size_bytes / 1e6:.0f} MB, bioimage.io test: {result.validation}")
    return 0


def _cache_info(args) -> int:
    from napari_raysam.core.sam.embeddings import EmbeddingCache

    cache = EmbeddingCache()
    print(f"{cache.root}: {len(cache.entries())} entries, {cache.size_bytes() / 1e6:.1f} MB")
    return 0


def _cache_clear(args) -> int:
    from napari_raysam.core.sam.embeddings import EmbeddingCache

    freed = EmbeddingCache().clear()
    print(f"freed {freed / 1e6:.1f} MB")
    return 0
