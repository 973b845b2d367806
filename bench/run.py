#!/usr/bin/env python3
"""How much the proxy costs, measured side by side with a direct connection.

    python bench/run.py                  # full run, about two and a half minutes
    python bench/run.py --json out.json  # also write the results as JSON
    python bench/run.py --quick          # tiny load, a few seconds (the smoke test)
    python bench/run.py --only latency,failover --rounds 7
    python bench/run.py --only throughput --profile /tmp/proxy.prof   # needs py-spy

Standard library only.  It starts three processes and cleans them up on any
exit (including Ctrl-C, and their parent dying):

- ``bench/fake_provider.py``: a fast asyncio fake Anthropic provider on
  127.0.0.1 (JSON and SSE, per-request delay and event pacing, 429 mode),
  which also speaks OpenAI's Chat Completions;
- the proxy (``proxy.py serve``) in front of it, providers ``a`` and ``b``
  both pointing at the fake provider (``/a`` and ``/b`` path prefixes), and
  ``o``, of ``"type": "openai"``, at its Chat Completions (``/o/v1``),
  ``require_token`` off, in a temporary state directory;
- ``bench/loadgen.py``: the load generator (raw keep-alive sockets).

On Linux with two or more CPUs the proxy is pinned to one CPU (by default the
last) and everything else (this orchestrator, fake provider, load generator)
to the others, so the proxy's work never competes with the harness's, and the
harness does exactly the same work in the direct and the proxied runs.

Each measurement runs direct (client -> fake provider) and through the proxy
(client -> proxy -> fake provider) in interleaved rounds, the order flipping
every round (D P, P D, D P, ...), so drift and noise hit both sides alike; the
table shows medians over rounds, as absolute figures and as "added" (proxy
minus direct, computed per round) or a ratio (proxy / direct, per round).

The five groups (issue 4):

1. added latency of a non-streaming request at concurrency 1, p50 and p99;
   for reference, the same through a bare TCP byte relay pinned like the
   proxy (``bench/relay.py``): the cost of the extra hop itself; and through
   the bare frame (``bench/bare_forwarder.py``: ``ThreadingHTTPServer`` and
   ``http.client`` with none of the proxy's features), pinned the same way:
   the floor of any proxy built on the standard-library frame it is built on;
2. requests/s at concurrency 1, 16, 64 with an instant provider and with a
   20 ms one (also 256 for the 20 ms one: the "up to 256 in flight" target),
   each beside the bare frame's own (its ceiling on this machine);
3. streaming with 100 and 256 concurrent streams, 20 ms between events:
   added time to first event (p50), added inter-event gap (p99), and every
   event checked: arrived, in order, byte-identical to what the provider sent;
   beside it, the same through the bare relay and the bare frame;
4. the proxy's memory (RSS) idle, with 256 streams open, after they end, and
   its thread count back to baseline (``/proc/<pid>/status``);
5. failover: provider ``a`` answers 429 (``retry-after: 0``, so it never stays
   in cooldown and every request takes the failover path), ``b`` serves.  The
   added time is (through the proxy) - (direct 429 from a + direct answer from
   b): what the proxy adds beyond the providers' own answer times;
6. an OpenAI-type provider (issue 11): the same fake answering Chat
   Completions directly, against the proxy translating for it (pinned to
   ``o``), beside the Anthropic path measured in the same rounds: added
   latency at concurrency 1 (p50, p99) and added time to first event of
   ~100 streams.  Target: the translation adds at most 1 ms more to the
   first event than the Anthropic path does.
"""

import argparse
import contextlib
import datetime
import http.client
import json
import os
import platform
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
import wire  # noqa: E402

HOST = "127.0.0.1"
GROUPS = ("latency", "throughput", "streaming", "failover", "openai", "routing")
STRATEGY_SIDES = ("fallback", "round_robin", "fastest")  # group 7: a strategy per side

# Runs a command with CPU affinity set and, on Linux, dies with its parent
# (PR_SET_PDEATHSIG), so nothing survives a benchmark that was killed.
LAUNCHER = r"""
import os, sys
try:
    import ctypes, signal
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
except Exception:
    pass
if sys.argv[1] != "-" and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(",")})
os.execv(sys.executable, [sys.executable] + sys.argv[2:])
"""


class BenchError(Exception):
    pass


# --- processes -------------------------------------------------------------------

class Child:
    """A process this benchmark started; ``stop()`` always leaves it dead."""

    def __init__(self, name, argv, cpus=None, env=None, cwd=None, stderr_path=None):
        self.name = name
        self.cpus = cpus
        cpu_arg = ",".join(str(c) for c in sorted(cpus)) if cpus else "-"
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
        # The launcher execs in place (same pid) only on POSIX; elsewhere run directly.
        prefix = [sys.executable, "-c", LAUNCHER, cpu_arg] if sys.platform.startswith("linux") else [sys.executable]
        self.proc = subprocess.Popen(
            [*prefix, *argv],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            env=env, cwd=cwd)
        self.pid = self.proc.pid  # exec keeps the pid
        self._buf = b""

    def alive(self):
        return self.proc.poll() is None

    def stderr_tail(self, limit=2000):
        if not self.stderr_path:
            return ""
        try:
            return Path(self.stderr_path).read_text("utf-8", "replace")[-limit:]
        except OSError:
            return ""

    def send(self, obj):
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def read_line(self, timeout):
        """One line from the child's stdout, or BenchError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"{self.name}: no answer within {timeout:.0f}s")
                if sel.select(min(left, 0.05)):
                    data = os.read(fd, 65536)
                    if not data:
                        raise BenchError(f"{self.name} exited ({self.proc.poll()}): {self.stderr_tail()}")
                    self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def stop(self, grace=3.0):
        if self.proc.stdin and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # our helpers exit when stdin closes
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(grace)
        if self.proc.stdout:
            self.proc.stdout.close()
        if self._stderr not in (None, subprocess.DEVNULL):
            self._stderr.close()


def proc_status(pid):
    """RSS (KiB) and thread count of ``pid`` from /proc, or None off Linux."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            out["rss_kib"] = int(line.split()[1])
        elif line.startswith("Threads:"):
            out["threads"] = int(line.split()[1])
    return out


def cpu_seconds(pid):
    """User+system CPU seconds of ``pid`` (all threads), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_affinities(pid):
    """The set of CPU sets of ``pid``'s threads (all should be the pinned one)."""
    seen = set()
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                seen.add(tuple(sorted(os.sched_getaffinity(int(tid)))))
    return seen


def http_call(port, method, path, body=None, headers=None, timeout=5.0):
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def plan_cpus(args):
    """(proxy CPUs, harness CPUs), or (None, None) when not pinning."""
    if args.no_pin or not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    proxy = args.proxy_cpu if args.proxy_cpu is not None else cpus[-1]
    if proxy not in cpus:
        raise BenchError(f"--proxy-cpu {proxy} is not one of the usable CPUs {cpus}")
    return {proxy}, set(cpus) - {proxy}


def machine_info():
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {"cpu_model": model, "nproc": os.cpu_count(),
            "usable_cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "mem_gib": mem, "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "implementation": platform.python_implementation()}


def git_commit(path):
    """The last commit that changed the proxy's code (``+dirty`` with local changes), or None."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["git", "-C", str(path), "log", "-1", "--format=%h", "--", "claude_proxy", "proxy.py"],
                             capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--", "claude_proxy", "proxy.py"],
                               capture_output=True, text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    return None


def harness_pct(result):
    """CPU use of the fake provider plus the load generator in one run (% of one CPU), or None."""
    pct = result.get("cpu_pct", {})
    if "provider" not in pct or "loadgen" not in pct:
        return None
    return pct["provider"] + pct["loadgen"]


def per_unit(result, process, units):
    """Microseconds of ``process``'s CPU per request (or event) in one run."""
    used = result.get("cpu_s", {}).get(process)
    return used / units * 1e6 if used is not None and units else None


def cpu_times_per_cpu():
    """{cpu: (busy, steal, total)} in clock ticks from /proc/stat, or {}."""
    out = {}
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu") and line[3:4].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals[:8]]
                busy = v[0] + v[1] + v[2] + v[5] + v[6]  # user nice system irq softirq
                out[int(name[3:])] = (busy, v[7], sum(v))
    return out


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# --- the benchmark ---------------------------------------------------------------

class Bench:
    def __init__(self, args, workdir):
        self.args = args
        self.workdir = Path(workdir)
        self.children = []
        self.proxy_cpus, self.harness_cpus = plan_cpus(args)
        self.provider = self.proxy = self.loadgen = self.relay = self.frame = None
        self.provider_port = self.proxy_port = self.relay_port = self.frame_port = None
        self.routing_proxy = self.routing_port = None  # group 7's proxy (a and b only)
        self.measured = None  # the proxy whose CPU a run measures (default: the main one)
        self.memory = {}
        self.notes = []

    # processes

    def _start(self, name, argv, cpus=None, env=None, cwd=None):
        child = Child(name, argv, cpus, env=env, cwd=cwd,
                      stderr_path=str(self.workdir / f"{name}.stderr"))
        self.children.append(child)
        return child

    def start(self):
        if self.harness_cpus:
            os.sched_setaffinity(0, self.harness_cpus)  # the helpers inherit it
        self.provider = self._start("fake-provider", [str(BENCH / "fake_provider.py"), "--port", "0"])
        self.provider_port = self.provider.read_line(10)["port"]
        self.loadgen = self._start("loadgen", [str(BENCH / "loadgen.py")])
        self.loadgen.send({"op": "ping"})
        self.loadgen.read_line(10)
        self._start_proxy()
        if self.args.relay_floor:
            self.relay = self._start("tcp-relay", [str(BENCH / "relay.py"), "--upstream-port",
                                                  str(self.provider_port)], cpus=self.proxy_cpus)
            self.relay_port = self.relay.read_line(10)["port"]
        if self.args.frame_floor and {"latency", "throughput", "streaming"} & set(self.args.only):
            self.frame, self.frame_port = self._launch_proxy("frame", ("a",),
                                                             self.args.beside or BENCH / "bare_forwarder.py")

    @property
    def references(self):
        """The reference sides measured beside the proxy: ``relay`` (the extra hop
        alone) and ``frame`` (the proxy's standard-library frame alone)."""
        return tuple(side for side, child in (("relay", self.relay), ("frame", self.frame)) if child)

    def _start_proxy(self):
        self.proxy, self.proxy_port = self._launch_proxy("proxy", ("a", "b", "o"))

    def _launch_proxy(self, name, providers, script=None):
        """Start a proxy (``name``, its own state folder) in front of the fake's
        ``providers`` (of ``a``, ``b`` and ``o``, in that order); returns ``(child, port)``.
        ``script``: another program taking the proxy's command line (the bare frame)."""
        script = Path(script or self.args.proxy).resolve()
        if not script.is_file():
            raise BenchError(f"no proxy at {script}")
        state = self.workdir / f"{name}-state"
        state.mkdir()
        known = {
            "a": {"name": "a", "base_url": f"http://{HOST}:{self.provider_port}/a", "api_key_env": "BENCH_KEY_A"},
            "b": {"name": "b", "base_url": f"http://{HOST}:{self.provider_port}/b", "api_key_env": "BENCH_KEY_B"},
            "o": {"name": "o", "type": "openai", "base_url": f"http://{HOST}:{self.provider_port}/o/v1",
                  "api_key_env": "BENCH_KEY_O", "models": {"*": "bench-model"}},
        }
        config = {"proxy_port": 0, "require_token": False, "cooldown_minutes": 30,
                  "providers": [known[p] for p in providers]}
        if not self.args.usage_db:
            config["usage_record"] = False
        config_path = state / "config.json"
        config_path.write_text(json.dumps(config, indent=2))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_PROXY")}
        env.update(BENCH_KEY_A="bench-key-a", BENCH_KEY_B="bench-key-b", BENCH_KEY_O="bench-key-o",
                   PYTHONUNBUFFERED="1")
        proxy = self._start(name, [str(script), "serve", "--config", str(config_path), "--port", "0", "--quiet"],
                            cpus=self.proxy_cpus, env=env, cwd=str(state))
        pid_file = state / "proxy.pid"
        deadline = time.monotonic() + 15
        while True:
            if not proxy.alive():
                raise BenchError(f"the proxy exited during start-up ({proxy.proc.returncode}):\n"
                                 f"{proxy.stderr_tail()}")
            with contextlib.suppress(OSError, ValueError):
                record = json.loads(pid_file.read_text())
                if record.get("port"):
                    port = int(record["port"])
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"the proxy wrote no {pid_file} within 15s:\n{proxy.stderr_tail()}")
            time.sleep(0.02)
        while True:
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_call(port, "GET", "/health")[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise BenchError("the proxy does not answer /health")
            time.sleep(0.02)
        if self.proxy_cpus:
            affinities = thread_affinities(proxy.pid)
            if affinities and affinities != {tuple(sorted(self.proxy_cpus))}:
                self.notes.append(f"warning: {name} threads have affinities {sorted(affinities)}")
        return proxy, port

    def stop(self):
        for proxy, port in ((self.proxy, self.proxy_port), (self.routing_proxy, self.routing_port),
                            (self.frame, self.frame_port)):
            if proxy is not None and proxy.alive() and port:
                with contextlib.suppress(OSError, http.client.HTTPException):
                    http_call(port, "POST", "/shutdown?grace=1", b"",
                              {"x-api-key": "bench", "content-length": "0"}, timeout=2)
        for child in reversed(self.children):
            with contextlib.suppress(Exception):
                child.stop()

    def background_load(self, stat0, wall):
        """CPU the rest of the machine used during the run, per CPU group (% of one CPU).

        Busy time per CPU from /proc/stat minus what this benchmark's processes
        used; the machine may be shared, and load on the proxy's CPU slows it.
        """
        stat1 = cpu_times_per_cpu()
        if not stat0 or not stat1 or not self.proxy_cpus:
            return None
        tick = os.sysconf("SC_CLK_TCK")
        own = {c.name: cpu_seconds(c.pid) or 0.0 for c in self.children}
        me = os.times()
        pinned = sum(own[c.name] for c in self.children if c.cpus == self.proxy_cpus)  # proxies, references
        groups = {"proxy_cpu": (self.proxy_cpus, pinned),
                  "harness_cpus": (self.harness_cpus, sum(own.values()) - pinned + me.user + me.system)}
        out = {}
        for name, (cpus, ours) in groups.items():
            busy = sum(stat1[c][0] - stat0[c][0] for c in cpus if c in stat0 and c in stat1) / tick
            steal = sum(stat1[c][1] - stat0[c][1] for c in cpus if c in stat0 and c in stat1) / tick
            out[name] = {"other_pct": round(max(0.0, busy - ours) / wall / len(cpus) * 100, 1),
                         "steal_pct": round(steal / wall / len(cpus) * 100, 1)}
        return out

    # measuring

    def target(self, side, provider="a"):
        """Where a command goes: ``direct``, ``relay`` or ``proxy`` (Anthropic),
        ``openai-direct`` (the fake's Chat Completions) or ``openai-proxy``
        (the proxy, pinned to the OpenAI-type provider ``o``)."""
        if side == "openai-direct":
            return {"host": HOST, "port": self.provider_port, "path": "/o/v1/chat/completions", "shape": "openai"}
        if side == "openai-proxy":
            return {"host": HOST, "port": self.proxy_port, "path": "/provider/o/v1/messages?beta=true",
                    "shape": "translated"}
        if side == "direct":
            return {"host": HOST, "port": self.provider_port, "path": f"/{provider}/v1/messages?beta=true"}
        if side == "relay":
            return {"host": HOST, "port": self.relay_port, "path": f"/{provider}/v1/messages?beta=true"}
        if side == "frame":
            return {"host": HOST, "port": self.frame_port, "path": "/v1/messages?beta=true"}
        if side in STRATEGY_SIDES:  # group 7's proxy: the root for fallback, else the strategy's path
            prefix = "" if side == "fallback" else f"/strategy/{side}"
            return {"host": HOST, "port": self.routing_port, "path": f"{prefix}/v1/messages?beta=true"}
        return {"host": HOST, "port": self.proxy_port, "path": "/v1/messages?beta=true"}

    def run(self, cmd, sample=False, timeout=None):
        """Run one load-generator command; add CPU use of each process (% of one CPU)."""
        timeout = timeout or cmd.get("timeout", 60) + 10
        pids = {"proxy": (self.measured or self.proxy).pid, "provider": self.provider.pid,
                "loadgen": self.loadgen.pid}
        for side in self.references:
            pids[side] = getattr(self, side).pid
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        t0 = time.monotonic()
        self.loadgen.send(cmd)
        samples = []
        deadline = t0 + timeout
        while True:
            try:
                msg = self.loadgen.read_line(0.02 if sample else max(0.1, deadline - time.monotonic()))
            except BenchError:
                if not self.loadgen.alive() or time.monotonic() > deadline:
                    raise
                msg = None
            if sample:
                status = proc_status(self.proxy.pid)
                if status:
                    samples.append(status)
            if msg is None:
                continue
            if "event" in msg:
                if msg["event"] == "all_open" and sample:
                    status = proc_status(self.proxy.pid)
                    if status:
                        samples.append(dict(status, all_open=True))
                continue
            if msg.get("result") is None:
                raise BenchError(f"load generator failed: {msg.get('error')}")
            result = msg["result"]
            break
        wall = time.monotonic() - t0
        used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()
                if before[name] is not None and cpu_seconds(pid) is not None}
        result["cpu_s"] = used
        result["cpu_pct"] = {name: round(sec / wall * 100, 1) for name, sec in used.items()}
        if sample:
            result["proc_samples"] = samples
        return result

    def pairs(self, make_cmd, rounds, sides=("direct", "proxy"), sample=None):
        """``rounds`` interleaved runs of each side, order flipping every round."""
        out = {side: [] for side in sides}
        for r in range(rounds):
            order = sides if r % 2 == 0 else tuple(reversed(sides))
            for side in order:
                out[side].append(self.run(make_cmd(side, r), sample=(sample == side)))
        return out

    def check_errors(self, label, runs):
        for side, results in runs.items():
            for res in results:
                count = res.get("error_count", 0) + res.get("bad", 0)
                if count:
                    self.notes.append(f"{label} {side}: {res.get('error_count', 0)} errors, "
                                      f"{res.get('bad', 0)} wrong answers {res.get('errors', [])[:2]}")

    def warm_up(self):
        sides = ("direct", "proxy", "openai-direct", "openai-proxy") if "openai" in self.args.only \
            else ("direct", "proxy")
        sides += (("frame",) if self.frame else ())
        for side in sides:
            self.run({"op": "latency", **self.target(side), "n": 200 if not self.args.quick else 20,
                      "warmup": 10})
            self.run({"op": "throughput", **self.target(side), "concurrency": 16, "duration": 0.2})

    # 1. latency

    def group_latency(self):
        a = self.args
        sides = ("direct", "proxy") + self.references
        runs = self.pairs(lambda side, r: {"op": "latency", **self.target(side), "n": a.latency_n,
                                           "warmup": 50}, a.rounds, sides)
        self.check_errors("latency", runs)
        out = {"requests_per_round": a.latency_n}
        for side in sides:
            out[side] = {q: median(res["latency"].get(q) for res in runs[side]) for q in ("p50", "p90", "p99", "mean")}
        for side in sides[1:]:
            prefix = "" if side == "proxy" else f"{side}_"
            for q in ("p50", "p99"):
                out[f"{prefix}added_{q}_ms"] = median(p["latency"][q] - d["latency"][q]
                                                      for d, p in zip(runs["direct"], runs[side]))
            out[f"{side}_cpu_us_per_request"] = median(per_unit(r, side, r["requests_total"]) for r in runs[side])
        out["proxy_cpu_pct"] = median(r["cpu_pct"].get("proxy") for r in runs["proxy"])
        out["rounds"] = {side: [res["latency"] for res in runs[side]] for side in sides}
        return out

    # 2. throughput

    def group_throughput(self):
        a = self.args
        rows = []
        for delay, levels in ((0, a.concurrency), (a.slow_ms, a.slow_concurrency)):
            for c in levels:
                headers = {wire.H_DELAY: str(delay)} if delay else {}
                runs = self.pairs(lambda side, r: {
                    "op": "throughput", **self.target(side), "concurrency": c, "headers": headers,
                    "duration": a.duration, "stagger_ms": delay, "timeout": a.duration * 4 + 30}, a.rounds,
                    ("direct", "proxy") + (("frame",) if self.frame else ()))
                self.check_errors(f"throughput {delay}ms c={c}", runs)
                row = {"provider_delay_ms": delay, "concurrency": c,
                       "direct_rps": median(r["rps"] for r in runs["direct"]),
                       "proxy_rps": median(r["rps"] for r in runs["proxy"]),
                       "ratio": median(p["rps"] / d["rps"] if d["rps"] else None
                                       for d, p in zip(runs["direct"], runs["proxy"])),
                       "direct_p50_ms": median(r["latency"].get("p50") for r in runs["direct"]),
                       "proxy_p50_ms": median(r["latency"].get("p50") for r in runs["proxy"]),
                       "proxy_cpu_pct": median(r["cpu_pct"].get("proxy") for r in runs["proxy"]),
                       "proxy_cpu_us_per_request": median(per_unit(r, "proxy", r["requests_total"])
                                                          for r in runs["proxy"]),
                       "harness_cpu_pct_direct": median(harness_pct(r) for r in runs["direct"]),
                       "rounds": {side: [r["rps"] for r in runs[side]] for side in runs}}
                if self.frame:
                    row["frame_rps"] = median(r["rps"] for r in runs["frame"])
                    row["frame_ratio"] = median(f["rps"] / d["rps"] if d["rps"] else None
                                                for d, f in zip(runs["direct"], runs["frame"]))
                    row["frame_cpu_us_per_request"] = median(per_unit(r, "frame", r["requests_total"])
                                                             for r in runs["frame"])
                if delay:
                    row["ideal_rps"] = c / (delay / 1000.0)
                rows.append(row)
        return rows

    # 3 + 4. streaming and memory

    def group_streaming(self):
        a = self.args
        rows = []
        mem = self.memory
        for n in a.streams:
            sample = "proxy" if n == max(a.streams) else None
            if sample:
                self._settle()
                mem["before_streams"] = proc_status(self.proxy.pid)
            sides = ("direct", "proxy") + self.references
            runs = self.pairs(lambda side, r: {
                "op": "streams", **self.target(side), "n": n, "deltas": a.deltas, "pace_ms": a.pace_ms,
                "ramp_ms": a.stream_interval_ms * n, "seed_base": (r * len(sides) + sides.index(side)) * 30000,
                "timeout": 60}, a.rounds, sides, sample=sample)
            self.check_errors(f"streaming n={n}", runs)
            row = {"streams": n, "pace_ms": a.pace_ms, "events_per_stream": a.deltas + 5}
            row["stream_interval_ms"] = a.stream_interval_ms
            for key, q in (("ttfe", "p50"), ("ttfe", "p99"), ("gap", "p50"), ("gap", "p99")):
                for side in sides:
                    row[f"{key}_{q}_{side}_ms"] = median(r[key].get(q) for r in runs[side])
                row[f"added_{key}_{q}_ms"] = median(p[key].get(q, 0) - d[key].get(q, 0)
                                                    for d, p in zip(runs["direct"], runs["proxy"]))
                for ref in self.references:
                    row[f"{ref}_added_{key}_{q}_ms"] = median(
                        p[key].get(q, 0) - d[key].get(q, 0) for d, p in zip(runs["direct"], runs[ref]))
            for side in sides:
                row[side] = {k: sum(r[k] for r in runs[side]) for k in (
                    "events_expected", "events_received", "lost", "reordered", "unexpected",
                    "byte_identical_streams", "mismatched_streams", "failed_streams")}
                row[side]["streams"] = n * len(runs[side])
            row["proxy_cpu_pct"] = median(r["cpu_pct"].get("proxy") for r in runs["proxy"])
            row["proxy_cpu_us_per_event"] = median(per_unit(r, "proxy", r["events_received"])
                                                   for r in runs["proxy"])
            for ref in self.references:
                row[f"{ref}_cpu_pct"] = median(r["cpu_pct"].get(ref) for r in runs[ref])
                row[f"{ref}_cpu_us_per_event"] = median(per_unit(r, ref, r["events_received"])
                                                        for r in runs[ref])
            row["harness_cpu_pct"] = median(harness_pct(r) for r in runs["direct"])
            rows.append(row)
            if sample:
                per_run = []
                for r in runs["proxy"]:
                    samples = r.pop("proc_samples", [])
                    if samples:
                        per_run.append({"rss_peak_kib": max(s["rss_kib"] for s in samples),
                                        "threads_peak": max(s["threads"] for s in samples)})
                mem["streams"] = n
                mem["open"] = per_run
                self._settle()
                mem["after_streams"] = proc_status(self.proxy.pid)
        return rows

    def _settle(self, timeout=5.0):
        """Wait (bounded) until the proxy's thread count stops falling."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            status = proc_status(self.proxy.pid)
            if not status:
                return
            if last is not None and status["threads"] == last and status["threads"] <= self.memory.get(
                    "idle", {}).get("threads", 10 ** 6):
                return
            last = status["threads"]
            time.sleep(0.1)

    def memory_summary(self):
        mem = self.memory
        idle = mem.get("idle")
        if not idle:
            return None
        out = {"idle_rss_mib": idle["rss_kib"] / 1024, "idle_threads": idle["threads"]}
        before, after, opened = mem.get("before_streams"), mem.get("after_streams"), mem.get("open")
        if before and opened:
            n = mem["streams"]
            peak = max(o["rss_peak_kib"] for o in opened)
            out.update({
                "streams": n,
                "before_streams_rss_mib": before["rss_kib"] / 1024,
                "before_streams_threads": before["threads"],
                "open_rss_mib": peak / 1024,
                "open_threads": max(o["threads_peak"] for o in opened),
                "per_stream_kib": median((o["rss_peak_kib"] - before["rss_kib"]) / n for o in opened),
            })
        if after:
            out["after_rss_mib"] = after["rss_kib"] / 1024
            out["after_threads"] = after["threads"]
            if before:
                out["after_minus_before_mib"] = (after["rss_kib"] - before["rss_kib"]) / 1024
        return out

    # 5. failover

    def group_failover(self):
        a = self.args
        fail = {wire.H_FAIL: "a"}
        cmds = {
            "direct_429": {"op": "latency", **self.target("direct", "a"), "headers": fail,
                           "expect_status": 429},
            "direct_b": {"op": "latency", **self.target("direct", "b")},
            "proxy_failover": {"op": "latency", **self.target("proxy"), "headers": fail},
            "proxy_normal": {"op": "latency", **self.target("proxy")},
        }
        runs = {k: [] for k in cmds}
        verified = attempted = 0
        n, warm = a.failover_n, 20
        for r in range(a.rounds):
            order = list(cmds) if r % 2 == 0 else list(reversed(cmds))
            for key in order:
                if key == "proxy_failover":
                    http_call(self.provider_port, "POST", "/_bench/reset", b"")
                res = self.run({**cmds[key], "n": n, "warmup": warm})
                if key == "proxy_failover":
                    stats = json.loads(http_call(self.provider_port, "GET", "/_bench/stats")[1])
                    attempted += n + warm
                    verified += min(stats.get("a", {}).get("429", 0), stats.get("b", {}).get("200", 0))
                runs[key].append(res)
        self.check_errors("failover", runs)
        out = {"requests_per_round": n, "failovers_verified": verified, "failovers_expected": attempted}
        for key in cmds:
            out[key] = {q: median(r["latency"].get(q) for r in runs[key]) for q in ("p50", "p99")}
        for q in ("p50", "p99"):
            out[f"added_{q}_ms"] = median(
                f["latency"][q] - d4["latency"][q] - db["latency"][q]
                for f, d4, db in zip(runs["proxy_failover"], runs["direct_429"], runs["direct_b"]))
            out[f"failover_only_{q}_ms"] = median(
                f["latency"][q] - pn["latency"][q] - d4["latency"][q]
                for f, pn, d4 in zip(runs["proxy_failover"], runs["proxy_normal"], runs["direct_429"]))
        return out


    # 7. routing strategies

    def group_routing(self):
        """Latency at concurrency 1 through a proxy in front of ``a`` and ``b`` (both
        serve), for the strategies ``fallback``, ``round_robin`` and ``fastest``,
        interleaved with direct runs to ``a``; and CPU per request of each.  Its own
        proxy, since the main one has the OpenAI-type ``o`` among its providers."""
        a = self.args
        self.routing_proxy, self.routing_port = self._launch_proxy("proxy-routing", ("a", "b"))
        self.measured = self.routing_proxy
        try:
            for side in STRATEGY_SIDES:
                self.run({"op": "latency", **self.target(side), "n": 200 if not a.quick else 20, "warmup": 10})
            sides = ("direct",) + STRATEGY_SIDES
            runs = self.pairs(lambda side, r: {"op": "latency", **self.target(side), "n": a.latency_n,
                                               "warmup": 50}, a.rounds, sides)
            token = (self.workdir / "proxy-routing-state" / "proxy.token").read_text().strip()
            status = json.loads(http_call(self.routing_port, "GET", "/status", headers={"x-api-key": token})[1])
        finally:
            self.measured = None
        self.check_errors("routing", runs)
        out = {"requests_per_round": a.latency_n,
               "served": {p["name"]: p["requests"] for p in status["providers"]}}
        for side in sides:
            out[side] = {q: median(r["latency"].get(q) for r in runs[side]) for q in ("p50", "p99")}
        for side in STRATEGY_SIDES:
            for q in ("p50", "p99"):
                out[side][f"added_{q}_ms"] = median(p["latency"][q] - d["latency"][q]
                                                    for d, p in zip(runs["direct"], runs[side]))
            out[side]["cpu_us_per_request"] = median(per_unit(r, "proxy", r["requests_total"])
                                                     for r in runs[side])
        return out

    # 6. an OpenAI-type provider

    def group_openai(self):
        """Direct vs proxied for an OpenAI-type provider, and for the Anthropic path in the same rounds."""
        a = self.args
        sides = ("direct", "proxy", "openai-direct", "openai-proxy")
        paths = {"anthropic": ("direct", "proxy"), "openai": ("openai-direct", "openai-proxy")}
        runs = self.pairs(lambda side, r: {"op": "latency", **self.target(side), "n": a.latency_n,
                                           "warmup": 50}, a.rounds, sides)
        self.check_errors("openai latency", runs)
        out = {"requests_per_round": a.latency_n, "streams": a.openai_streams, "pace_ms": a.pace_ms,
               "deltas": a.deltas}
        for name, (direct, proxy) in paths.items():
            row = out[name] = {}
            for q in ("p50", "p99"):
                row[f"latency_{q}_direct_ms"] = median(r["latency"].get(q) for r in runs[direct])
                row[f"latency_{q}_proxy_ms"] = median(r["latency"].get(q) for r in runs[proxy])
                row[f"added_latency_{q}_ms"] = median(p["latency"][q] - d["latency"][q]
                                                      for d, p in zip(runs[direct], runs[proxy]))
            row["proxy_cpu_us_per_request"] = median(per_unit(r, "proxy", r["requests_total"])
                                                     for r in runs[proxy])
        n = a.openai_streams
        runs = self.pairs(lambda side, r: {
            "op": "streams", **self.target(side), "n": n, "deltas": a.deltas, "pace_ms": a.pace_ms,
            "ramp_ms": a.stream_interval_ms * n, "seed_base": r * 100000 + sides.index(side) * 20000,
            "timeout": 60}, a.rounds, sides)
        self.check_errors("openai streams", runs)
        for name, (direct, proxy) in paths.items():
            row = out[name]
            for key, q in (("ttfe", "p50"), ("gap", "p99")):
                row[f"{key}_{q}_direct_ms"] = median(r[key].get(q) for r in runs[direct])
                row[f"{key}_{q}_proxy_ms"] = median(r[key].get(q) for r in runs[proxy])
                row[f"added_{key}_{q}_ms"] = median(p[key].get(q, 0) - d[key].get(q, 0)
                                                    for d, p in zip(runs[direct], runs[proxy]))
            row["proxy_cpu_us_per_event"] = median(per_unit(r, "proxy", r["events_received"]) for r in runs[proxy])
            row["streams_checked"] = sum(r["byte_identical_streams"] for r in runs[proxy])
            row["streams_total"] = n * len(runs[proxy])
        # Per round: how much more the translation adds to the first event than the Anthropic path.
        out["ttfe_translation_extra_ms"] = median(
            (op["ttfe"].get("p50", 0) - od["ttfe"].get("p50", 0)) - (ap["ttfe"].get("p50", 0) - ad["ttfe"].get("p50", 0))
            for ad, ap, od, op in zip(runs["direct"], runs["proxy"], runs["openai-direct"], runs["openai-proxy"]))
        return out


# --- targets and the table ---------------------------------------------------------

def evaluate(results):
    """The issue's targets, each with the measured value and whether it is met."""
    targets = []

    def add(key, text, value, limit, unit, ok):
        targets.append({"id": key, "target": text, "value": None if value is None else round(value, 3),
                        "limit": limit, "unit": unit, "met": None if value is None else bool(ok)})

    lat = results.get("latency")
    if lat:
        add("latency_added_p50", "added p50, c=1", lat["added_p50_ms"], 0.5, "ms", lat["added_p50_ms"] <= 0.5)
        add("latency_added_p99", "added p99, c=1", lat["added_p99_ms"], 2.0, "ms", lat["added_p99_ms"] <= 2.0)
    for row in results.get("throughput", []):
        if row["provider_delay_ms"] == 0 and row["concurrency"] == 16:
            add("throughput_instant_c16", "req/s vs direct, instant, c=16", row["ratio"], 0.4, "x",
                row["ratio"] is not None and row["ratio"] >= 0.4)
        if row["provider_delay_ms"] > 0:
            c = row["concurrency"]
            least = slow_target(c)
            add(f"throughput_slow_c{c}", f"req/s vs direct, {row['provider_delay_ms']:g} ms, c={c}",
                row["ratio"], least, "x", row["ratio"] is not None and row["ratio"] >= least)
    for row in results.get("streaming", []):
        n = row["streams"]
        add(f"stream{n}_added_ttfe_p50", f"{n} streams: added first event p50", row["added_ttfe_p50_ms"], 1.0,
            "ms", row["added_ttfe_p50_ms"] <= 1.0)
        add(f"stream{n}_added_gap_p99", f"{n} streams: added gap p99", row["added_gap_p99_ms"], 1.0, "ms",
            row["added_gap_p99_ms"] <= 1.0)
        p = row["proxy"]
        bad = p["lost"] + p["reordered"] + p["unexpected"] + p["mismatched_streams"] + p["failed_streams"]
        add(f"stream{n}_integrity", f"{n} streams: lost/reordered/altered events", bad, 0, "events", bad == 0)
    mem = results.get("memory")
    if mem:
        add("rss_idle", "RSS idle", mem["idle_rss_mib"], 30, "MiB", mem["idle_rss_mib"] <= 30)
        if "per_stream_kib" in mem:
            add("rss_per_stream", "RSS per open stream", mem["per_stream_kib"], 64, "KiB",
                mem["per_stream_kib"] <= 64)
        if "after_threads" in mem:
            add("threads_back", "threads back to baseline after streams", mem["after_threads"],
                mem["before_streams_threads"], "threads", mem["after_threads"] <= mem["before_streams_threads"])
        if "after_minus_before_mib" in mem:
            # "back to baseline": within 64 KiB per stream of what it was before the streams.
            slack = 64 * mem["streams"] / 1024 / 4
            add("rss_back", "RSS after streams minus before", mem["after_minus_before_mib"], round(slack, 1),
                "MiB", mem["after_minus_before_mib"] <= slack)
    oa = results.get("openai")
    if oa:
        add("openai_ttfe_vs_anthropic", "OpenAI provider: added first event p50 minus the Anthropic path's",
            oa["ttfe_translation_extra_ms"], 1.0, "ms", oa["ttfe_translation_extra_ms"] <= 1.0)
        ok = oa["openai"]["streams_checked"]
        add("openai_integrity", "OpenAI provider: translated streams with the provider's text, ended",
            oa["openai"]["streams_total"] - ok, 0, "streams", ok == oa["openai"]["streams_total"])
    fo = results.get("failover")
    if fo:
        add("failover_added_p50", "failover added p50 beyond both answers", fo["added_p50_ms"], 2.0, "ms",
            fo["added_p50_ms"] <= 2.0)
    return targets


def slow_target(concurrency):
    """The least ratio to direct a slow provider's row must reach: 0.95x, and 0.6x from
    256 in flight (issue 16's targets; one thread per connection tops out below 0.95 there)."""
    return 0.6 if concurrency >= 256 else 0.95


def frame_label(meta):
    """What the "frame" side is: the bare frame, or the proxy given with --beside."""
    if not meta.get("beside"):
        return "bare frame"
    return f"beside ({meta.get('beside_commit') or meta['beside']})"


def _f0(v):
    """A whole number, or "?" where the figure is not available (no /proc)."""
    return "?" if v is None else f"{v:.0f}"


def _ms(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f} ms"


def _signed(v, unit="ms", digits=2):
    return "-" if v is None else f"{v:+.{digits}f} {unit}"


def _verdict(targets, key):
    for t in targets:
        if t["id"] == key:
            return "ok" if t["met"] else ("MISS" if t["met"] is False else "")
    return ""


def render(results):
    meta, targets = results["meta"], results["targets"]
    w = 34
    lines = []
    m = meta["machine"]
    lines.append(f"claude-proxy benchmark  {meta['date']}  proxy code at {meta.get('proxy_commit') or '?'}"
                 f"{'  (QUICK: tiny load, not for comparison)' if meta['quick'] else ''}"
                 f"{'  (usage.db off: --no-usage-db)' if meta.get('usage_db') is False else ''}")
    lines.append(f"machine: {m['cpu_model']}, {m['nproc']} CPUs, {m['mem_gib']} GiB, {m['os']}, "
                 f"{m['implementation']} {m['python']}")
    lines.append(f"pinning: {meta['pinning']}")
    bg = results.get("background")
    if bg:
        lines.append(f"other load on the machine during the run: {bg['proxy_cpu']['other_pct']:.0f}% of the "
                     f"proxy's CPU, {bg['harness_cpus']['other_pct']:.0f}% of the harness's; hypervisor steal "
                     f"{bg['proxy_cpu']['steal_pct']:.0f}% / {bg['harness_cpus']['steal_pct']:.0f}%")
    lines.append(f"method: {meta['rounds']} interleaved direct/proxy rounds per figure, medians over rounds; "
                 f"'added' = proxy - direct, ratio = proxy / direct, per round")
    lines.append("")
    head = f"{'':{w}} {'direct':>11} {'proxy':>11} {'added/ratio':>12}  {'target':>10}"
    lat = results.get("latency")
    if lat:
        lines.append(f"1. added latency, non-streaming, concurrency 1 ({lat['requests_per_round']} requests/round)")
        lines.append(head)
        for q, limit in (("p50", "<= 0.5 ms"), ("p99", "<= 2 ms")):
            lines.append(f"   {q:{w - 3}} {_ms(lat['direct'][q], 3):>11} {_ms(lat['proxy'][q], 3):>11} "
                         f"{_signed(lat[f'added_{q}_ms'], digits=3):>12}  {limit:>10}  "
                         f"{_verdict(targets, f'latency_added_{q}')}")
        for ref, name in (("relay", "bare TCP relay"), ("frame", frame_label(meta))):
            if ref not in lat:
                continue
            for q in ("p50", "p99"):
                lines.append(f"   {f'floor: {name}, ' + q:{w - 3}} {'':>11} "
                             f"{_ms(lat[ref][q], 3):>11} {_signed(lat[f'{ref}_added_{q}_ms'], digits=3):>12}"
                             + (f"  (same CPU as the proxy; {_f0(lat[f'{ref}_cpu_us_per_request'])} us CPU per request)"
                                if q == "p50" else ""))
        lines.append(f"   proxy CPU {_f0(lat['proxy_cpu_pct'])}% of its core, "
                     f"{_f0(lat['proxy_cpu_us_per_request'])} us per request")
        lines.append("")
    rows = results.get("throughput")
    if rows:
        lines.append("2. throughput (requests/s, non-streaming)")
        lines.append(f"{'':{w}} {'direct':>11} {'proxy':>11} {'ratio':>12}  {'target':>10}")
        for row in rows:
            d = row["provider_delay_ms"]
            label = f"   {'instant' if not d else f'{d:g} ms'} provider, c={row['concurrency']}"
            tid = "throughput_instant_c16" if (not d and row["concurrency"] == 16) else \
                (f"throughput_slow_c{row['concurrency']}" if d else "")
            limit = ">= 0.40x" if tid == "throughput_instant_c16" else \
                (f">= {slow_target(row['concurrency']):.2f}x" if d else "")
            extra = (f"  proxy CPU {_f0(row['proxy_cpu_pct'])}%, {_f0(row['proxy_cpu_us_per_request'])} us/req; "
                     f"harness {_f0(row['harness_cpu_pct_direct'])}%")
            if d:
                extra += f", direct at {row['direct_rps'] / row['ideal_rps'] * 100:.0f}% of ideal"
            if "frame_ratio" in row:
                extra += f"; {frame_label(meta)} {row['frame_ratio']:.2f}x, {_f0(row['frame_cpu_us_per_request'])} us/req"
            lines.append(f"{label:{w}} {row['direct_rps']:>11.0f} {row['proxy_rps']:>11.0f} "
                         f"{row['ratio']:>11.2f}x  {limit:>10}  {_verdict(targets, tid):4}{extra}")
        lines.append("")
    rows = results.get("streaming")
    if rows:
        lines.append(f"3. streaming, {rows[0]['pace_ms']:g} ms between events, "
                     f"{rows[0]['events_per_stream']} events per stream, streams start "
                     f"{rows[0]['stream_interval_ms']:g} ms apart")
        lines.append(head)
        for row in rows:
            n = row["streams"]
            lines.append(f"   {n} streams: first event p50{'':{w - 30 - len(str(n))}} "
                         f"{_ms(row['ttfe_p50_direct_ms']):>11} {_ms(row['ttfe_p50_proxy_ms']):>11} "
                         f"{_signed(row['added_ttfe_p50_ms']):>12}  {'<= 1 ms':>10}  "
                         f"{_verdict(targets, f'stream{n}_added_ttfe_p50')}")
            lines.append(f"   {n} streams: gap p99{'':{w - 22 - len(str(n))}} "
                         f"{_ms(row['gap_p99_direct_ms']):>11} {_ms(row['gap_p99_proxy_ms']):>11} "
                         f"{_signed(row['added_gap_p99_ms']):>12}  {'<= 1 ms':>10}  "
                         f"{_verdict(targets, f'stream{n}_added_gap_p99')}")
            p = row["proxy"]
            lines.append(f"   {n} streams: events via proxy: {p['events_received']}/{p['events_expected']} arrived, "
                         f"{p['lost']} lost, {p['reordered']} reordered, "
                         f"{p['byte_identical_streams']}/{p['streams']} streams byte-identical  "
                         f"{_verdict(targets, f'stream{n}_integrity')}")
            for ref, name in (("relay", "bare TCP relay"), ("frame", frame_label(meta))):
                if f"{ref}_added_gap_p99_ms" in row:
                    lines.append(f"   {n} streams, floor ({name}, same CPU): first event p50 "
                                 f"{_signed(row[f'{ref}_added_ttfe_p50_ms'])}, gap p99 "
                                 f"{_signed(row[f'{ref}_added_gap_p99_ms'])}, CPU {_f0(row[f'{ref}_cpu_pct'])}%, "
                                 f"{_f0(row[f'{ref}_cpu_us_per_event'])} us per event")
            lines.append(f"   {n} streams: proxy CPU {_f0(row['proxy_cpu_pct'])}% of its core "
                         f"({_f0(row['proxy_cpu_us_per_event'])} us per event relayed); "
                         f"harness CPU {_f0(row['harness_cpu_pct'])}% of the other (direct run)")
        lines.append("")
    def row(label, value, target="", verdict=""):
        lines.append(f"   {label:{w - 3}} {value:<50} {target:>10}  {verdict}".rstrip())

    mem = results.get("memory")
    if mem:
        lines.append("4. proxy memory and threads (/proc)")
        row("RSS idle (fresh start)", f"{mem['idle_rss_mib']:.1f} MiB", "<= 30 MiB", _verdict(targets, "rss_idle"))
        if "per_stream_kib" in mem:
            row(f"RSS with {mem['streams']} streams open",
                f"{mem['open_rss_mib']:.1f} MiB (before: {mem['before_streams_rss_mib']:.1f}), "
                f"{mem['per_stream_kib']:.1f} KiB/stream", "<= 64 KiB", _verdict(targets, "rss_per_stream"))
        if "after_rss_mib" in mem:
            row("RSS after the streams", f"{mem['after_rss_mib']:.1f} MiB ({mem['after_minus_before_mib']:+.1f} "
                f"vs before)", "baseline", _verdict(targets, "rss_back"))
            row("threads idle/before/open/after", f"{mem['idle_threads']} / {mem['before_streams_threads']} / "
                f"{mem['open_threads']} / {mem['after_threads']}", "baseline", _verdict(targets, "threads_back"))
        lines.append("")
    fo = results.get("failover")
    if fo:
        lines.append(f"5. failover: a answers 429 (retry-after: 0), b serves; concurrency 1; "
                     f"{fo['failovers_verified']}/{fo['failovers_expected']} requests checked to fail over")
        lines.append(f"{'':{w}} {'a 429':>11} {'b':>11} {'proxy, b':>11} {'proxy, a->b':>12}")
        for q in ("p50", "p99"):
            lines.append(f"   {q:{w - 3}} {_ms(fo['direct_429'][q], 3):>11} {_ms(fo['direct_b'][q], 3):>11} "
                         f"{_ms(fo['proxy_normal'][q], 3):>11} {_ms(fo['proxy_failover'][q], 3):>12}")
        row("added beyond a + b answers", f"p50 {_signed(fo['added_p50_ms'], digits=3)}, "
            f"p99 {_signed(fo['added_p99_ms'], digits=3)}", "<= 2 ms", _verdict(targets, "failover_added_p50"))
        row("the failover step itself", f"p50 {_signed(fo['failover_only_p50_ms'], digits=3)} "
            "(a->b minus proxy b minus a's 429)")
        lines.append("")
    oa = results.get("openai")
    if oa:
        lines.append(f"6. an OpenAI-type provider (Chat Completions, translated) beside the Anthropic path, "
                     f"same rounds; latency at concurrency 1 ({oa['requests_per_round']} requests/round), "
                     f"{oa['streams']} streams")
        lines.append(head)
        for name, label in (("anthropic", "Anthropic"), ("openai", "OpenAI")):
            r = oa[name]
            for q in ("p50", "p99"):
                lines.append(f"   {label + ' latency ' + q:{w - 3}} {_ms(r[f'latency_{q}_direct_ms'], 3):>11} "
                             f"{_ms(r[f'latency_{q}_proxy_ms'], 3):>11} "
                             f"{_signed(r[f'added_latency_{q}_ms'], digits=3):>12}")
            lines.append(f"   {label + ' first event p50':{w - 3}} {_ms(r['ttfe_p50_direct_ms']):>11} "
                         f"{_ms(r['ttfe_p50_proxy_ms']):>11} {_signed(r['added_ttfe_p50_ms']):>12}")
            lines.append(f"   {label + ' gap p99':{w - 3}} {_ms(r['gap_p99_direct_ms']):>11} "
                         f"{_ms(r['gap_p99_proxy_ms']):>11} {_signed(r['added_gap_p99_ms']):>12}")
            lines.append(f"   {label}: proxy CPU {_f0(r['proxy_cpu_us_per_request'])} us per request, "
                         f"{_f0(r['proxy_cpu_us_per_event'])} us per streamed event; "
                         f"{r['streams_checked']}/{r['streams_total']} streams checked")
        row("translation's extra first-event time", f"{_signed(oa['ttfe_translation_extra_ms'])} "
            "(OpenAI added minus Anthropic added, per round)", "<= 1 ms",
            _verdict(targets, "openai_ttfe_vs_anthropic"))
        lines.append("")
    ro = results.get("routing")
    if ro:
        lines.append(f"7. routing strategies: a proxy in front of a and b (both serve), concurrency 1 "
                     f"({ro['requests_per_round']} requests/round; a served {ro['served']['a']}, "
                     f"b {ro['served']['b']})")
        lines.append(f"{'':{w}} {'p50':>11} {'added p50':>11} {'added p99':>11} {'CPU/request':>12}")
        lines.append(f"   {'direct to a':{w - 3}} {_ms(ro['direct']['p50'], 3):>11}")
        for side in STRATEGY_SIDES:
            r = ro[side]
            lines.append(f"   {side:{w - 3}} {_ms(r['p50'], 3):>11} {_signed(r['added_p50_ms'], digits=3):>11} "
                         f"{_signed(r['added_p99_ms'], digits=3):>11} {_f0(r['cpu_us_per_request']) + ' us':>12}")
        lines.append("")
    met = sum(1 for t in targets if t["met"])
    missed = [t["id"] for t in targets if t["met"] is False]
    lines.append(f"targets: {met}/{len(targets)} met" + (f"; missed: {', '.join(missed)}" if missed else ""))
    for note in results.get("notes", []):
        lines.append(f"note: {note}")
    lines.append(f"total time {results['elapsed_s']:.0f} s")
    return "\n".join(lines)


# --- profiling (optional) ----------------------------------------------------------

def start_profiler(args, pid, workdir):
    exe = shutil.which("py-spy")
    if not exe:
        raise BenchError("--profile needs py-spy on PATH (pip install py-spy)")
    raw = Path(args.profile).resolve()
    extra = ["--gil"] if args.profile_gil else []
    proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", str(args.profile_rate),
                             "--format", "raw", "--output", str(raw), "--nonblocking", *extra],
                            stdout=subprocess.DEVNULL, stderr=open(Path(workdir) / "py-spy.stderr", "wb"))
    time.sleep(1.0)  # attach
    if proc.poll() is not None:
        raise BenchError(f"py-spy failed: {(Path(workdir) / 'py-spy.stderr').read_text()[-500:]}")
    return proc, raw


def summarize_profile(raw, top=25):
    """Self and inclusive share of samples per function, from py-spy's raw (collapsed) output.

    Frames are aggregated by function and file (line numbers dropped); threads
    and processes are merged.
    """
    selfc, incl, total = {}, {}, 0
    with contextlib.suppress(OSError):
        for line in Path(raw).read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            count = int(count)
            frames = [_function_of(f) for f in stack.split(";")
                      if f and not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            total += count
            selfc[frames[-1]] = selfc.get(frames[-1], 0) + count
            for f in set(frames):
                incl[f] = incl.get(f, 0) + count
    if not total:
        return "(no samples)"
    out = [f"{total} samples; by function: self% (the function itself), incl% (with what it calls)",
           "  self%   incl%   function"]
    for f, c in sorted(selfc.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"  {c / total * 100:5.1f}  {incl[f] / total * 100:6.1f}   {f}")
    out.append("inclusive, top:")
    for f, c in sorted(incl.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"         {c / total * 100:6.1f}   {f}")
    return "\n".join(out)


def _function_of(frame):
    """``name (path:line)`` -> ``name (file)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.replace("\\", "/").split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 and parts[-2] == "claude_proxy" else parts[-1]
    return f"{name} ({short})"


# --- main ------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--quick", action="store_true", help="tiny load (a few seconds): a smoke run, not a measurement")
    p.add_argument("--only", default=",".join(GROUPS),
                   help=f"comma list of groups to run (default all: {','.join(GROUPS)}; memory comes with streaming)")
    p.add_argument("--proxy", default=str(ROOT / "proxy.py"), help="the proxy entry point to benchmark")
    p.add_argument("--rounds", type=int, help="interleaved rounds per figure (default 3; quick 2)")
    p.add_argument("--latency-n", type=int, help="requests per latency round (default 1500)")
    p.add_argument("--failover-n", type=int, help="requests per failover round (default 300)")
    p.add_argument("--duration", type=float, help="seconds per throughput run (default 1.0)")
    p.add_argument("--concurrency", help="instant-provider concurrency levels (default 1,16,64)")
    p.add_argument("--slow-concurrency", help="slow-provider concurrency levels (default 1,16,64,256)")
    p.add_argument("--slow-ms", type=float, default=20.0, help="the slow provider's delay (default 20)")
    p.add_argument("--streams", help="concurrent stream counts (default 100,256)")
    p.add_argument("--openai-streams", type=int, help="concurrent streams in the OpenAI group (default 100)")
    p.add_argument("--deltas", type=int, help="content_block_delta events per stream (default 40)")
    p.add_argument("--pace-ms", type=float, default=20.0, help="time between stream events (default 20)")
    p.add_argument("--stream-interval-ms", type=float,
                   help="streams start this far apart (default 2: 500 new streams/s, so 256 streams "
                        "all run at once for a while)")
    p.add_argument("--no-relay-floor", dest="relay_floor", action="store_false",
                   help="skip the bare-TCP-relay reference (latency and streaming groups)")
    p.add_argument("--no-frame-floor", dest="frame_floor", action="store_false",
                   help="skip the bare-frame reference, bench/bare_forwarder.py (latency, throughput and "
                        "streaming groups)")
    p.add_argument("--beside", metavar="PATH",
                   help="measure another proxy.py (another checkout, to compare a change) in the bare "
                        "frame's place, in the same rounds: less noise than two separate runs "
                        "(--no-usage-db applies to it too)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--no-usage-db", dest="usage_db", action="store_false",
                   help="run the proxy with \"usage_record\": false (to see what usage.db costs)")
    p.add_argument("--proxy-cpu", type=int, help="the CPU for the proxy (default: the last usable one)")
    p.add_argument("--profile", metavar="PATH", help="record the proxy with py-spy (raw collapsed stacks) "
                                                     "and print a per-function summary")
    p.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--profile-gil", action="store_true",
                   help="sample only the thread holding the GIL (where the Python CPU time goes)")
    args = p.parse_args(argv)

    q = args.quick
    args.rounds = args.rounds or (2 if q else 3)
    args.latency_n = args.latency_n or (100 if q else 1500)
    args.failover_n = args.failover_n or (30 if q else 300)
    args.duration = args.duration or (0.15 if q else 1.0)
    ints = lambda text: [int(x) for x in text.split(",") if x.strip()]  # noqa: E731
    args.concurrency = ints(args.concurrency or ("1,4" if q else "1,16,64"))
    args.slow_concurrency = ints(args.slow_concurrency or ("4" if q else "1,16,64,256"))
    args.streams = ints(args.streams or ("5,12" if q else "100,256"))
    args.deltas = args.deltas or (4 if q else 40)
    args.openai_streams = args.openai_streams or (5 if q else 100)
    if q and args.pace_ms == 20.0:
        args.pace_ms = 5.0
    if args.stream_interval_ms is None:
        args.stream_interval_ms = 1.0 if q else 2.0
    args.only = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = set(args.only) - set(GROUPS) - {"memory"}
    if unknown:
        p.error(f"unknown group(s): {', '.join(sorted(unknown))}")
    if "memory" in args.only and "streaming" not in args.only:
        args.only.append("streaming")
    if args.beside and not args.frame_floor:
        p.error("--beside runs in the bare frame's place: leave out --no-frame-floor")
    return args


def main(argv=None):
    args = parse_args(argv)
    started = time.monotonic()

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    results = {}
    profiler = None
    with tempfile.TemporaryDirectory(prefix="claude-proxy-bench-") as workdir:
        bench = Bench(args, workdir)
        stat0, t_stat = cpu_times_per_cpu(), time.monotonic()
        try:
            bench.start()
            time.sleep(0.3)
            bench.memory["idle"] = proc_status(bench.proxy.pid)
            bench.warm_up()
            if args.profile:
                profiler, raw = start_profiler(args, bench.proxy.pid, workdir)
            if "latency" in args.only:
                results["latency"] = bench.group_latency()
            if "throughput" in args.only:
                results["throughput"] = bench.group_throughput()
            if "streaming" in args.only:
                results["streaming"] = bench.group_streaming()
                results["memory"] = bench.memory_summary()
            if "failover" in args.only:
                results["failover"] = bench.group_failover()
            if "openai" in args.only:
                results["openai"] = bench.group_openai()
            if "routing" in args.only:
                results["routing"] = bench.group_routing()
            if not bench.proxy.alive():
                raise BenchError(f"the proxy died during the run:\n{bench.proxy.stderr_tail()}")
            results["background"] = bench.background_load(stat0, time.monotonic() - t_stat)
        except KeyboardInterrupt:
            print("interrupted; cleaning up", file=sys.stderr)
            return 130
        except BenchError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        finally:
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                try:
                    profiler.wait(30)
                except subprocess.TimeoutExpired:
                    profiler.kill()
                    profiler.wait(5)
            bench.stop()
        if bench.proxy_cpus:
            pinning = (f"proxy on CPU {','.join(map(str, sorted(bench.proxy_cpus)))}; fake provider, load "
                       f"generator and orchestrator on CPU {','.join(map(str, sorted(bench.harness_cpus)))} "
                       "(sched_setaffinity)")
        else:
            pinning = "none (fewer than 2 usable CPUs, --no-pin, or not Linux)"
        results["meta"] = {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine_info(), "pinning": pinning, "quick": args.quick,
            "proxy": str(Path(args.proxy).resolve()), "proxy_commit": git_commit(Path(args.proxy).resolve().parent),
            "rounds": args.rounds, "groups": args.only, "usage_db": args.usage_db,
            "beside": args.beside and str(Path(args.beside).resolve()),
            "beside_commit": args.beside and git_commit(Path(args.beside).resolve().parent),
            "settings": {k: getattr(args, k) for k in ("latency_n", "failover_n", "duration", "concurrency",
                                                       "slow_concurrency", "slow_ms", "streams", "openai_streams", "deltas",
                                                       "pace_ms", "stream_interval_ms")},
        }
        results["meta"]["processes"] = {c.name: c.pid for c in bench.children}
        results["notes"] = bench.notes
        results["targets"] = evaluate(results)
        results["lost_events"] = sum(r["proxy"]["lost"] + r["proxy"]["reordered"] + r["proxy"]["unexpected"]
                                     for r in results.get("streaming", []))
        results["elapsed_s"] = time.monotonic() - started
        print(render(results))
        if args.profile:
            print()
            print(f"profile of the proxy ({raw}):")
            print(summarize_profile(raw))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
