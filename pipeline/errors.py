"""Errors siyu reports to people: each message says what happened and what to do."""

from __future__ import annotations


class SiyuError(Exception):
    """Base of errors shown to the user as one line, without a traceback."""


class ConfigError(SiyuError):
    """A setting is missing or malformed."""


class ServiceUnavailable(SiyuError):
    """Kafka or ClickHouse cannot be reached."""


class TopicMismatch(SiyuError):
    """An existing topic disagrees with what siyu needs (partitions, cleanup policy)."""


class MigrationError(SiyuError):
    """A schema migration failed or the recorded history disagrees with the files."""
