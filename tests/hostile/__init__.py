"""The hostile-input corpus: datasets, checkpoints, run-folder corruptions, zips and strings, made by code.

Every builder writes into a folder the test gives it (or returns bytes / strings), so nothing big is
committed and every future change runs against the same inputs. See ``tests/hostile/test_*.py``.
"""
