"""Side-by-side benchmarks of bandersnatch-clone and bandersnatch 8.2 (see run.py)."""
