"""Where siyu replaces Faust internals, each module named after the Faust module it
overrides:

- ``aiokafka`` overrides ``faust.transport.drivers.aiokafka``: message delivery without a
  race of tasks, the consumer on the worker's own loop, a producer the freeze fence guards;
- ``recovery`` overrides ``faust.tables.recovery``: changelogs read back a take at a time;
- ``tables`` overrides the changelog writes of ``faust.tables``: a batch's table writes as
  whole record batches, put into the stores once Kafka confirmed them.
"""
