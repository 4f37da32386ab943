"""Models out of r1lab into other runtimes: GGUF files for llama.cpp and ollama (`gguf.py`), their tokenizer
(`vocab.py`), chat template and ollama Modelfile (`modelfile.py`)."""
