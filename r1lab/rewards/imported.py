"""Your own reward functions, named by import path `module:function` (r1lab/plugins.py says how they are found)."""

from __future__ import annotations

from collections.abc import Callable

from r1lab.plugins import import_path, is_import_path

__all__ = ["import_reward", "is_import_path"]


def import_reward(name: str) -> Callable:
    """The callable `name` ("pkg.module:function") names; a ValueError saying what is wrong."""
    return import_path(name, "reward")
