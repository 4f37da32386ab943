"""What loads, saves and adapts models: device and precision, KV cache and checkpointing, weights, HF I/O, LoRA, the hub."""
