"""The oracle tooling: trace files, comparing traces (with transformers too), assertions for other
projects' tests, the ``arcee-np trace`` / ``arcee-np compare``
commands, and ``arcee-np gguf-check`` (gguf_check.py: what a conversion to llama.cpp's GGUF changed)."""
