"""The offline lab: loss models and traces, network impairments, quality metrics.

``loss`` and ``impair`` are also used live by the relay (streaming, seeded, clock-free);
``metrics`` needs the optional ``lab`` extras (visqol-python, speechmos) only for
ViSQOL and PLCMOS.
"""
