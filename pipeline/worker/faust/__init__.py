"""Where siyu replaces Faust internals, each module named after the Faust module it
overrides: ``aiokafka`` (``faust/transport/drivers/aiokafka.py``: message delivery, the
consumer on the worker's loop, the fenced producer), ``recovery`` (``faust/tables/recovery.py``:
changelogs read back a take at a time) and ``tables`` (``faust/tables/base.py``: changelog
writes as whole record batches)."""
