"""Microbenchmarks of one operation each, for choices measured but not adopted (run them in a
scratch venv that has the candidate library; see each module)."""
