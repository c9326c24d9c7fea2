"""Every Kafka touch: the Faust worker, producers, the collector, and the CLI.

Only the entry points (``cli``, ``run``, ``demo``, ``bench``) import ``sinks``. What people
read (the board report, its charts, the bench tables, the progress line) is in
:mod:`streams.present`, which touches no Kafka.
"""

__all__: list[str] = []
