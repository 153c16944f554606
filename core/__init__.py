"""What every other package may import: the error tree and the data contract's vocabulary.

Imports point down: ``core`` imports nothing of the project; ``config`` imports ``core``; ``features``,
``training`` and ``serving`` import ``core`` and ``config``; ``jobs`` import all of those; ``dags`` import
``jobs`` (tests/test_layering.py walks the imports and fails on one that points up or forms a cycle).
"""
