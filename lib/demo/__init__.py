"""The main job (``make demo`` = ``python -m lib.demo``): synthetic videos → extractor → TSV → ONE
multi-task model → every task → a report. The library knows nothing of it: nothing outside ``lib/demo``
imports this package (tests/test_layering.py).

    run.py        the command: its flags and steps (data, Swin pretraining, training, report)
    synthetic.py  the demo videos and their annotations in every reference format
    backbone.py   the Video Swin's attribute pretraining (the demo's stand-in for Kinetics weights)
    timing.py     a training step's cost per stream on this machine
    diagnostics/  probes of the demo recipe (``python -m lib.demo.diagnostics.NAME --help``)

"""
