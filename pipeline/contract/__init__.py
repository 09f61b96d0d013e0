"""What crosses process boundaries: the event models, producer envelopes, the one
partitioning rule, dead letters and the collector's HTTP models. Imports nothing of the
worker, the sink or Faust."""
