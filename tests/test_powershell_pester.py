"""The PowerShell module's own suite (tests/ClaudeProxy.Tests.ps1), run by Pester 5 in pwsh.

One pytest test: it starts the fake providers alpha and beta (steered over
HTTP by the Pester tests), runs ``pwsh -NoProfile -NonInteractive`` with
Pester imported from ``$CLAUDE_PROXY_PESTER`` (a path to Pester.psd1) or
else from the user's modules (``Import-Module Pester -MinimumVersion 5.0``),
and fails with Pester's failure summary.  Without pwsh or Pester it skips,
saying why, unless ``CLAUDE_PROXY_REQUIRE_PWSH=1`` (CI), where that is a
failure.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from daemon_support import ROOT, clean_environ
from fakes import ControlledFakeProvider

TESTS = ROOT / "tests" / "ClaudeProxy.Tests.ps1"
TIMEOUT = 300  # seconds; the suite takes well under a minute

# Runs in pwsh; the paths come in through the environment (no quoting to get wrong).
RUNNER = r"""
$ErrorActionPreference = 'Stop'
if ($env:CLAUDE_PROXY_PESTER) {
    Import-Module -Name $env:CLAUDE_PROXY_PESTER
} else {
    Import-Module -Name Pester -MinimumVersion 5.0
}
$configuration = New-PesterConfiguration
$configuration.Run.Path = $env:CLAUDE_PROXY_PESTER_TESTS
$configuration.Run.PassThru = $true
$configuration.Output.Verbosity = 'Detailed'
$result = Invoke-Pester -Configuration $configuration
$failures = @()
foreach ($test in @($result.Failed)) {
    $failures += @{ name = $test.ExpandedPath; message = (@($test.ErrorRecord | ForEach-Object { "$_" }) -join "`n") }
}
foreach ($block in @($result.FailedBlocks) + @($result.FailedContainers)) {
    $failures += @{ name = "$($block.Name) (setup or teardown)"; message = (@($block.ErrorRecord | ForEach-Object { "$_" }) -join "`n") }
}
$summary = @{ passed = $result.PassedCount; failed = $result.FailedCount; skipped = $result.SkippedCount;
              notrun = $result.NotRunCount; seconds = $result.Duration.TotalSeconds; failures = $failures }
[System.IO.File]::WriteAllText($env:CLAUDE_PROXY_PESTER_SUMMARY, ($summary | ConvertTo-Json -Depth 5))
"""

PROBE = r"""
if ($env:CLAUDE_PROXY_PESTER) { Import-Module -Name $env:CLAUDE_PROXY_PESTER } else { Import-Module -Name Pester -MinimumVersion 5.0 }
(Get-Module -Name Pester).Version.ToString()
"""


def unavailable(reason):
    if os.environ.get("CLAUDE_PROXY_REQUIRE_PWSH") == "1":
        pytest.fail(f"{reason}, and CLAUDE_PROXY_REQUIRE_PWSH=1 says the PowerShell tests must run")
    pytest.skip(reason)


def pester_version(pwsh, environ):
    """Pester's version as pwsh imports it, or None."""
    try:
        probe = subprocess.run([pwsh, "-NoProfile", "-NonInteractive", "-Command", PROBE], env=environ,
                               capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):  # a pwsh that cannot run counts as none
        return None
    version = probe.stdout.strip().splitlines()[-1:] if probe.returncode == 0 else []
    return version[0] if version and version[0].startswith(("5.", "6.")) else None


def test_the_powershell_module_passes_its_pester_suite(tmp_path):
    pwsh = shutil.which("pwsh")
    if pwsh is None:
        unavailable("pwsh (PowerShell 7) is not on PATH")
    environ = clean_environ()
    pester = os.environ.get("CLAUDE_PROXY_PESTER")
    if pester:
        environ["CLAUDE_PROXY_PESTER"] = pester
    if pester_version(pwsh, environ) is None:
        unavailable("Pester 5 cannot be imported " + (
            f"from CLAUDE_PROXY_PESTER={pester}" if pester else
            "(Install-Module Pester -MinimumVersion 5 -Scope CurrentUser, or set CLAUDE_PROXY_PESTER)"))

    alpha, beta = ControlledFakeProvider("alpha"), ControlledFakeProvider("beta")
    summary_path = tmp_path / "pester-summary.json"
    environ.update({
        "CLAUDE_PROXY_PESTER_TESTS": str(TESTS),
        "CLAUDE_PROXY_PESTER_SUMMARY": str(summary_path),
        "CLAUDE_PROXY_TEST_PYTHON": sys.executable,
        "CLAUDE_PROXY_TEST_PWSH": pwsh,
        "CLAUDE_PROXY_TEST_ALPHA_URL": alpha.url,
        "CLAUDE_PROXY_TEST_BETA_URL": beta.url,
        "KEY_ALPHA": "fake-key-alpha",
        "KEY_BETA": "fake-key-beta",
        "NO_PROXY": "127.0.0.1,localhost",
        "NO_COLOR": "1",
    })
    try:
        run = subprocess.run([pwsh, "-NoProfile", "-NonInteractive", "-Command", RUNNER], env=environ,
                             capture_output=True, text=True, encoding="utf-8", errors="replace",
                             timeout=TIMEOUT, stdin=subprocess.DEVNULL, cwd=str(tmp_path))
    finally:
        alpha.close()
        beta.close()

    output = (run.stdout + run.stderr)[-6000:]
    assert summary_path.exists(), f"Pester did not finish (exit code {run.returncode}):\n{output}"
    summary = json.loads(summary_path.read_text(encoding="utf-8-sig"))
    if summary["failures"] or summary["failed"]:
        lines = [f"{summary['failed']} of {summary['passed'] + summary['failed']} Pester tests failed:"]
        for failure in summary["failures"]:
            lines.append(f"- {failure['name']}\n    " + failure["message"].replace("\n", "\n    "))
        pytest.fail("\n".join(lines), pytrace=False)
    assert summary["passed"] > 0, f"no Pester test ran:\n{output}"
    assert summary["notrun"] == 0, f"{summary['notrun']} Pester tests did not run:\n{output}"
