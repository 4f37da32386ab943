"""`r1lab serve`: an OpenAI-compatible HTTP server for a model (see app.py)."""
