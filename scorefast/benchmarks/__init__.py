"""Benchmarks of the scorefast ops against the PyTorch code they replace.

``harness`` times and records (one timing loop, one table formatter, JSON results); each
op family has a case module that defines what is timed: ``langevin`` (langevin_step),
``gmm`` (gmm_score), ``dsm`` (the DSM step) and ``chain`` (gmm_chain and whole samplers, with
``blackjax_provider`` timing BlackJAX's samplers on the same chains when JAX is installed).
``scorefast bench`` and the scripts in bench/ run them.

Nothing is imported here: importing scorefast never loads the benchmarks.
"""
