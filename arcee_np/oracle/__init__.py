"""The oracle tooling: trace files, comparing traces (with transformers too), assertions for other
projects' tests, and the ``arcee-np trace`` / ``arcee-np compare`` commands."""
