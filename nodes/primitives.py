"""Primitive value nodes: a literal that several inputs can share, or a seed the editor can randomise."""

from __future__ import annotations

import random
from typing import Annotated

from pydantic import Field

from engine.node import Widget, node

SEED_MAX = 2**64 - 1


@node(category="primitives", display_name="Integer", output_name="value")
def primitive_int(value: int = 0) -> int:
    """An integer to feed several inputs at once."""
    return value


@node(category="primitives", display_name="Float", output_name="value")
def primitive_float(value: float = 0.0) -> float:
    """A real number to feed several inputs at once."""
    return value


@node(category="primitives", display_name="String", output_name="value")
def primitive_string(value: Annotated[str, Widget(multiline=True)] = "") -> str:
    """Text to feed several inputs at once (prompts shared by two encoders, file names, ...)."""
    return value


@node(category="primitives", display_name="Boolean", output_name="value")
def primitive_boolean(value: bool = False) -> bool:
    """True or false."""
    return value


@node(category="primitives", display_name="Seed", output_name="seed")
def seed(seed: Annotated[int, Field(0, ge=0, le=SEED_MAX), Widget(seed=True)] = 0) -> int:
    """A seed; the editor offers fixed / increment / randomize after each run."""
    return seed


@node(category="primitives", display_name="Random Seed", output_name="seed", deterministic=False)
def random_seed() -> int:
    """A fresh random seed on every run (never cached, so everything after it runs again)."""
    return random.SystemRandom().randrange(0, 2**63)
