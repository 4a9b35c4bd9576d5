"""Solutions of the exercises, one module per exercise notebook: plain NumPy, written for reading.

Look here after trying; ``tests/test_exercises.py`` runs every check on these and proves they pass.
"""
