"""``finetune-gateway jobs ...`` and ``files upload``: a terminal client for a running gateway.

    finetune-gateway jobs list [--virtual-key KEY ...]   a table, one row per job
    finetune-gateway jobs show ID                        one job, every field
    finetune-gateway jobs events ID                      its events, newest first
    finetune-gateway jobs watch ID                       redrawn in place until it ends
    finetune-gateway files upload PATH                   with a progress bar

The gateway and key come from ``--base-url``/``--api-key`` or, as for the OpenAI SDK,
``OPENAI_BASE_URL``/``OPENAI_API_KEY``; ``--virtual-key`` picks the provider behind it.
``jobs watch`` exits 0 when the job succeeds, 1 when it fails, 3 when it is cancelled
and 4 when the gateway cannot be asked, so a script can wait on it.

Everything a job carries (model names, suffixes, metadata, error messages) is shown as
text, never read as rich's markup. rich is imported only here, on first use, so
``serve`` never loads it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.console.client import Client, GatewayError, Json
from gateway.console.progress import TERMINAL, Training, duration, sparkline

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

EXIT_FAILED, EXIT_CANCELLED, EXIT_UNREACHABLE = 1, 3, 4
_STATUS_STYLE = {
    "succeeded": "bold green",
    "failed": "bold red",
    "cancelled": "yellow",
    "running": "bold cyan",
}


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``jobs`` and ``files`` to the ``finetune-gateway`` parser."""
    jobs = commands.add_parser("jobs", help="fine-tuning jobs on a running gateway")
    job_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    listing = _with_connection(job_commands.add_parser("list", help="a table of jobs"))
    listing.add_argument("--limit", type=int, default=20, help="jobs per virtual key")
    for name, text in (("show", "one job"), ("events", "a job's events")):
        parser = _with_connection(job_commands.add_parser(name, help=text))
        parser.add_argument("job_id")
        if name == "show":
            parser.add_argument("--json", action="store_true", help="the job object as is")
        else:
            parser.add_argument("--limit", type=int, default=50)
    watch = _with_connection(
        job_commands.add_parser("watch", help="follow a job until it ends (exit 0: succeeded)")
    )
    watch.add_argument("job_id")
    watch.add_argument("--interval", type=float, default=5.0, help="seconds between polls")

    files = commands.add_parser("files", help="files on a running gateway")
    file_commands = files.add_subparsers(dest="files_command", required=True)
    upload = _with_connection(file_commands.add_parser("upload", help="upload a file"))
    upload.add_argument("path", type=Path)
    upload.add_argument("--purpose", default="fine-tune")


def _with_connection(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--base-url", help="the gateway's /v1 URL (default: $OPENAI_BASE_URL)")
    parser.add_argument("--api-key", help="the gateway key (default: $OPENAI_API_KEY)")
    # Repeatable on `jobs list` (one table across providers); elsewhere the last one counts.
    parser.add_argument("--virtual-key", action="append", default=[], help="the virtual key to use")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the parsed ``jobs``/``files`` command; its exit code."""
    from rich.console import Console

    console, errors = Console(), Console(stderr=True)
    keys: list[str] = args.virtual_key
    client = Client.from_environment(args.base_url, args.api_key, keys[-1] if keys else None)
    command: Callable[[], int]
    if args.command == "files":
        command = lambda: _upload(console, client, args.path, args.purpose)  # noqa: E731
    elif args.jobs_command == "list":
        command = lambda: _list(console, client, keys, args.limit)  # noqa: E731
    elif args.jobs_command == "show":
        command = lambda: _show(console, client, args.job_id, args.json)  # noqa: E731
    elif args.jobs_command == "events":
        command = lambda: _events(console, client, args.job_id, args.limit)  # noqa: E731
    else:
        command = lambda: _watch(console, client, args.job_id, args.interval)  # noqa: E731
    try:
        return command()
    except GatewayError as exc:
        errors.print(_text(f"error: {exc}"), style="red")
        return EXIT_UNREACHABLE if exc.status is None else 1
    except KeyboardInterrupt:
        return 130


# ---- jobs list, show, events --------------------------------------------------------


def _list(console: Console, client: Client, virtual_keys: list[str], limit: int) -> int:
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    sources: list[str | None] = list(virtual_keys) or [None]
    if virtual_keys:
        table.add_column("VIRTUAL KEY")
    for column in ("ID", "MODEL", "STATUS", "CREATED", "DURATION", "TOKENS", "FINE-TUNED MODEL"):
        table.add_column(column, justify="right" if column == "TOKENS" else "left")
    for source in sources:
        asked = client.with_virtual_key(source) if source else client
        for job in asked.get("/fine_tuning/jobs", limit=limit).get("data", []):
            row = [source] if source else []
            finished = job.get("finished_at")
            row += [
                job.get("id"),
                job.get("model"),
                job.get("status"),
                _when(job.get("created_at")),
                duration(finished - job["created_at"]) if finished else "",
                _count(job.get("trained_tokens")),
                job.get("fine_tuned_model") or "",
            ]
            table.add_row(*(_text(value) for value in row))
    console.print(table)
    return 0


def _show(console: Console, client: Client, job_id: str, as_json: bool) -> int:
    job = client.get(f"/fine_tuning/jobs/{job_id}")
    if as_json:
        console.print_json(json.dumps(job))
        return 0
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    error = job.get("error") or {}
    fields = [
        ("id", job.get("id")),
        ("model", job.get("model")),
        ("status", job.get("status")),
        ("created", _when(job.get("created_at"))),
        ("finished", _when(job.get("finished_at"))),
        ("fine-tuned model", job.get("fine_tuned_model")),
        ("training file", job.get("training_file")),
        ("validation file", job.get("validation_file")),
        ("method", (job.get("method") or {}).get("type")),
        ("hyperparameters", json.dumps(job.get("hyperparameters") or {})),
        ("trained tokens", _count(job.get("trained_tokens"))),
        ("metadata", json.dumps(job["metadata"]) if job.get("metadata") else None),
        ("error", error.get("message")),
    ]
    for name, value in fields:
        if value not in (None, ""):
            table.add_row(_text(name, "bold"), _text(value))
    console.print(table)
    return 0


def _events(console: Console, client: Client, job_id: str, limit: int) -> int:
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("TIME", "LEVEL", "MESSAGE"):
        table.add_column(column)
    for event in client.get(f"/fine_tuning/jobs/{job_id}/events", limit=limit).get("data", []):
        level = str(event.get("level"))
        style = {"error": "red", "warn": "yellow"}.get(level, "")
        table.add_row(
            _text(_when(event.get("created_at"))), _text(level, style), _text(event.get("message"))
        )
    console.print(table)
    return 0


# ---- jobs watch ---------------------------------------------------------------------


def _watch(console: Console, client: Client, job_id: str, interval: float) -> int:
    from rich.live import Live

    training = Training()
    job = client.get(f"/fine_tuning/jobs/{job_id}")
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            events = client.get(f"/fine_tuning/jobs/{job_id}/events", limit=100)
            training.add(events.get("data", []), time.monotonic())
            live.update(watch_view(job, training, time.time()), refresh=True)
            if job.get("status") in TERMINAL:
                break
            time.sleep(interval)
            job = client.get(f"/fine_tuning/jobs/{job_id}")
    status = job.get("status")
    if status == "succeeded":
        console.print(_text(f"{job_id} succeeded: {job.get('fine_tuned_model')}", "green"))
        return 0
    message = (job.get("error") or {}).get("message") or ""
    console.print(_text(f"{job_id} {status}{': ' + message if message else ''}", "red"))
    return EXIT_FAILED if status == "failed" else EXIT_CANCELLED


def watch_view(job: Json, training: Training, wall_now: float) -> RenderableType:
    """The watch screen for ``job`` now: redrawn whole on every poll."""
    from rich.panel import Panel
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    status = str(job.get("status"))
    grid = Table.grid(padding=(0, 2))
    grid.add_row(_text("job", "bold"), _text(f"{job.get('id')}  {job.get('model')}"))
    grid.add_row(_text("status", "bold"), _text(status, _STATUS_STYLE.get(status, "")))
    step, total = training.step, training.total_steps
    if step is not None:
        eta = training.eta_seconds(job.get("estimated_finish"), wall_now)
        left = "" if status in TERMINAL else f"  ETA {duration(eta)}"
        counted = f"step {step}/{total}" if total else f"step {step}"
        bar = ProgressBar(total=float(total or step), completed=float(step), width=30)
        line = Table.grid(padding=(0, 1))
        line.add_row(bar, _text(counted + left))
        grid.add_row(_text("progress", "bold"), line)
    losses = []
    for name, series in (("train", training.train_loss), ("valid", training.valid_loss)):
        latest = training.latest(series)
        if latest is not None:
            losses.append(f"{name} loss {latest:.4f}")
    if losses:
        grid.add_row(_text("loss", "bold"), _text("  ".join(losses)))
        curve = [training.train_loss[k] for k in sorted(training.train_loss)]
        grid.add_row(_text("", ""), _text(sparkline(curve), "cyan"))
    elif status not in TERMINAL:
        grid.add_row(_text("loss", "bold"), _text("no metrics reported yet", "dim"))
    if job.get("fine_tuned_model"):
        grid.add_row(_text("model", "bold"), _text(job["fine_tuned_model"]))
    error = (job.get("error") or {}).get("message")
    if error:
        grid.add_row(_text("error", "bold red"), _text(error, "red"))
    return Panel(grid, title="finetune-gateway jobs watch", title_align="left")


# ---- files upload -------------------------------------------------------------------


def _upload(console: Console, client: Client, path: Path, purpose: str) -> int:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    if not path.is_file():
        raise GatewayError(f"{path}: no such file")
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(_escaped(path.name), total=path.stat().st_size)
        uploaded = client.upload(path, purpose, lambda size: progress.advance(task, size))
    console.print(_text(f"{uploaded.get('id')}  {uploaded.get('bytes')} bytes  {path.name}"))
    return 0


# ---- text -----------------------------------------------------------------------------


def _text(value: Any, style: str = "") -> Any:
    """``value`` as rich Text: shown as it is, its brackets never read as markup."""
    from rich.text import Text

    return Text("" if value is None else str(value), style=style)


def _escaped(value: str) -> str:
    from rich.markup import escape

    return escape(value)


def _when(epoch: Any) -> str:
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M")


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else ""
