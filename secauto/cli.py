"""The ``secauto`` command line.

``secauto serve`` runs a node until SIGTERM/SIGINT. ``secauto run PLAYBOOK`` runs a playbook locally
(no server, no Redis) and prints the result; ``secauto validate PLAYBOOK`` checks one. The client
commands (``submit``, ``jobs``, ``cluster``, ``dlq``, ``events``) are in :mod:`secauto.client_cli`.
Exit codes: 0 success, 1 the playbook or node failed, 2 bad usage, configuration or playbook file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from secauto import __version__
from secauto.client_cli import CLIENT_COMMANDS, add_client_commands, run_client_command
from secauto.config import CliOverrides, ConfigError, LoggingConfig, Settings, find_config_file, load_settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="secauto", description="SecAuto security-automation server")
    parser.add_argument("--version", action="version", version=f"secauto {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run a node until SIGTERM/SIGINT")
    serve.add_argument("--config", help="config file (default: $SECAUTO_CONFIG, else ./config.yaml)")
    serve.add_argument("--host", help="address to bind (overrides server.host)")
    serve.add_argument("--port", type=int, help="port to bind (overrides server.port)")
    serve.add_argument("--node-id", help="node id (overrides cluster.node_id)")

    run = commands.add_parser("run", help="run a playbook locally, without a server")
    run.add_argument("playbook", help="playbook file (YAML or JSON)")
    run.add_argument("--context", default="{}", help="context as JSON, or @FILE to read it from a file")
    run.add_argument("--config", help="config file for the engine section (scripts_dir, ...)")

    validate = commands.add_parser("validate", help="check a playbook without running it")
    validate.add_argument("playbook", help="playbook file (YAML or JSON)")
    validate.add_argument("--config", help="config file for the engine section")

    add_client_commands(commands)
    return parser


def _load(config: str | None, overrides: CliOverrides | None = None) -> Settings:
    return load_settings(find_config_file(config), overrides=overrides)


def _serve(args: argparse.Namespace) -> int:
    from secauto.logs import configure_logging, flush_logs
    from secauto.node import Node

    settings = _load(args.config, CliOverrides(host=args.host, port=args.port, node_id=args.node_id))
    try:
        configure_logging(settings.config.logging, node_id=settings.node_id)
    except OSError as exc:
        raise ConfigError(f"logging.destination: cannot open {settings.config.logging.destination!r} "
                          f"({exc.strerror})") from None
    if settings.generated_api_key is not None:
        # Printed once, on the terminal only: the key never goes through the logger.
        print(f"No API key configured; generated one for this run (shown once): {settings.generated_api_key}",
              file=sys.stderr, flush=True)

    async def main() -> int:
        node = Node(settings)
        try:
            await node.start()
        except OSError as exc:
            print(f"secauto: cannot start: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return await node.run_until_stopped()

    try:
        return asyncio.run(main())
    finally:
        flush_logs()  # the lines of the loop's last iterations (a crash's too)


def _engine(settings: Settings) -> Any:
    from secauto.node import engine_settings

    return engine_settings(settings)


def _read_context(raw: str) -> dict[str, Any]:
    text = Path(raw[1:]).read_text(encoding="utf-8") if raw.startswith("@") else raw
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--context: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(value, dict):
        raise ValueError("--context: must be a JSON object")
    return value


def _run(args: argparse.Namespace) -> int:
    from secauto.engine import PlaybookInvalid, load_playbook_file, run_playbook
    from secauto.logs import configure_logging

    settings = _load(args.config)
    engine = _engine(settings)
    # stdout carries the result; logs (script logs, `log` steps) go to stderr as text.
    configure_logging(LoggingConfig(level=settings.config.logging.level, destination="stderr", format="text"))
    try:
        context = _read_context(args.context)
        playbook = load_playbook_file(Path(args.playbook))
        result = asyncio.run(run_playbook(playbook, context, engine))
    except (PlaybookInvalid, ValueError, OSError) as exc:
        print(f"secauto run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(result), indent=2).decode() + "\n")
    return EXIT_OK if result.success else EXIT_FAILED


def _validate(args: argparse.Namespace) -> int:
    from secauto.engine import PlaybookInvalid, load_playbook_file, validate_playbook

    engine = _engine(_load(args.config))
    try:
        validate_playbook(load_playbook_file(Path(args.playbook)), engine)
    except PlaybookInvalid as exc:
        for problem in exc.problems:
            print(f"{args.playbook}: {problem.path}: {problem.message}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.playbook}: valid")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in CLIENT_COMMANDS:
        return run_client_command(args)
    handlers = {"serve": _serve, "run": _run, "validate": _validate}
    try:
        return handlers[args.command](args)
    except ConfigError as exc:
        print(f"secauto: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
