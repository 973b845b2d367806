"""The benchmark (bench/) runs end to end with a tiny load.

No timing is asserted here (the machine is shared and noisy): only that every
group produced its figures, that the streams arrived whole and byte-identical
through the proxy, that the failover path was really taken, and that no
process is left behind.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

import wire  # noqa: E402


def test_sse_parser_splits_events_across_any_chunking():
    events = wire.stream_events(7, 3)
    body = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"
    raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n" + body
    for step in (1, 7, 64, len(raw)):
        parser = wire.ResponseParser(sse=True)
        done = False
        for i in range(0, len(raw), step):
            assert not done
            done = parser.feed(raw[i:i + step], now=float(i))
        assert done and parser.status == 200
        assert parser.events == events
        assert bytes(parser.body) == b"".join(events)
        assert len(parser.event_times) == len(events)


def test_stream_events_follow_anthropic_sequence():
    names = [e.split(b"\n", 1)[0] for e in wire.stream_events(1, 2)]
    assert names == [b"event: message_start", b"event: content_block_start",
                     b"event: content_block_delta", b"event: content_block_delta",
                     b"event: content_block_stop", b"event: message_delta", b"event: message_stop"]
    for event in wire.stream_events(1, 2):
        assert event.endswith(b"\n\n")
        json.loads(event.split(b"\ndata: ", 1)[1])
    assert wire.stream_events(1, 2) != wire.stream_events(2, 2)


def test_chat_stream_follows_openai_sequence_with_the_same_text():
    events = wire.chat_events(3, 2)
    assert events[-1] == b"data: [DONE]\n\n"
    chunks = [json.loads(e[len(b"data: "):]) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-bench_00000003" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, None, "stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert text == wire.stream_text(3, 2)
    anthropic = [json.loads(e.split(b"\ndata: ", 1)[1]) for e in wire.stream_events(3, 2)]
    assert text == "".join(e["delta"]["text"] for e in anthropic if e["type"] == "content_block_delta")


def test_knobs_reach_the_fake_provider_in_the_body():
    knobs = {"seed": 12, "deltas": 40, "pace": 2.5}
    for body in (wire.request_body(True, knobs=knobs), wire.chat_request_body(True, knobs)):
        assert wire.knobs_in_body(body) == {wire.H_SEED: "12", wire.H_DELTAS: "40", wire.H_PACE: "2.5"}
    assert wire.knobs_in_body(wire.request_body()) == {}


def _still_running(pids):
    """Those of ``pids`` that still run a benchmark process (Linux only)."""
    alive = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"bench" in cmdline or b"proxy.py" in cmdline:
            alive.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return alive


def test_benchmark_runs_end_to_end_quick(tmp_path):
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_PROXY")}
    proc = subprocess.run([sys.executable, str(BENCH / "run.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=150, cwd=str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for heading in ("1. added latency", "2. throughput", "3. streaming", "4. proxy memory", "5. failover",
                    "6. an OpenAI-type provider", "7. routing strategies", "targets:"):
        if heading == "4. proxy memory" and not Path("/proc/self/status").exists():
            continue
        assert heading in proc.stdout, proc.stdout

    results = json.loads(out.read_text())
    assert set(results) >= {"meta", "latency", "throughput", "streaming", "memory", "failover", "openai",
                            "targets", "lost_events", "elapsed_s", "notes"}
    assert results["meta"]["quick"] is True
    assert results["meta"]["machine"]["nproc"] >= 1

    lat = results["latency"]
    for key in ("added_p50_ms", "added_p99_ms"):
        assert isinstance(lat[key], float)
    assert lat["direct"]["p50"] > 0 and lat["proxy"]["p50"] > 0

    # The references beside the proxy: the extra hop alone, and the standard-library frame alone.
    assert lat["relay_cpu_us_per_request"] > 0 and isinstance(lat["relay_added_p50_ms"], float)
    assert lat["frame_cpu_us_per_request"] > 0 and isinstance(lat["frame_added_p50_ms"], float)

    rows = results["throughput"]
    assert {row["provider_delay_ms"] for row in rows} == {0, 20.0}
    for row in rows:
        assert row["direct_rps"] > 0 and row["proxy_rps"] > 0 and row["ratio"] > 0
        assert row["frame_rps"] > 0 and row["frame_ratio"] > 0 and row["frame_cpu_us_per_request"] > 0

    assert len(results["streaming"]) == 2
    for row in results["streaming"]:
        for side in ("direct", "proxy", "relay", "frame"):
            counts = row[side]
            assert counts["events_expected"] > 0
            assert counts["events_received"] == counts["events_expected"], row
            assert counts["lost"] == counts["reordered"] == counts["unexpected"] == 0, row
            assert counts["mismatched_streams"] == counts["failed_streams"] == 0, row
            assert counts["byte_identical_streams"] == counts["streams"], row
        for key in ("added_ttfe_p50_ms", "added_gap_p99_ms"):
            assert isinstance(row[key], float)
    assert results["lost_events"] == 0

    if Path("/proc/self/status").exists():
        mem = results["memory"]
        assert mem["idle_rss_mib"] > 0 and mem["idle_threads"] >= 1
        assert {"open_rss_mib", "per_stream_kib", "after_rss_mib", "after_threads"} <= set(mem)

    fo = results["failover"]
    assert fo["failovers_expected"] > 0
    assert fo["failovers_verified"] == fo["failovers_expected"], fo
    assert isinstance(fo["added_p50_ms"], float)

    oa = results["openai"]
    for path in ("anthropic", "openai"):
        row = oa[path]
        for key in ("added_latency_p50_ms", "added_latency_p99_ms", "added_ttfe_p50_ms"):
            assert isinstance(row[key], float), row
        assert row["streams_checked"] == row["streams_total"] > 0, row  # the text arrived whole, translated
    assert isinstance(oa["ttfe_translation_extra_ms"], float)

    ro = results["routing"]
    for side in ("fallback", "round_robin", "fastest"):
        assert isinstance(ro[side]["added_p50_ms"], float), ro
    assert ro["served"]["a"] > ro["served"]["b"] > 0, ro  # fallback keeps to a; round_robin shares

    ids = {t["id"] for t in results["targets"]}
    assert {"latency_added_p50", "latency_added_p99", "failover_added_p50", "openai_ttfe_vs_anthropic"} <= ids
    assert all(isinstance(t["met"], bool) for t in results["targets"])
    assert not results["notes"] or all("errors" not in note for note in results["notes"]), results["notes"]

    processes = results["meta"]["processes"]
    assert {"proxy", "proxy-routing", "fake-provider", "loadgen", "tcp-relay", "frame"} <= set(processes)
    assert _still_running(processes.values()) == []


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
def test_benchmark_reports_how_it_pinned(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(BENCH / "run.py"), "--quick", "--only", "latency",
                           "--rounds", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    meta = json.loads(out.read_text())["meta"]
    if len(os.sched_getaffinity(0)) >= 2:
        assert meta["pinning"].startswith("proxy on CPU")
    else:
        assert meta["pinning"].startswith("none")
    assert "pinning:" in proc.stdout


def test_another_proxy_can_be_measured_beside_in_the_same_rounds(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(BENCH / "run.py"), "--quick", "--only", "latency", "--rounds", "1",
                           "--no-relay-floor", "--beside", str(BENCH.parent / "proxy.py"), "--json", str(out)],
                          capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
    assert results["meta"]["beside"] == str((BENCH.parent / "proxy.py").resolve())
    assert results["latency"]["frame_cpu_us_per_request"] > 0
    assert "floor: beside (" in proc.stdout and "bare frame" not in proc.stdout


def test_the_usage_writer_benchmark_runs():
    result = subprocess.run([sys.executable, str(BENCH / "usage_writer.py"), "--n", "500", "--rounds", "1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("usage.db cost per request")
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "request thread, hand-over (Entry.of + add)", "writer thread, one request per transaction (CPU)",
        "writer thread, 500 per transaction (CPU)"]
