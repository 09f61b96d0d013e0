"""Kafka administration: topic specs and creation, offsets, and when the pipeline is quiet."""
