"""``proxy.py dashboard``: open the dashboard in a browser, signed in.

The daemon gives a one-time sign-in link to whoever holds the client token
(:mod:`dashboard`); this command asks for one and opens it with the
``webbrowser`` module, or prints it (``--no-browser``, or when no browser
can be opened).  The link works once, within a minute; the token itself
never reaches the browser or the link.

Where no graphical browser can run (Linux and the BSDs without ``DISPLAY``
or ``WAYLAND_DISPLAY``, e.g. over SSH), ``webbrowser`` would fall back to a
text browser in this terminal, which cannot run the page: the link is
printed instead, unless ``$BROWSER`` names a browser to use.
"""

import os
import sys
import webbrowser

from .daemon import DaemonClient, load_target, probe, proxy_command, silent_message
from .dashboard import LOGIN_PATH
from .errors import EXIT_OK, UsageError


def cmd_dashboard(args, out=None, err=None, opener=None):
    """Open (or print) a sign-in link; ``opener(url)`` says whether a browser took it
    (default: :func:`webbrowser.open`)."""
    out, err = out or sys.stdout, err or sys.stderr
    target = load_target(args, lenient=True)  # a broken config: the dashboard shows the error
    current = probe(target.paths, target.config)
    if not current.running:
        if current.silent:
            raise UsageError(silent_message(current, target))
        raise UsageError(f"the proxy is not running, so there is no dashboard to open; start it with "
                         f"`{proxy_command(target, 'start')}`")
    client = DaemonClient.for_record(current.record, target.paths, config=target.config)
    status, answer = client.dashboard_link()
    path = (answer or {}).get("path")
    if status != 200 or not isinstance(path, str) or not path.startswith(LOGIN_PATH + "?"):
        raise UsageError(f"could not get a sign-in link for the dashboard: {_why(status, answer, target)}")
    url = current.url + path
    if args.no_browser:
        print(url, file=out)
        print("claude-proxy: the link works once, within a minute", file=err)
        return EXIT_OK
    if opener is None and not graphical_browser_possible():
        reason = "no graphical browser can run here (no DISPLAY)"
    elif _open(opener or webbrowser.open, url):
        print(f"opened the dashboard in your browser ({current.url}/dashboard)", file=out)
        return EXIT_OK
    else:
        reason = "no browser could be opened"
    print(f"claude-proxy: {reason}; open this link in a browser on this machine (it works once, "
          "within a minute):", file=err)
    print(url, file=out)
    return EXIT_OK


def graphical_browser_possible(environ=None, platform=None):
    """Can ``webbrowser`` open a graphical browser here (or the one ``$BROWSER`` names)?"""
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if platform.startswith(("win", "darwin")) or environ.get("BROWSER"):
        return True
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


def _open(opener, url):
    try:
        return bool(opener(url))
    except webbrowser.Error:  # a browser named in $BROWSER that cannot run: print the link instead
        return False


def _why(status, answer, target):
    message = ((answer or {}).get("error") or {}).get("message")
    if message:
        return message
    if status is None:
        return "the proxy did not answer"
    return (f"the proxy answered {status}; if an older claude-proxy started it, restart it "
            f"(`{proxy_command(target, 'stop')}`, then `start`)")
