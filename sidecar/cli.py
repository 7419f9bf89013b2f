"""The `sidecar` command line: argument parsing and exit codes only.

Each subcommand is one entry in `COMMANDS` (name -> `Command(help, add_arguments, run)`); adding
one is a new function pair and one dict entry. Exit codes: 0 success, 2 for usage errors (argparse)
and invalid configuration, 1 for any other sidecar error (a one-line message, never a traceback),
130 when interrupted. Heavy modules (the server, crypto) are imported inside the command that
needs them, so `sidecar --version` and `sidecar check-config` stay quick.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sidecar import __version__
from sidecar.config.load import load_config
from sidecar.config.model import SidecarConfig
from sidecar.errors import ConfigError, SidecarError

CONFIG_ENV = "SIDECAR_CONFIG"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Command:
    """One subcommand: help line, its own arguments, and what it does (returns the exit code)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=os.environ.get(CONFIG_ENV),
        help=f"configuration file (default: ${CONFIG_ENV})",
    )


def _load(args: argparse.Namespace) -> SidecarConfig:
    if not args.config:
        raise _UsageError(f"no configuration file: give -c FILE or set {CONFIG_ENV}")
    return load_config(args.config)


def _run(args: argparse.Namespace) -> int:
    config = _load(args)
    from sidecar.app import serve  # the server stack is only needed to serve

    return serve(config, args.config)


def _check_config(args: argparse.Namespace) -> int:
    _load(args)
    print("configuration is valid")
    return EXIT_OK


def _config_schema(args: argparse.Namespace) -> int:
    from sidecar.config.schema import build_json_schema

    print(json.dumps(build_json_schema(), indent=2))
    return EXIT_OK


def _doctor(args: argparse.Namespace) -> int:
    if not args.config:
        raise _UsageError(f"no configuration file: give -c FILE or set {CONFIG_ENV}")
    from sidecar.doctor import doctor_main

    return doctor_main(args.config)


def _secret(args: argparse.Namespace) -> int:
    from sidecar.session.codec import generate_secret

    print(generate_secret())
    return EXIT_OK


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address for all three servers")
    parser.add_argument("--port", type=int, default=4180, help="sidecar's port (0: any free one)")
    parser.add_argument(
        "--provider-port", type=int, default=0, help="the development provider's port (0: any)"
    )


def _demo(args: argparse.Namespace) -> int:
    from sidecar.demo import demo_main

    return demo_main(host=args.host, port=args.port, provider_port=args.provider_port)


def _dev_provider_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--client-id", default="sidecar")
    parser.add_argument(
        "--client-secret",
        default=os.environ.get("SIDECAR_DEV_CLIENT_SECRET"),
        help="the client's secret (default: $SIDECAR_DEV_CLIENT_SECRET)",
    )
    parser.add_argument(
        "--redirect-uri",
        action="append",
        default=[],
        help="a registered redirect URI, e.g. http://127.0.0.1:4180/oauth2/callback (repeatable)",
    )
    parser.add_argument(
        "--post-logout-redirect-uri", action="append", default=[], help="(repeatable)"
    )


def _dev_provider(args: argparse.Namespace) -> int:
    import asyncio

    from sidecar.config.model import LoggingConfig
    from sidecar.demo import run_dev_provider
    from sidecar.observability.logging import configure_logging

    if not args.client_secret:
        raise _UsageError("give --client-secret or set SIDECAR_DEV_CLIENT_SECRET")
    if not args.redirect_uri:
        raise _UsageError("give at least one --redirect-uri")
    configure_logging(LoggingConfig(format="text", level="info"))

    def started(issuer: str) -> None:
        print(f"development provider (NOT FOR PRODUCTION) at {issuer}", flush=True)

    asyncio.run(
        run_dev_provider(
            host=args.host,
            port=args.port,
            client_id=args.client_id,
            client_secret=args.client_secret,
            redirect_uris=args.redirect_uri,
            post_logout_redirect_uris=args.post_logout_redirect_uri,
            started=started,
        )
    )
    return EXIT_OK


COMMANDS: dict[str, Command] = {
    "demo": Command(
        "the demo: dev provider, backend, sidecar",
        _demo_arguments,
        _demo,
    ),
    "dev-provider": Command(
        "the development OpenID provider alone (not for production)",
        _dev_provider_arguments,
        _dev_provider,
    ),
    "run": Command("serve: sidecar in front of the upstreams", _config_argument, _run),
    "check-config": Command(
        "validate a configuration file and list every problem", _config_argument, _check_config
    ),
    "config-schema": Command(
        "print the configuration's JSON Schema (for YAML editors)", _no_arguments, _config_schema
    ),
    "secret": Command("print a fresh session secret for session.secrets", _no_arguments, _secret),
    "doctor": Command("find sign-in misconfiguration, with fixes", _config_argument, _doctor),
}


class _UsageError(Exception):
    """A command line that argparse accepts but that cannot work (reported like argparse's)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecar",
        description="Authentication sidecar proxy: OpenID Connect sign-in in front of any app.",
    )
    parser.add_argument("--version", action="version", version=f"sidecar {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(command_parser=sub)  # usage errors found later show this command's usage
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with a usage message on bad arguments
    try:
        return COMMANDS[args.command].run(args)
    except _UsageError as exc:
        command_parser: argparse.ArgumentParser = args.command_parser
        command_parser.error(str(exc))  # exits 2
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(f"configuration is invalid: {count} problem{'s' * (count != 1)}", file=sys.stderr)
        return EXIT_CONFIG
    except SidecarError as exc:
        print(f"sidecar: {exc.message}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:  # e.g. the listen port is taken
        print(f"sidecar: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
