"""`tron serve`: a bundle behind HTTP on 127.0.0.1 (POST /recommend, GET /health, /metadata, /metrics)."""

from __future__ import annotations

from pathlib import Path

import click

from tron_cli.choices import DEVICES
from tron_cli.cli._params import Finite, Whole
from tron_cli.cli._ui import UI, pass_ui


@click.command(short_help="Serve a bundle over HTTP: micro-batched, with the item index when the bundle has one.")
@click.argument("model", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=Whole(0, 65535), default=8000, show_default=True, help="Port to listen on (0: a free one, printed).")
@click.option("--exact", is_flag=True, help="Score the whole catalogue even when the bundle has an item index.")
@click.option(
    "--index-param",
    "index_params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A search parameter of the index, the speed/recall knob: ef_search (hnsw), nprobe (ivf). Repeatable.",
)
@click.option("--batch-window-ms", type=Finite(0, 1000), default=2.0, show_default=True, help="How long a request waits for others to batch with.")
@click.option("--max-batch", type=Whole(min=1), default=64, show_default=True, help="Sessions scored together at most.")
@click.option("--max-k", type=Whole(min=1), default=1000, show_default=True, help="Largest k a request may ask for.")
@click.option("--max-session-length", type=Whole(min=1), default=1000, show_default=True, help="Most item ids in one session of a request.")
@click.option("--max-sessions", type=Whole(min=1), default=256, show_default=True, help="Most sessions in one request.")
@click.option("--max-filter-items", type=Whole(min=0), default=100_000, show_default=True, help="Most ids in a request's allow or deny list.")
@click.option("--max-body-bytes", type=Whole(min=1), default=1 << 20, show_default=True, help="Largest request body (413 above).")
@click.option(
    "--threads",
    type=Whole(min=0),
    default=0,
    show_default=True,
    help="CPU threads for scoring; 0: every core this process may use (fewer on cores other work shares).",
)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True, help="Where to score.")
@click.option(
    "--order-weight",
    type=Finite(0, 1),
    help="A MultiTRON model (tron train --objective multitron): the order weight of requests that give none (a request's or session's \"order_weight\" wins) [default: 0.5].",
)
@click.option(
    "--watch",
    is_flag=True,
    help="Reload when MODEL points at another bundle (a symlink switched, a bundle re-exported), looked at every second.",
)
@click.option(
    "--admin-token",
    envvar="TRON_ADMIN_TOKEN",
    help="Turn on POST /admin/reload, for requests with the header Authorization: Bearer TOKEN (TRON_ADMIN_TOKEN keeps it out of ps).",
)
@pass_ui
def serve(
    ui: UI,
    model: Path | None,
    host: str,
    port: int,
    exact: bool,
    index_params: tuple[str, ...],
    device: str,
    order_weight: float | None,
    watch: bool,
    admin_token: str | None,
    **limits,
) -> None:
    """Answer recommendation requests over HTTP until SIGTERM (which drains in-flight requests, exit 0).

    Reads MODEL (a bundle from tron export, its name under $TRON_HOME/bundles/, or a run dir; default:
    the newest bundle), refusing a bundle whose files fail their sha256. Serves POST /recommend with
    {"items": [RAW_ID, ...], "k": 20, "exclude_seen": false, "allow": [...], "deny": [...]} or
    {"sessions": [{"session": ID, "items": [...]}, ...], ...}, answering raw ids and scores; a MultiTRON
    model also takes "order_weight" (0 = clicks .. 1 = orders) per request or per session;
    GET /health, GET /metadata and GET /metrics (Prometheus). Concurrent requests are scored in
    micro-batches. Bad requests get a 4xx and {"error": "one line"}. A new bundle is swapped in
    without a gap on SIGHUP, on POST /admin/reload (--admin-token) or when --watch sees MODEL change:
    loaded and checked in the background, refused (the old one keeps serving) when it fails. See
    docs/serving.md.

    \b
    Examples:
        tron serve --port 8080 &
        curl -s localhost:8080/recommend -d '{"items": [1358, 1861], "k": 5}'
        tron serve bundles/otto --index-param ef_search=256 --batch-window-ms 5 --max-batch 128
        tron serve bundles/current --watch &        # ln -sfn day-2 bundles/current: swapped in
        kill -HUP %1                                 # or reload now
    """
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        from tron_cli.errors import TronError

        raise TronError("tron serve needs fastapi, uvicorn and prometheus-client", "pip install 'tron-cli[serve]'") from None
    from tron_cli.errors import UsageError
    from tron_cli.runtime import resolve_device
    from tron_cli.stages.serve import ModelSource, ServeOptions
    from tron_cli.stages.serve import serve as run_server
    from tron_cli.workspace import home

    if admin_token is not None and not admin_token.strip():
        raise UsageError("--admin-token is empty", "Give a secret token, or leave the option out to keep POST /admin/reload off")
    options = ServeOptions(host=host, port=port, order_weight=order_weight, admin_token=admin_token, watch=watch, **limits)
    model = home.resolve_model(model)
    source = ModelSource(model, resolve_device(device), exact=exact, index_params=tuple(index_params))
    predictor = source.load(options)
    run_server(
        predictor,
        options,
        source=source,
        report=ui,
        log_level="info" if ui.verbosity > 0 else "warning",
        on_ready=lambda url: ui.info(f"Serving {model} ({len(predictor.catalogue):,} items, {predictor.retriever.mode} scoring) on {url}"),
    )
