"""The ClickHouse sink: migrations, row batches on Kafka, batched idempotent inserts.

Data path: agents publish :class:`~pipeline.sink.rows.RowBatch` messages to the rows topic
(and rejects to the dead-letter topic); :class:`~pipeline.sink.service.SinkService` consumes
both, inserts thousands of rows per ClickHouse insert, and commits Kafka offsets only after
ClickHouse accepted the insert. Tables are ReplacingMergeTree keyed so that a retried or
replayed batch never changes a query result.
"""
