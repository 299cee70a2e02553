"""Benchmarks: what the pipeline costs and how fast it reaches a quality (``ptychopipe bench``).

What belongs here: the throughput of the network (:mod:`.throughput`, ``ptychopipe bench
model``) and the time to quality of the trained network against the iterative reference
(:mod:`.timetoquality`, ``ptychopipe bench time-to-quality``). Each benchmark is imported
as its module: the two share names (``markdown``, ``COLUMNS``), and the throughput module
loads Keras on import. Benchmarks are commands, not tests, and write no stage artifact.
"""
