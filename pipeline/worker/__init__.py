"""The Faust worker: the app, its agents, the durable order of a batch, watermarks, the
watchdog and process tuning. Where siyu replaces Faust internals: :mod:`pipeline.worker.faust`."""
