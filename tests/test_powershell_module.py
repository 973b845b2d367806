"""ClaudeProxy.psm1 and ClaudeProxy.psd1, checked with a real PowerShell parser.

The module runs for real in tests/ClaudeProxy.Tests.ps1 (Pester, through
test_powershell_pester.py, where pwsh is installed); it is kept thin (every
decision is a proxy.py subcommand) and checked statically here with
tree-sitter-pwsh, with no PowerShell needed: it parses without an error node, the
four commands are approved-verb functions with the four aliases, exported
by both the module and its manifest, with comment-based help, and every
proxy.py subcommand and option it uses exists in cli.build_parser().
"""

import argparse
import io
import json
import re

import pytest
import tree_sitter_pwsh
from tree_sitter import Language, Parser

from daemon_support import ROOT

from claude_proxy import cli, daemon, session
from claude_proxy.config import load_config
from claude_proxy.state import StatePaths

MODULE = ROOT / "ClaudeProxy.psm1"
MANIFEST = ROOT / "ClaudeProxy.psd1"
PWSH = Language(tree_sitter_pwsh.language())

COMMANDS = {  # alias -> function, as users type them
    "claude-fb": "Enable-ClaudeProxy",
    "claude-switch": "Switch-ClaudeProvider",
    "claude-status": "Get-ClaudeProxyStatus",
    "claude-reset": "Reset-ClaudeProxy",
}
#: Runtime control of the running proxy: exported functions without an alias.
CONTROL = ["Disable-ClaudeProxyProvider", "Enable-ClaudeProxyProvider", "Suspend-ClaudeProxyProvider",
           "Resume-ClaudeProxyProvider"]
FUNCTIONS = sorted([*COMMANDS.values(), *CONTROL])
# Get-Verb, PowerShell 7.4 (Import-Module warns about any other verb).
APPROVED_VERBS = set("""
Add Clear Close Copy Enter Exit Find Format Get Hide Join Lock Move New Open Optimize Pop Push
Redo Remove Rename Reset Resize Search Select Set Show Skip Split Step Switch Undo Unlock Watch
Connect Disconnect Read Receive Send Write Backup Checkpoint Compare Compress Convert ConvertFrom
ConvertTo Dismount Edit Expand Export Group Import Initialize Limit Merge Mount Out Publish
Restore Save Sync Unpublish Update Approve Assert Build Complete Confirm Deny Deploy Disable
Enable Install Invoke Register Request Restart Resume Start Stop Submit Suspend Uninstall
Unregister Wait Debug Measure Ping Repair Resolve Test Trace Block Grant Protect Revoke Unblock
Unprotect Use
""".split())


def parse(path):
    return Parser(PWSH).parse(path.read_bytes()).root_node


def walk(node):
    yield node
    for child in node.children:
        yield from walk(child)


def text(node):
    return node.text.decode()


def unquote(node):
    """The value of a string_literal node (these files use plain literals only)."""
    value = text(node)
    assert value[0] in "'\"" and value[-1] == value[0], value
    return value[1:-1]


@pytest.fixture(scope="module")
def module():
    return parse(MODULE)


@pytest.fixture(scope="module")
def manifest():
    return parse(MANIFEST)


def functions(root):
    return {text(next(c for c in n.children if c.type == "function_name")): n
            for n in walk(root) if n.type == "function_statement"}


def own_parameters(function):
    """The function's own parameters (not those of script blocks inside it): {name: node}."""
    body = next(c for c in function.children if c.type == "script_block")
    blocks = [c for c in body.children if c.type == "param_block"]
    found = {}
    for block in blocks:
        for lst in (c for c in block.children if c.type == "parameter_list"):
            for parameter in (c for c in lst.children if c.type == "script_parameter"):
                variable = next(v for v in parameter.children if v.type == "variable")
                found[text(variable)[1:]] = parameter
    return found


def commands(root, name):
    found = []
    for node in walk(root):
        if node.type == "command":
            names = [c for c in node.children if c.type == "command_name"]
            if names and text(names[0]).lower() == name.lower():
                found.append(node)
    return found


def arguments(command):
    """The command's elements (parameters and arguments), separators left out."""
    elements = [c for c in command.children if c.type == "command_elements"]
    return [c for c in (elements[0].children if elements else []) if c.type != "command_argument_sep"]


def named_lists(command):
    """``-Name value, value`` pairs of a command: {"-name": [values]}."""
    result, current = {}, None
    for node in arguments(command):
        if node.type == "command_parameter":
            current = text(node).lower()
            result[current] = []
        elif current is not None:
            result[current].extend(text(t) for t in walk(node) if t.type == "generic_token")
    return result


def manifest_entry(manifest, key):
    for entry in walk(manifest):
        if entry.type == "hash_entry" and text(entry.children[0]) == key:
            return entry
    raise AssertionError(f"{key} is not in the manifest")


def manifest_strings(manifest, key):
    return [unquote(n) for n in walk(manifest_entry(manifest, key)) if n.type == "string_literal"]


def subparsers():
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


# --- it parses ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", [MODULE, MANIFEST], ids=["psm1", "psd1"])
def test_parses_without_any_error_node(path):
    root = parse(path)
    bad = [f"{n.type} at line {n.start_point[0] + 1}: {text(n)[:60]!r}"
           for n in walk(root) if n.type == "ERROR" or n.is_missing]
    assert not bad and not root.has_error, bad


def test_the_parser_does_find_errors():
    broken = Parser(PWSH).parse(b"function Oops {\n  if ($x -eq { \n").root_node
    assert broken.has_error


def test_strict_mode_is_on(module):
    (command,) = commands(module, "Set-StrictMode")
    assert [text(a) for a in arguments(command)] == ["-Version", "Latest"]


# --- the four commands ----------------------------------------------------------------------


def test_the_four_aliases_name_approved_verb_functions(module):
    aliases = {}
    for command in commands(module, "Set-Alias"):
        named = named_lists(command)
        aliases[named["-name"][0]] = named["-value"][0]
    assert aliases == COMMANDS
    defined = functions(module)
    for function in COMMANDS.values():
        assert function in defined
    for function in defined:
        verb, _, noun = function.partition("-")
        assert verb in APPROVED_VERBS and noun, function


def test_exports_are_explicit_and_the_same_in_module_and_manifest(module, manifest):
    (export,) = commands(module, "Export-ModuleMember")
    named = named_lists(export)
    assert sorted(named["-function"]) == FUNCTIONS
    assert sorted(named["-alias"]) == sorted(COMMANDS)
    assert sorted(manifest_strings(manifest, "FunctionsToExport")) == FUNCTIONS
    assert sorted(manifest_strings(manifest, "AliasesToExport")) == sorted(COMMANDS)
    assert manifest_strings(manifest, "CmdletsToExport") == []
    assert manifest_strings(manifest, "VariablesToExport") == []
    assert manifest_strings(manifest, "RootModule") == [MODULE.name]
    assert "*" not in MODULE.read_text(encoding="utf-8").split("Export-ModuleMember")[1]


def test_every_exported_command_has_comment_based_help(module):
    defined = functions(module)
    for function in FUNCTIONS:
        node = defined[function]
        helps = [text(c) for c in walk(node) if c.type == "comment" and text(c).startswith("<#")]
        assert helps, f"{function} has no comment-based help"
        help_text = helps[0]
        for keyword in (".SYNOPSIS", ".DESCRIPTION", ".EXAMPLE"):
            assert keyword in help_text, f"{function}: no {keyword}"
        for parameter in own_parameters(node):
            assert re.search(rf"\.PARAMETER {parameter}\b", help_text), f"{function}: no help for -{parameter}"
        alias = next((a for a, f in COMMANDS.items() if f == function), None)
        assert alias is None or f"alias: {alias}" in help_text


def test_switch_and_reset_take_their_parameters(module):
    defined = functions(module)

    def parameters(function):
        return own_parameters(defined[function])

    assert list(parameters("Enable-ClaudeProxy")) == ["Strategy"]
    assert list(parameters("Switch-ClaudeProvider")) == ["Provider"]
    assert list(parameters("Get-ClaudeProxyStatus")) == ["Json", "Watch"]
    assert list(parameters("Reset-ClaudeProxy")) == ["KeepRunning"]
    provider = parameters("Switch-ClaudeProvider")["Provider"]
    attributes = [text(a) for a in walk(provider) if a.type == "attribute_name"]
    assert "Parameter" in attributes
    keep = parameters("Reset-ClaudeProxy")["KeepRunning"]
    assert "[switch]" in text(keep)


def test_provider_completion_is_registered_at_module_scope(module):
    # An [ArgumentCompleter()] script block runs outside the module's scope,
    # where the private Get-ClaudeProxyProviderName does not exist.
    attributes = [text(a) for a in walk(module) if a.type == "attribute_name"]
    assert "ArgumentCompleter" not in attributes
    registered = {}
    for register in commands(module, "Register-ArgumentCompleter"):
        assert not any(n.type == "function_statement" for n in ancestors(register))
        named = {}
        current = None
        for node in arguments(register):
            if node.type == "command_parameter":
                current = text(node).lower()
                named[current] = []
            elif current is not None:
                named[current] += [unquote(t) for t in walk(node) if t.type == "string_literal"]
                named[current] += [text(t) for t in walk(node) if t.type in ("generic_token", "variable")]
        (parameter,) = named["-parametername"]
        registered[parameter] = (sorted(named["-commandname"]), named["-scriptblock"])
    assert registered == {
        "Provider": (["Switch-ClaudeProvider", "claude-switch"], ["$script:ProviderNameCompleter"]),
        "Name": (sorted(CONTROL), ["$script:ProviderNameCompleter"]),
    }
    completer = next(n for n in walk(module) if n.type == "assignment_expression"
                     and text(n).startswith("$script:ProviderNameCompleter"))
    assert commands(completer, "Get-ClaudeProxyProviderName")


def ancestors(node):
    while node.parent is not None:
        node = node.parent
        yield node


# --- it only calls proxy.py, with commands and options that exist ------------------------------


def proxy_calls(root):
    """(function name, subcommand, options used in that function) for each proxy.py call."""
    calls = []
    for name, node in functions(root).items():
        options = {unquote(s) for s in walk(node) if s.type == "string_literal"
                   and re.fullmatch(r"'--[a-z-]+'", text(s))}
        for command in commands(node, "Invoke-ClaudeProxyCli"):
            first = arguments(command)[0]
            literals = [n for n in walk(first) if n.type == "string_literal"]
            assert literals, f"{name}: the subcommand must be a literal: {text(command)}"
            calls.append((name, unquote(literals[0]), options))
    return calls


def test_every_subcommand_and_option_it_uses_exists(module):
    choices = subparsers()
    calls = proxy_calls(module)
    used = {sub for _, sub, _ in calls}
    assert used == {"start", "env", "status", "top", "release", "providers", "disable", "enable", "cool",
                    "uncool"}
    for function, sub, _ in calls:
        assert sub in choices, f"{function} calls `proxy.py {sub}`, which does not exist"
    by_function = {}
    for function, sub, options in calls:
        by_function.setdefault(function, (set(), options))[0].add(sub)
    for function, (subs, options) in by_function.items():
        known = {o for sub in subs for a in choices[sub]._actions for o in a.option_strings}
        assert options <= known, f"{function} uses {options - known} with {subs}"


def test_proxy_py_is_run_in_one_place_only(module):
    source = MODULE.read_text(encoding="utf-8")
    assert source.count("'proxy.py'") == 1
    assert "Join-Path -Path $PSScriptRoot -ChildPath 'proxy.py'" in source
    runners = [name for name, node in functions(module).items()
               if any(n.type == "command" and text(n).startswith("& $python") for n in walk(node))]
    assert runners == ["Invoke-ClaudeProxyCli"]


def test_python_is_looked_for_in_the_documented_order(module):
    finder = text(functions(module)["Find-ClaudeProxyPython"])
    positions = [finder.index(s) for s in ("$env:CLAUDE_PROXY_PYTHON", "'py'", "'-3'", "'python3'", "'python'")]
    assert positions == sorted(positions)
    assert "Test-ClaudeProxyPython" in finder
    assert "sys.version_info >= (3, 10)" in text(functions(module)["Test-ClaudeProxyPython"])


def test_it_reads_only_fields_that_env_json_has(module, tmp_path):
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({"proxy_port": 8787, "providers": [
        {"name": "p1", "base_url": "http://127.0.0.1:1", "api_key_env": "K"}]}), encoding="utf-8")
    config = load_config(config_path, environ={})
    target = daemon.Target(config_path, True, config, StatePaths(tmp_path))
    out = io.StringIO()
    session.env(target, "json", out=out)
    data = json.loads(out.getvalue())
    use = functions(module)["Use-ClaudeProxy"]
    fields = {text(m.children[-1]) for m in walk(use)
              if m.type == "member_access" and text(m.children[0]) == "$settings"}
    assert fields == {"variables", "summary"}
    assert fields <= set(data)


def test_removing_the_module_restores_the_session(module):
    source = MODULE.read_text(encoding="utf-8")
    handler = source.split("$ExecutionContext.SessionState.Module.OnRemove = {", 1)[1].split("}", 1)[0]
    assert "Restore-ClaudeProxySession" in handler
    restore = text(functions(module)["Restore-ClaudeProxySession"])
    assert "Remove-Item -LiteralPath \"Env:$variable\"" in restore  # unset stays unset
