"""``siyu emit FILE.jsonl``: send a file of events through the SDK, with a progress bar.

Each non-blank line is one event object or an envelope, as on the events topic. Lines that
do not validate are not sent; each is reported with its line number and reason, and the
command exits with 1, so a bad line is never skipped unnoticed. Blank lines are ignored.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click

from pipeline.contract.events import AnyEvent, decode_message
from pipeline.sdk.base import DeliveryError, Emitter, Rejected
from pipeline.sdk.http_emitter import RequestRefused

#: Problems listed one per line before "... and N more".
_MAX_LISTED = 20


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line (or one event of an envelope line) that is not a valid event."""

    line: int
    index: int | None
    reason: str
    detail: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" event {self.index}" if self.index is not None else "")
        return f"{where}: {self.reason}: {self.detail}"


@dataclass
class EmitReport:
    """What ``siyu emit`` did with a file."""

    sent: int = 0
    bad: list[BadLine] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.bad or self.rejected or self.failed)


def read_events(path: Path) -> Iterator[tuple[int, int, list[AnyEvent], list[BadLine]]]:
    """``(line number, bytes read, valid events, bad ones)`` for each line of ``path``."""
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                yield number, len(line), [], []
                continue
            decoded = decode_message(line.rstrip(b"\r\n"))
            bad = [BadLine(number, r.index, str(r.reason), r.detail) for r in decoded.rejects]
            yield number, len(line), decoded.events, bad


def emit_file(path: Path, emitter: Emitter, show_progress: bool = True) -> EmitReport:
    """Track every valid event of ``path`` on ``emitter``, flush, and report."""
    report = EmitReport()
    tracked = 0
    with click.progressbar(
        length=path.stat().st_size,
        label=f"sending {path.name}",
        file=None if show_progress else io.StringIO(),
    ) as bar:
        try:
            for _, size, events, bad in read_events(path):
                report.bad.extend(bad)
                for event in events:
                    try:
                        emitter.track(event)
                        tracked += 1
                    except RequestRefused as err:
                        _refused(report, err)
                bar.update(size)
            result = emitter.flush()
            report.sent += result.delivered
            report.rejected.extend(result.rejected)
        except RequestRefused as err:
            _refused(report, err)
        except DeliveryError as err:
            report.failed += err.undelivered
            report.errors.append(str(err))
    return report


def _refused(report: EmitReport, err: RequestRefused) -> None:
    report.failed += len(err.events)
    report.errors.append(str(err))
    if err.status == 401:  # every later request would be refused the same way
        raise click.ClickException(str(err))


def print_report(report: EmitReport, via: str) -> None:
    click.echo(f"sent {report.sent} event(s) via {via}")
    if report.bad:
        click.echo(f"{len(report.bad)} bad line(s) not sent:", err=True)
        for b in report.bad[:_MAX_LISTED]:
            click.echo(f"  {b}", err=True)
        if len(report.bad) > _MAX_LISTED:
            click.echo(f"  ... and {len(report.bad) - _MAX_LISTED} more", err=True)
    if report.rejected:
        click.echo(f"{len(report.rejected)} event(s) rejected by the collector:", err=True)
        for r in report.rejected[:_MAX_LISTED]:
            click.echo(f"  {r.event_id}: {r.reason}: {r.detail}", err=True)
    if report.failed:
        click.echo(f"{report.failed} event(s) not delivered:", err=True)
        for e in report.errors[:_MAX_LISTED]:
            click.echo(f"  {e}", err=True)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--via",
    type=click.Choice(["kafka", "http"]),
    default="kafka",
    show_default=True,
    help="Straight to Kafka, or through the collector.",
)
@click.option("--url", default=None, help="Collector base URL [from SIYU_COLLECTOR_HOST/PORT].")
@click.option(
    "--api-key",
    envvar="SIYU_API_KEY",
    default=None,
    help="The brand's API key for --via http (prefer the SIYU_API_KEY variable).",
)
@click.option("--batch-size", default=500, show_default=True, help="Events per envelope.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def emit(
    file: Path, via: str, url: str | None, api_key: str | None, batch_size: int, quiet: bool
) -> None:
    """Send a JSON-lines FILE of events (one event or envelope per line); bad lines are
    reported with their line numbers and make the exit code 1."""
    emitter: Emitter
    if via == "http":
        if not api_key:
            raise click.UsageError("--via http needs the brand's key in SIYU_API_KEY")
        from pipeline.sdk.http_emitter import HttpEmitter

        emitter = HttpEmitter(api_key, url=url, batch_size=batch_size)
    else:
        from pipeline.sdk.kafka_emitter import KafkaEmitter

        emitter = KafkaEmitter(batch_size=batch_size)
    try:
        report = emit_file(file, emitter, show_progress=not quiet)
        if report.failed:
            emitter.discard()  # already reported as not delivered; do not retry on close
    finally:
        try:
            emitter.close()
        except DeliveryError as err:
            click.echo(f"siyu: {err}", err=True)
    print_report(report, via)
    if not report.ok:
        raise SystemExit(1)
