"""Speed and memory of one training step per (model, sequence length) cell.

`python -m lra_ponet.bench` (`__main__`: the flags and their checks) runs a
sweep: `sweep` runs each cell in a subprocess of `child`, which measures it;
`schema` holds the CSV's columns and what they mean, `peaks` the device peak
rates; each row's stamp is `lra_ponet.stamp`'s.
"""
