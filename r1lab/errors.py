"""The errors every layer raises about the user's input, and the close-match suggestion they carry. It
imports nothing of r1lab, so the lowest layers (models, hub, rewards) can raise a ConfigError without
importing the settings."""

from __future__ import annotations

import difflib


class ConfigError(ValueError):
    """A recipe, override or input file is wrong; the message names the field, file or line."""


def did_you_mean(word: str, choices) -> str:
    """" (did you mean 'x'?)" for the closest choice, or ""."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
