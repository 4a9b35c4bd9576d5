"""The oracle tooling: trace files (tracefile.py), comparing traces with one another and with transformers
(compare.py, the public face of tolerances.py, arrays.py, diagnosis.py, report.py and transformers_hooks.py),
assertions for other projects' tests (testing.py), and what a conversion to llama.cpp's GGUF changed
(gguf_check.py, gguf_report.py). The ``arcee-np trace`` / ``compare`` / ``gguf-check`` commands over them
live in arcee_np/cli/."""
