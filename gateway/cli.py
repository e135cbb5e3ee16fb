"""``finetune-gateway``: serve, check-config, plugins; jobs and files (``gateway.console``)."""

from __future__ import annotations

import argparse
import gc
import ipaddress
import logging
import socket
import sys
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

from gateway import __version__
from gateway.console import commands as console_commands

log = logging.getLogger("finetune_gateway")

_GC_YOUNG_THRESHOLD = 10_000


# gateway.webhooks.report.STATES, named here so the parser imports nothing more.
WEBHOOK_STATES = ("given_up", "pending", "delivered", "dropped", "all")


def main(argv: Sequence[str] | None = None) -> int:
    # Everything loaded before serving (aiohttp, the plugins, the config) lives as long as
    # the process, so the collector's passes over it while it loads find nothing: off
    # until serve freezes it all (gc.freeze, as its docs advise before forking), about a
    # tenth of startup. The gateway's own modules are imported below, after this.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _main(argv)
    finally:
        if collecting:
            gc.enable()


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="finetune-gateway",
        description="OpenAI's fine-tuning and files API in front of every provider.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="TOML config file (default: built-in defaults)")
    serve.add_argument("--host", help="address to listen on (default: server.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: server.port, 8787)")
    serve.add_argument(
        "--allow-open",
        action="store_true",
        help="listen on a non-loopback address although the config has no gateway keys",
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="processes sharing the port, each a full gateway (default: 1; about one per core)",
    )

    check = commands.add_parser("check-config", help="check a config file, listing every problem")
    check.add_argument("path")

    commands.add_parser("plugins", help="list the provider plugins found")
    hooks = commands.add_parser(
        "webhook-deliveries", help="list webhook deliveries (default: those given up on)"
    )
    hooks.add_argument("--config", required=True, help="TOML config file with [webhooks]")
    hooks.add_argument("--state", default="given_up", choices=WEBHOOK_STATES)
    console_commands.add_commands(commands)

    args = parser.parse_args(argv)
    if args.command in ("jobs", "files"):
        return console_commands.run(args)
    if args.command == "serve":
        return _serve(args.config, args.host, args.port, args.workers, args.allow_open)
    if args.command == "webhook-deliveries":
        from gateway.webhooks.report import run

        return run(args.config, args.state)
    if args.command == "check-config":
        return _check_config(args.path)
    return _plugins()


def _serve(
    config_path: str | None, host: str | None, port: int | None, workers: int, allow_open: bool
) -> int:
    with _no_ca_store_for_unverified_contexts():
        import aiohttp  # noqa: F401 - imported here for the block above

    from gateway.config import Config, ConfigError, load_config
    from gateway.middleware import install_access_log
    from gateway.registry import Registry

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    install_access_log(sys.stderr)  # the same lines to the same place, written in batches
    registry = Registry.discover()
    for broken in registry.broken:
        log.warning(
            "plugin %r (%s) failed to load: %s", broken.name, broken.distribution, broken.error
        )
    try:
        config = Config.default() if config_path is None else load_config(config_path, registry)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config: {problem}", file=sys.stderr)
        return 2

    from gateway.app import make_app
    from gateway.server import serve

    listen_host = host or config.server.host
    listen_port = port if port is not None else config.server.port
    if not config.gateway_keys and not allow_open and not _is_loopback(listen_host):
        # Without gateway keys anyone who reaches the port may use every virtual key:
        # fine on this machine only, never by accident on a network.
        print(
            f"refusing to listen on {listen_host}: the config has no gateway keys, so "
            "anyone reaching the port could use every virtual key. Add [gateway_keys] "
            "or pass --allow-open",
            file=sys.stderr,
        )
        return 2
    log.info(
        "finetune-gateway %s on http://%s:%d (providers: %s; workers: %d)",
        __version__,
        listen_host,
        listen_port,
        ", ".join(registry.names()) or "none",
        workers,
    )
    # Everything loaded so far lives as long as the process: kept out of the collector's
    # scans (and, in forked workers, out of the pages those scans would touch). Requests
    # make few reference cycles, so the youngest generation is collected less often than
    # Python's default of every 700 allocations, which cost a few per cent of each call.
    gc.freeze()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    gc.enable()
    if workers == 1:
        try:
            _run(serve(make_app(config, registry), host=listen_host, port=listen_port))
        except OSError as exc:  # the address is taken, or not this machine's
            print(f"cannot listen on {listen_host}:{listen_port}: {exc.strerror}", file=sys.stderr)
            return 1
        return 0

    from gateway.server import ABORT_SECONDS
    from gateway.workers import serve_workers

    def serve_one(sock: socket.socket, index: int) -> None:
        _run(serve(make_app(config, registry, worker=index), sock=sock))

    # A worker gets its own grace and time to abort its uploads before it is killed.
    stop_grace = config.server.shutdown_grace + ABORT_SECONDS + 5.0
    return serve_workers(listen_host, listen_port, workers, serve_one, stop_grace=stop_grace)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _run(main: Coroutine[None, None, None]) -> None:
    import asyncio

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (the ``fast`` extra), else asyncio's own."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


@contextmanager
def _no_ca_store_for_unverified_contexts() -> Iterator[None]:
    """While aiohttp is imported: its context that verifies nothing loads no CA store.

    aiohttp builds two TLS contexts at import, one verifying certificates and one
    (for ``ssl=False``) with ``verify_mode = CERT_NONE``, and loads the system's CA store
    into both: about 35 ms each, a tenth of startup. A context that verifies nothing
    never reads its CA store, so for such contexts, and only while the block runs, the
    load is skipped; the verifying context loads it as before.
    """
    import ssl

    load = ssl.SSLContext.set_default_verify_paths
    own = "set_default_verify_paths" in vars(ssl.SSLContext)  # else inherited from C

    def only_if_verifying(context: ssl.SSLContext) -> None:
        if context.verify_mode != ssl.CERT_NONE:
            load(context)

    patched: Any = ssl.SSLContext
    patched.set_default_verify_paths = only_if_verifying
    try:
        yield
    finally:
        if own:
            patched.set_default_verify_paths = load
        else:
            del patched.set_default_verify_paths


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _check_config(path: str) -> int:
    from gateway.config import ConfigError, load_config
    from gateway.registry import Registry

    registry = Registry.discover()
    try:
        config = load_config(path, registry)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        print(f"{path}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    print(
        f"{path}: ok ({len(config.virtual_keys)} virtual keys, {len(config.gateway_keys)} "
        f"gateway keys, {len(config.configs)} named configs)"
    )
    return 0


def _plugins() -> int:
    from gateway.registry import Registry

    registry = Registry.discover()
    for plugin in registry.loaded:
        aliases = ", ".join(plugin.provider.aliases)
        suffix = f"  (aliases: {aliases})" if aliases else ""
        print(f"{plugin.slug:<16} {plugin.distribution} {plugin.version}{suffix}")
    for broken in registry.broken:
        print(f"{broken.name:<16} {broken.distribution} {broken.version}  FAILED: {broken.error}")
    if not registry.loaded and not registry.broken:
        print("no provider plugins installed")
    return 0
