"""Tools a model calls mid-episode: the shipped ones (`calculator`), calls parsed from its text, and a `ToolBox`
that runs them so that no tool can hurt the run (a time limit, an output cap, every failure an error string)."""

from r1lab.tools.calculator import calculator

__all__ = ["calculator"]
