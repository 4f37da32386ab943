"""r1lab: the DeepSeek-R1 training system, from a tiny world on a CPU to real models."""

__version__ = "0.1.0"
