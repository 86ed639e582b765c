"""Operation commands of `crypto-live`, one module each, found by name.

A command module defines ``NAME`` and ``HELP`` (str), ``add_arguments(parser)`` and
``run(settings, args) -> int`` (the exit code). Keep imports at module level light: heavy
ones go inside ``run`` so `crypto-live --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from typing import Protocol, cast

from core.settings import Settings


class Command(Protocol):
    NAME: str
    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, settings: Settings, args: argparse.Namespace) -> int: ...


def discover() -> dict[str, Command]:
    """Every command module in this package, by command name."""
    found: dict[str, Command] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = cast(Command, importlib.import_module(f"{__name__}.{info.name}"))
        found[module.NAME] = module
    return found
