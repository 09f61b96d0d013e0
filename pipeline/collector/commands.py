"""The ``siyu collector``, ``siyu collector-key`` and ``siyu openapi`` commands.

Kept here rather than in :mod:`pipeline.cli` so the command line module stays a table of
contents; aiohttp and aiokafka are imported only when the collector actually runs.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from pydantic import TypeAdapter, ValidationError

from pipeline.collector.keys import check_key_strength, hash_key, new_key
from pipeline.contract.events import ShortName
from pipeline.settings import load_settings

OPENAPI_FILE = Path("schemas/openapi/collector.json")


@click.command()
@click.option("--host", default=None, help="Address to bind [SIYU_COLLECTOR_HOST].")
@click.option("--port", type=int, default=None, help="Port to bind [SIYU_COLLECTOR_PORT].")
def collector(host: str | None, port: int | None) -> None:
    """Run the HTTP collector: POST /v1/events for brand apps, then Kafka."""
    from aiohttp import web

    from pipeline.collector.keys import KeyRing
    from pipeline.collector.server import EVENTS_PATH, Collector
    from pipeline.kafka.topics import ensure_topics, topic_specs

    s = load_settings()
    keys = KeyRing.from_settings(s)
    # Only the two topics the collector writes; the worker creates the rest.
    specs = [t for t in topic_specs(s) if t.name in (s.topic_events, s.topic_dead_letters)]
    created = ensure_topics(s.kafka_bootstrap, specs)
    if created:
        click.echo(f"created topics: {', '.join(created)}")
    logging.basicConfig(
        level=s.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    host = host or s.collector_host
    port = s.collector_port if port is None else port
    brands = ", ".join(sorted(keys.brands))
    click.echo(
        f"collector on http://{host}:{port}{EVENTS_PATH} for {len(keys)} key(s) "
        f"(brands: {brands}) -> {s.topic_events}"
    )
    web.run_app(
        Collector(s, keys).app(),
        host=host,
        port=port,
        access_log=logging.getLogger("aiohttp.access") if s.log_level == "debug" else None,
        print=None,
        shutdown_timeout=s.collector_send_timeout_s + 1,
    )


@click.group(name="collector-key")
def collector_key() -> None:
    """Make API keys for brands and the hashes the collector is configured with."""


@collector_key.command(name="new")
@click.argument("brand")
def key_new(brand: str) -> None:
    """Generate a key for BRAND; print it once, with the hash to configure."""
    try:
        TypeAdapter(ShortName).validate_python(brand)
    except ValidationError:
        raise click.BadParameter(
            "a brand_id is 1-64 characters without control characters", param_hint="BRAND"
        ) from None
    key = new_key()
    digest = hash_key(key)
    click.echo(f"key  (give it to {brand}; it is shown only now): {key}")
    click.echo(f"hash (configure this, never the key):           {digest}")
    click.echo(f"""SIYU_COLLECTOR_KEYS='{{"{digest}": "{brand}"}}'""")


@collector_key.command(name="hash")
def key_hash() -> None:
    """Print the hash of a key read from standard input (or typed, hidden)."""
    if sys.stdin.isatty():
        key = click.prompt("key", hide_input=True).strip()
    else:
        key = sys.stdin.readline().strip()
    check_key_strength(key)
    click.echo(hash_key(key))


@click.command()
@click.option("--check", is_flag=True, help="Fail if the file differs from the code.")
@click.option(
    "--out",
    default=OPENAPI_FILE,
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
)
def openapi(check: bool, out: Path) -> None:
    """Write the collector's OpenAPI description (generated from its models)."""
    from pipeline.collector.openapi import openapi_text

    text = openapi_text()
    if check:
        if not out.exists() or out.read_text("utf-8") != text:
            raise click.ClickException(f"{out} differs from the code; run `siyu openapi`")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, "utf-8")
    click.echo(f"wrote {out}")
