"""The ``siyu`` command line: worker, migrate, schemas, check, demo, summary."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from pipeline.collector.commands import collector, collector_key, openapi
from pipeline.errors import SiyuError
from pipeline.sdk.emitfile import emit
from pipeline.settings import Settings, load_settings


def _settings() -> Settings:
    return load_settings()


def _fail(err: SiyuError) -> None:
    click.echo(f"siyu: {err}", err=True)
    sys.exit(2)


class _Group(click.Group):
    """Reports SiyuError as one line and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SiyuError as err:
            _fail(err)


@click.group(cls=_Group)
def main() -> None:
    """siyu: which KOLs and which customers really bring customers, live."""
    # clickhouse-driver logs each failed connection with its traceback; without a handler
    # Python would print it before siyu's one-line error. Where logging is configured (the
    # worker), the records still propagate to it.
    logging.getLogger("clickhouse_driver").addHandler(logging.NullHandler())


@main.command()
def worker() -> None:
    """Run one worker: ingest agent, state agents and the ClickHouse sink."""
    from faust.worker import Worker

    from pipeline.kafka.topics import check_session_timeout, ensure_topics, topic_specs
    from pipeline.worker.app import create_app
    from pipeline.worker.tuning import claim_data_dir, tune_gc

    s = _settings()
    logging.basicConfig(
        level=s.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Held until the process ends: no second RocksDB worker may share the directory.
    data_dir_claim = claim_data_dir(s.data_dir) if s.store == "rocksdb" else None
    created = ensure_topics(s.kafka_bootstrap, topic_specs(s))
    if created:
        click.echo(f"created topics: {', '.join(created)}")
    check_session_timeout(s.kafka_bootstrap, s.session_timeout_s)
    _check_clickhouse(s)
    Path(s.data_dir).mkdir(parents=True, exist_ok=True)
    app = create_app(s)
    tune_gc()
    faust_worker = Worker(app, loglevel=s.log_level, quiet=True, redirect_stdouts=False)
    try:
        faust_worker.execute_from_commandline()
    finally:
        if data_dir_claim is not None:
            data_dir_claim.close()


def _check_clickhouse(s: Settings) -> None:
    from pipeline.sink.clickhouse import CONNECTION_ERRORS, client_from_url, unavailable

    client = client_from_url(s.clickhouse_url, database="default")
    try:
        client.execute("SELECT 1")
    except CONNECTION_ERRORS as err:
        raise unavailable(s.clickhouse_url, err) from None
    finally:
        client.disconnect()


@main.command()
def migrate() -> None:
    """Create or upgrade the ClickHouse schema (safe to run twice)."""
    from pipeline.sink.clickhouse import (
        CONNECTION_ERRORS,
        client_from_url,
        server_version,
        unavailable,
    )
    from pipeline.sink.cluster import cluster_layout, insert_settings
    from pipeline.sink.migrations import migrate as run_migrations

    s = _settings()
    layout = cluster_layout(s)
    client = client_from_url(s.clickhouse_url, database="default", **insert_settings(s))
    try:
        run_migrations(
            client, s.clickhouse_database, server_version(client), cluster=layout, log=click.echo
        )
    except CONNECTION_ERRORS as err:
        raise unavailable(s.clickhouse_url, err) from None
    finally:
        client.disconnect()


@main.command()
def topics() -> None:
    """Create the pipeline's Kafka topics if missing and check existing ones."""
    from pipeline.kafka.topics import ensure_topics, topic_specs

    s = _settings()
    created = ensure_topics(s.kafka_bootstrap, topic_specs(s))
    click.echo(f"created: {', '.join(created)}" if created else "all topics present and correct")


@main.command()
@click.option("--check", is_flag=True, help="Fail if the files differ from the models.")
@click.option(
    "--dir",
    "out_dir",
    default="schemas/v1",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
def schemas(check: bool, out_dir: Path) -> None:
    """Write the JSON Schemas of the event contract (generated from the Pydantic models)."""
    from pipeline.contract.events import event_json_schemas

    stale = []
    for name, schema in event_json_schemas().items():
        text = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        path = out_dir / name
        if check:
            if not path.exists() or path.read_text("utf-8") != text:
                stale.append(str(path))
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text, "utf-8")
            click.echo(f"wrote {path}")
    if stale:
        raise click.ClickException(
            f"schemas differ from the models: {', '.join(stale)}; run `siyu schemas`"
        )


@main.command()
def check() -> None:
    """Check that Kafka and ClickHouse answer, in one line each."""
    from pipeline.kafka.topics import admin_client

    s = _settings()
    admin = admin_client(s.kafka_bootstrap)
    admin.close()
    click.echo(f"kafka      {s.kafka_bootstrap}: ok")
    _check_clickhouse(s)
    click.echo(f"clickhouse {s.clickhouse_address}: ok")


@main.command()
@click.option("--users", default=4000, show_default=True, type=click.IntRange(10), help="Audience.")
@click.option(
    "--days", default=21, show_default=True, type=click.IntRange(1), help="Days of traffic."
)
@click.option("--seed", default=7, show_default=True, help="Random seed (same seed, same events).")
def demo(users: int, days: int, seed: int) -> None:
    """Run a generated brand through collector, Kafka, worker and ClickHouse; print the
    answers and whether they agree with a recomputation (exit code 1 if not)."""
    from pipeline.demo.brand import BrandParams
    from pipeline.demo.run import demo_command

    params = BrandParams(users=users, days=days, seed=seed)
    if not demo_command(_settings(), params, echo=click.echo).agrees:
        sys.exit(1)


@main.command()
@click.option("--brand", default=None, help="Brand id [the demo brand's].")
def summary(brand: str | None) -> None:
    """Print the demo's answers (KOLs, KOCs, tiers, conversion, dead letters) for a brand,
    read from the demo's ClickHouse database."""
    from pipeline.demo.brand import BrandParams
    from pipeline.demo.run import demo_database, print_answers

    print_answers(demo_database(_settings()), brand or BrandParams().brand_id, echo=click.echo)


# The HTTP collector and the SDK keep their commands beside their code.
for _command in (collector, collector_key, openapi, emit):
    main.add_command(_command)


if __name__ == "__main__":
    main()
