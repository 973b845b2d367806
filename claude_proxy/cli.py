"""The ``proxy.py`` command line.

Every subcommand honours ``--config`` and ``$CLAUDE_PROXY_CONFIG``.  User
errors end as one line on stderr and a non-zero exit, never a traceback.
"""

import argparse
import sys

from . import __version__
from .config import load_config, resolve_config_path
from .errors import ConfigError, ProxyError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH",
                        help="config file (default: $CLAUDE_PROXY_CONFIG, else config.json beside proxy.py)")
    parser = argparse.ArgumentParser(
        prog="proxy.py", parents=[common],
        description="Local failover proxy for Anthropic-compatible APIs.",
    )
    parser.add_argument("--version", action="version", version=f"claude-proxy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[common], help="run the proxy in the foreground (default)")
    serve.add_argument("--host", help="listen address (overrides proxy_host)")
    serve.add_argument("--port", type=int, help="listen port (overrides proxy_port; 0 picks a free one)")
    serve.add_argument("--quiet", action="store_true", help="no banner and no log lines on stderr")
    serve.set_defaults(func=cmd_serve)
    return parser


def load(args):
    path, explicit = resolve_config_path(args.config)
    return load_config(path, must_exist=explicit)


def cmd_serve(args):
    from .server import run

    config = load(args)
    if args.host:
        config.host = args.host
    if args.port is not None:
        config.port = args.port
    return run(config, quiet=getattr(args, "quiet", False))


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["serve", *(argv if argv is not None else sys.argv[1:])])
    try:
        return args.func(args) or EXIT_OK
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"claude-proxy: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except ProxyError as exc:
        print(f"claude-proxy: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
