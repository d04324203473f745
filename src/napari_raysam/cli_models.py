"""`napari-raysam models ...` and `napari-raysam cache ...`: what models exist, what is cached."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="list and check SAM models")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    listing = models_sub.add_parser("list", help="model names you can use as --model")
    listing.set_defaults(func=_list)
    check = models_sub.add_parser("check", help="load a model spec and print what it is")
    check.add_argument("spec", help="'tiny', a micro-sam name such as vit_b_lm, or a file")
    check.set_defaults(func=_check)

    cache = sub.add_parser("cache", help="the on-disk embedding cache")
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="ACTION")
    info = cache_sub.add_parser("info", help="where the cache is and how big")
    info.set_defaults(func=_cache_info)
    clear = cache_sub.add_parser("clear", help="delete all cached embeddings")
    clear.set_defaults(func=_cache_clear)


def _list(args) -> int:
    from .core.models import registry_names

    print("tiny  (built-in, offline, for tests and demos)")
    for name in registry_names():
        print(name)
    return 0


def _check(args) -> int:
    from .core.models import load_model

    model = load_model(args.spec)
    params = sum(p.numel() for p in model.sam.parameters())
    print(f"{args.spec}: {model.model_type}, {params / 1e6:.2f} M parameters, "
          f"input {model.img_size} px, device {model.device}, "
          f"encoder {model.encoder_fingerprint[:12]}")
    return 0


def _cache_info(args) -> int:
    from .core.embeddings import EmbeddingCache

    cache = EmbeddingCache()
    print(f"{cache.root}: {len(cache.entries())} entries, {cache.size_bytes() / 1e6:.1f} MB")
    return 0


def _cache_clear(args) -> int:
    from .core.embeddings import EmbeddingCache

    freed = EmbeddingCache().clear()
    print(f"freed {freed / 1e6:.1f} MB")
    return 0
