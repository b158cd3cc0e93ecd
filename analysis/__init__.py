"""Analysis: records and checkpoints in, tables, figures and the results report out (never
re-trains).

Subcommands of ``python -m analysis``: ``tables``, ``masks``, ``uncertainty``, ``invariance``,
``curves``, ``report``. Each module exposes ``add_arguments(parser)`` and ``run(args) ->
list[Path]`` (files written).
"""
