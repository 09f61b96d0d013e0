"""The HTTP collector: the front door for brand apps that speak HTTP rather than Kafka.

``POST /v1/events`` takes one event or an envelope, authenticates the brand by its API key,
validates each event against the v1 contract, and answers only after Kafka confirmed the
accepted events (``acks=all``). Rejected events are reported per event and dead-lettered.
Modules, in the order a request meets them:

- :mod:`~pipeline.collector.keys`: API keys, stored as hashes, mapped to brands;
- :mod:`~pipeline.collector.limits`: in-flight requests and bytes, bounded;
- :mod:`~pipeline.collector.intake`: body → accepted events and rejects (pure, no I/O);
- :mod:`~pipeline.collector.publish`: accepted events and dead letters to Kafka;
- :mod:`~pipeline.contract.http`: the response bodies (and the OpenAPI schemas);
- :mod:`~pipeline.collector.server`: the aiohttp application tying them together;
- :mod:`~pipeline.collector.metrics`, :mod:`~pipeline.collector.openapi`,
  :mod:`~pipeline.collector.commands` (the ``siyu collector*`` commands).

See docs/collector.md.
"""
