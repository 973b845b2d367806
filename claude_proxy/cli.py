"""The ``proxy.py`` command line.

Every subcommand honours ``--config`` and ``$CLAUDE_PROXY_CONFIG``.  User
errors end as one line on stderr and a non-zero exit, never a traceback.
"""

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from . import __version__, check, control, daemon, dashboard_link, lifecycle, session, status, top, usage_report
from .config import RequestLogSettings, is_loopback, load_config
from .errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ConfigError, ProxyError, UsageError
from .routing import STRATEGIES


def build_parser():
    config_help = "config file (default: $CLAUDE_PROXY_CONFIG, else config.json beside proxy.py)"
    parser = argparse.ArgumentParser(
        prog="proxy.py", description="Local failover proxy for Anthropic-compatible APIs.",
    )
    parser.add_argument("--config", metavar="PATH", help=config_help)
    # Accepted after the command too; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help=config_help)
    parser.add_argument("--version", action="version", version=f"claude-proxy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.command_choices = commands.choices  # filled in as commands are added

    serve = commands.add_parser("serve", parents=[common], help="run the proxy in the foreground (default)")
    serve.add_argument("--host", help="listen address (overrides proxy_host)")
    serve.add_argument("--port", type=int, help="listen port (overrides proxy_port; 0 picks a free one)")
    serve.add_argument("--quiet", action="store_true", help="no banner and no log lines on stderr")
    serve.add_argument("--request-log", metavar="PATH",
                       help="log every request as a JSON line to PATH (overrides request_log's path)")
    serve.set_defaults(func=cmd_serve)

    # Managing the background daemon (claude_proxy.daemon; the shell modules call these).
    start = commands.add_parser("start", parents=[common], help="start the proxy in the background")
    start.add_argument("--timeout", type=float, default=lifecycle.START_TIMEOUT, metavar="SECONDS",
                       help="how long to wait for it to answer (default: %(default)g)")
    start.add_argument("--quiet", action="store_true", help="print nothing unless it fails")
    start.set_defaults(func=lifecycle.cmd_start)
    stop = commands.add_parser("stop", parents=[common], help="stop the background proxy")
    stop.add_argument("--grace", type=float, default=lifecycle.STOP_GRACE, metavar="SECONDS",
                      help="time in-flight requests get to finish (default: %(default)g)")
    stop.add_argument("--quiet", action="store_true", help="print nothing unless it fails")
    stop.set_defaults(func=lifecycle.cmd_stop)
    release = commands.add_parser(
        "release", parents=[common],
        help="a shell session is done with the proxy: stop it unless other sessions still use it")
    release.add_argument("--session", type=int, required=True, metavar="PID",
                         help="the shell's process id, as given to `env --session`")
    release.add_argument("--keep-running", action="store_true", help="never stop the proxy")
    release.add_argument("--quiet", action="store_true", help="print nothing unless it fails")
    release.set_defaults(func=lifecycle.cmd_release)
    status_ = commands.add_parser("status", parents=[common],
                                 help="is it running, this session's mode, each provider's state")
    status_.add_argument("--json", action="store_true", help="machine-readable output")
    status_.set_defaults(func=status.cmd_status)
    top_ = commands.add_parser("top", parents=[common],
                               help="the proxy live, full screen: providers, requests in flight, the last ones")
    top_.add_argument("--once", action="store_true",
                      help="print one snapshot as plain text and exit (the default when output is not a terminal)")
    top_.set_defaults(func=top.cmd_top)
    env = commands.add_parser("env", parents=[common],
                              help="print the variables that point a shell session at the proxy")
    env.add_argument("--shell", choices=session.SHELLS, default=session.default_shell(),
                     help="output format (default: %(default)s)")
    env.add_argument("--provider", metavar="NAME", help="pin the session to this provider")
    env.add_argument("--strategy", choices=STRATEGIES,
                     help="route this session's requests by this strategy (default: the config's)")
    env.add_argument("--announce", action="store_true", help="also print a one-line summary on stderr")
    env.add_argument("--session", type=int, metavar="PID",
                     help="record this shell (its process id) as one using the proxy (see release)")
    env.set_defaults(func=session.cmd_env)
    providers = commands.add_parser("providers", parents=[common],
                                    help="the configured provider names, one per line")
    providers.add_argument("name", nargs="?", metavar="NAME",
                           help="check that this provider is configured (exit 1 if not)")
    providers.set_defaults(func=session.cmd_providers)
    # Runtime control of the running proxy (claude_proxy.control).
    for name, help_text, needs_name, takes_for in (
            ("disable", "take a provider out of use (until enabled, or --for a while)", True, True),
            ("enable", "put a disabled provider back in use", True, False),
            ("cool", "put a provider in cooldown (--for a while, default cooldown_minutes)", True, True),
            ("uncool", "clear the cooldowns of a provider, or of all", False, False)):
        command = commands.add_parser(name, parents=[common], help=help_text)
        command.add_argument("name", nargs=None if needs_name else "?", metavar="NAME", help="the provider")
        if takes_for:
            command.add_argument("--for", dest="duration", metavar="DURATION",
                                 help="how long: 90s, 10m, 1h, 1h30m (a bare number is minutes)")
        command.set_defaults(func=control.cmd_control)
    reload_ = commands.add_parser("reload", parents=[common],
                                  help="have the running proxy read config.json and .env again")
    reload_.set_defaults(func=control.cmd_reload)
    for name, help_text in (("check", "validate the config and .env"),
                            ("validate", "the same as check --live")):
        check_ = commands.add_parser(name, parents=[common], help=help_text)
        check_.add_argument("--live", action="store_true", default=name == "validate",
                            help="also ask each provider for its model list (or one tiny message)")
        check_.add_argument("--timeout", type=float, default=check.LIVE_TIMEOUT, metavar="SECONDS",
                            help="with --live: give up on the providers after this long "
                                 "(default: %(default)g)")
        check_.add_argument("--dump", metavar="NAME", help="print this provider's model list as it sends it")
        check_.set_defaults(func=check.cmd_check)
    usage = commands.add_parser("usage", parents=[common],
                                help="what was used where: requests, failovers, tokens, cost (from usage.db)")
    usage.add_argument("--since", default=usage_report.DEFAULT_SINCE, metavar="WHEN",
                       help=f"from the start of this day: {usage_report.SINCE_HELP} (default: %(default)s)")
    usage.add_argument("--until", metavar="WHEN", help="to the end of this day (same forms; default: now)")
    usage.add_argument("--by", default=usage_report.DEFAULT_BY, choices=usage_report.GROUPINGS,
                       help="group by (default: %(default)s)")
    output = usage.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="a JSON list, one object per group")
    output.add_argument("--csv", action="store_true", help="CSV with a header row")
    usage.set_defaults(func=usage_report.cmd_usage)
    dashboard = commands.add_parser("dashboard", parents=[common],
                                    help="open the live dashboard in your browser, signed in")
    dashboard.add_argument("--no-browser", action="store_true",
                           help="print the one-time sign-in link instead of opening it")
    dashboard.set_defaults(func=dashboard_link.cmd_dashboard)
    return parser


def cmd_serve(args):
    from .run import run

    target = daemon.load_target(args)

    def with_options(config):
        """``config`` with the command line's --host, --port and --request-log (a reload too)."""
        if args.host:
            config.host = args.host
            if not config.require_token and not is_loopback(config.host):
                raise ConfigError(f"refusing to listen on {config.host} without a token: "
                                  f'set "require_token": true in {config.path}, or drop --host')
        if args.port is not None:
            config.port = args.port
        if args.request_log:
            settings = config.request_log or RequestLogSettings(path=None)
            config.request_log = dataclasses.replace(settings,
                                                     path=Path(args.request_log).expanduser().resolve())
        return config

    config = with_options(target.config)
    current = daemon.probe(target.paths, config)
    if current.running:  # the proxy of this state directory: say so, not "port in use"
        raise UsageError(f"already running on {current.url} "
                         f"(pid {current.record['pid']}); use it, or stop it first with "
                         f"`{daemon.proxy_command(target, 'stop')}`")
    return run(config, quiet=getattr(args, "quiet", False),
               loader=lambda: with_options(load_config(target.config_path, must_exist=target.explicit,
                                                      reloading=True)))


def main(argv=None):
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(arg in parser.command_choices or arg in ("-h", "--help", "--version") for arg in argv):
        if argv and not argv[0].startswith("-"):
            parser.error(f"unknown command {argv[0]!r} (commands: {', '.join(parser.command_choices)})")
        argv.insert(0, "serve")  # `proxy.py --port 9000` means `proxy.py serve --port 9000`
    args = parser.parse_args(argv)
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
    except BrokenPipeError:  # `proxy.py status | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return EXIT_FAILURE
