"""Markdown tables of the speed sweeps and of the accuracy runs.

`python -m lra_ponet.report` (`__main__`) writes them. The parts: `load`
reads the bench CSVs and the runs' results.json, `speed` makes the speed and
memory tables, `accuracy` the accuracy table, `published` holds the published
numbers both compare with, and `markdown` the table formatting they share.
"""
