<#
ClaudeProxy: the claude-proxy session commands for PowerShell 7 (Windows,
macOS, Linux) and Windows PowerShell 5.1.

    Import-Module ~/.claude-proxy/ClaudeProxy.psd1

    claude-fb                    this session goes through the proxy, with failover
    claude-switch -Provider X    this session is pinned to one provider (Tab completes)
    claude-status                this session's mode and the proxy's state
    claude-status -Watch         the same, live, full screen (q quits)
    claude-reset                 restore this session's previous ANTHROPIC_* values,
                                 and stop the proxy unless another session uses it
                                 (-KeepRunning leaves it up)

Everything is decided by proxy.py (start, env, status, top, release, providers);
this module only finds Python, remembers the session's own variables and
puts them back.  It keeps to Windows PowerShell 5.1's language
(tests/ClaudeProxy.Tests.ps1 checks that).
#>

Set-StrictMode -Version Latest

$script:ProxyScript = Join-Path -Path $PSScriptRoot -ChildPath 'proxy.py'
# The one platform decision.  $IsWindows does not exist in Windows PowerShell 5.1
# (and is an error there under StrictMode); this works in both.
$script:OnWindows = [System.Environment]::OSVersion.Platform -eq [System.PlatformID]::Win32NT
$script:Python = $null            # @{ Path; Arguments; Key } once found
$script:SavedEnvironment = $null  # name -> previous value ($null: it was not set)
# What goes wrong for the user is passed up as a one-line Problem and written
# once, with Write-Error, by the command the user ran: never thrown (a caught
# throw would still land in the caller's -ErrorVariable).
$script:ErrorId = 'ClaudeProxy'

function Test-ClaudeProxyPython {
    # True if the command is Python 3.10 or newer.  Judged by what it prints,
    # never by $LASTEXITCODE: a command that fails to start leaves that at the
    # user's previous command's value.  The Windows Store's python.exe stub
    # prints nothing of the kind.
    param([Parameter(Mandatory)][string]$Path, [string[]]$Arguments = @())
    $ErrorActionPreference = 'Continue'  # 5.1: a stderr line is not a terminating error
    $probe = @($Arguments) + @('-c', "import sys; print('python-ok' if sys.version_info >= (3, 10) else 'python-too-old')")
    try {
        $answer = @(& $Path @probe 2>$null)
    }
    catch {
        return $false  # it could not be run at all
    }
    return ($answer -contains 'python-ok')
}

function Find-ClaudeProxyPython {
    # $env:CLAUDE_PROXY_PYTHON, else the py launcher on Windows, else python3,
    # else python: the first that is Python 3.10+ (an old python3 does not hide
    # a new python).  Remembered until CLAUDE_PROXY_PYTHON or PATH change.
    # Returns @{ Path; Arguments }, or @{ Problem } saying what to do.
    $key = "$env:CLAUDE_PROXY_PYTHON|$env:PATH"
    if ($null -ne $script:Python -and $script:Python.Key -eq $key) {
        return $script:Python
    }
    $candidates = @()
    if ($env:CLAUDE_PROXY_PYTHON) {
        $candidates += , @{ Name = $env:CLAUDE_PROXY_PYTHON; Arguments = @() }
    }
    else {
        if ($script:OnWindows) {
            $candidates += , @{ Name = 'py'; Arguments = @('-3') }
        }
        $candidates += , @{ Name = 'python3'; Arguments = @() }
        $candidates += , @{ Name = 'python'; Arguments = @() }
    }
    foreach ($candidate in $candidates) {
        $found = @(Get-Command -Name $candidate.Name -CommandType Application -ErrorAction Ignore)
        foreach ($application in $found) {
            if (Test-ClaudeProxyPython -Path $application.Path -Arguments $candidate.Arguments) {
                $script:Python = @{ Path = $application.Path; Arguments = $candidate.Arguments; Key = $key; Problem = $null }
                return $script:Python
            }
        }
    }
    if ($env:CLAUDE_PROXY_PYTHON) {
        return @{ Problem = "CLAUDE_PROXY_PYTHON [$env:CLAUDE_PROXY_PYTHON] is not a Python 3.10 or newer that runs; point it at one, or remove it to use python3 or python from PATH" }
    }
    $tried = ($candidates | ForEach-Object { (@($_.Name) + $_.Arguments) -join ' ' }) -join ', '
    return @{ Problem = "Python 3.10 or newer was not found (tried $tried); install it (python.org, or your package manager), or set `$env:CLAUDE_PROXY_PYTHON to its path" }
}

function Set-ClaudeProxyConsoleEncoding {
    # Sets [Console]::OutputEncoding (how PowerShell decodes what Python writes)
    # and returns the previous one; $null where there is no console to set.
    param([Parameter(Mandatory)][System.Text.Encoding]$Encoding)
    try {
        $previous = [Console]::OutputEncoding
        [Console]::OutputEncoding = $Encoding
        return $previous
    }
    catch {
        return $null  # no console (a service, the ISE): nothing to decode with
    }
}

function Get-ClaudeProxyCliProblem {
    # Why proxy.py cannot be run at all, in one line; $null when it can.
    $python = Find-ClaudeProxyPython
    if ($null -ne $python.Problem) {
        return $python.Problem
    }
    if (-not (Test-Path -LiteralPath $script:ProxyScript)) {
        return "proxy.py is not beside the module [$script:ProxyScript]; import ClaudeProxy from the claude-proxy folder"
    }
    return $null
}

function Invoke-ClaudeProxyCli {
    # Run proxy.py with a subcommand and its options.  Returns ExitCode, Output
    # (stdout lines), Errors (stderr lines) and Problem: $null, or why it could
    # not be run at all (then ExitCode is $null).  Python writes UTF-8 and PowerShell
    # reads UTF-8 for the call, whatever the console's code page; both are put
    # back afterwards.
    # -Attached: the output is not collected; it goes where the caller's output
    # goes, which is the console itself when nothing captures it (a full-screen
    # command needs that).  Then nothing is returned: $LASTEXITCODE is the exit
    # code, and the caller asks Get-ClaudeProxyCliProblem first.
    param(
        [Parameter(Mandatory, Position = 0)]
        [string]$Command,

        [Parameter(Position = 1)]
        [string[]]$Options = @(),

        [switch]$Attached
    )
    $problem = Get-ClaudeProxyCliProblem
    if ($null -ne $problem) {
        if (-not $Attached) {
            return [pscustomobject]@{ ExitCode = $null; Output = @(); Errors = @(); Problem = $problem }
        }
        return
    }
    $python = Find-ClaudeProxyPython
    $arguments = @($python.Arguments) + @($script:ProxyScript, $Command) + @($Options)
    # Windows PowerShell 5.1 turns redirected stderr lines into error records,
    # and with $ErrorActionPreference = 'Stop' into a terminating error; 7.4
    # can do the same for a non-zero exit.  Both are answers to read here.
    $ErrorActionPreference = 'Continue'
    $PSNativeCommandUseErrorActionPreference = $false
    $ioEncoding = $env:PYTHONIOENCODING
    $consoleEncoding = Set-ClaudeProxyConsoleEncoding -Encoding (New-Object -TypeName System.Text.UTF8Encoding -ArgumentList $false)
    try {
        $env:PYTHONIOENCODING = 'utf-8'
        if ($Attached) {
            & $python.Path @arguments
            return
        }
        $lines = @(& $python.Path @arguments 2>&1)
        $code = $LASTEXITCODE
    }
    finally {
        if ($null -eq $ioEncoding) {
            Remove-Item -LiteralPath 'Env:PYTHONIOENCODING' -ErrorAction Ignore
        }
        else {
            $env:PYTHONIOENCODING = $ioEncoding
        }
        if ($null -ne $consoleEncoding) {
            $null = Set-ClaudeProxyConsoleEncoding -Encoding $consoleEncoding
        }
    }
    [pscustomobject]@{
        ExitCode = $code
        Output   = @($lines | Where-Object { $_ -isnot [System.Management.Automation.ErrorRecord] } | ForEach-Object { "$_" })
        Errors   = @($lines | Where-Object { $_ -is [System.Management.Automation.ErrorRecord] } | ForEach-Object { "$_" })
        Problem  = $null
    }
}

function Get-ClaudeProxyReason {
    # What went wrong, as one line: the Problem, or what proxy.py said without
    # its "claude-proxy: " prefixes.
    param([Parameter(Mandatory)]$Result)
    if ($null -ne $Result.Problem) {
        return $Result.Problem
    }
    $said = @($Result.Errors) + @($Result.Output) | Where-Object { $_ -and $_.Trim() } |
        ForEach-Object { ($_.Trim() -replace '^claude-proxy: ', '') }
    if (-not $said) {
        return "proxy.py exited with code $($Result.ExitCode)"
    }
    return (@($said) -join '; ')
}

function Get-ClaudeProxyProviderName {
    # The configured provider names (for tab completion); nothing on any error.
    $result = Invoke-ClaudeProxyCli 'providers'
    if ($result.ExitCode -eq 0) {
        $result.Output | Where-Object { $_ }
    }
}

function Save-ClaudeProxySession {
    # Remember the session's values once; a second claude-fb or claude-switch
    # keeps what the session had before the first.
    param([string[]]$Name)
    if ($null -ne $script:SavedEnvironment) {
        return
    }
    $saved = @{}
    foreach ($variable in $Name) {
        $item = Get-Item -LiteralPath "Env:$variable" -ErrorAction Ignore
        if ($null -ne $item) {
            $saved[$variable] = $item.Value
        }
        else {
            $saved[$variable] = $null
        }
    }
    $script:SavedEnvironment = $saved
}

function Restore-ClaudeProxySession {
    # Put back exactly what was saved: a variable that was not set is removed again.
    # Returns $true if there was something to restore.
    if ($null -eq $script:SavedEnvironment) {
        return $false
    }
    foreach ($variable in $script:SavedEnvironment.Keys) {
        $value = $script:SavedEnvironment[$variable]
        if ($null -eq $value) {
            Remove-Item -LiteralPath "Env:$variable" -ErrorAction Ignore
        }
        else {
            Set-Item -LiteralPath "Env:$variable" -Value $value
        }
    }
    $script:SavedEnvironment = $null
    return $true
}

function Use-ClaudeProxy {
    # Start the proxy if needed, then point this session at it (pinned if -Provider).
    # Returns $null, or the problem (one line) that stopped it before anything changed.
    param([string]$Provider, [string]$Strategy)
    if ($Provider) {
        # An unknown provider name is an error before anything is started.
        $known = Invoke-ClaudeProxyCli 'providers' @('--', $Provider)
        if ($known.ExitCode -ne 0) {
            return (Get-ClaudeProxyReason $known)
        }
    }
    $started = Invoke-ClaudeProxyCli 'start' @('--quiet')
    if ($started.ExitCode -ne 0) {
        if ($null -ne $started.Problem) {
            return $started.Problem
        }
        return "could not start claude-proxy: $(Get-ClaudeProxyReason $started)"
    }
    # The session registers by its process id, so that claude-reset in another
    # session does not stop the proxy under this one.
    $options = @('--shell', 'json', '--session', "$PID")
    if ($Provider) {
        $options += @('--provider', $Provider)
    }
    elseif ($Strategy) {
        $options += @('--strategy', $Strategy)
    }
    $result = Invoke-ClaudeProxyCli 'env' $options
    if ($result.ExitCode -ne 0) {
        return "could not point this session at claude-proxy: $(Get-ClaudeProxyReason $result)"
    }
    $settings = ($result.Output -join "`n") | ConvertFrom-Json
    $names = @($settings.variables.PSObject.Properties | ForEach-Object { $_.Name })
    Save-ClaudeProxySession -Name $names
    foreach ($property in $settings.variables.PSObject.Properties) {
        if ($null -eq $property.Value) {
            Remove-Item -LiteralPath "Env:$($property.Name)" -ErrorAction Ignore
        }
        else {
            Set-Item -LiteralPath "Env:$($property.Name)" -Value $property.Value
        }
    }
    foreach ($line in $result.Errors) {
        Write-Warning ($line -replace '^claude-proxy: (warning: )?', '')
    }
    Write-Host $settings.summary
    return $null
}

function Enable-ClaudeProxy {
    <#
    .SYNOPSIS
    Sends this session's Claude Code through claude-proxy, with failover (alias: claude-fb).

    .DESCRIPTION
    Starts the proxy in the background if it is not running (proxy.py start),
    remembers this session's ANTHROPIC_BASE_URL, ANTHROPIC_AUTH_TOKEN and
    ANTHROPIC_API_KEY, then sets them from proxy.py env: the proxy's address
    and its client token, with ANTHROPIC_API_KEY removed.  Prints one line
    with the providers' fallback order.  Requests then go to the configured
    providers in order, moving on when one is rate-limited, overloaded or
    down.  claude-reset puts the previous values back.

    Python 3.10 or newer runs the proxy: $env:CLAUDE_PROXY_PYTHON if set,
    else py -3 (Windows), python3 or python, the first that is 3.10+.  The
    config is $env:CLAUDE_PROXY_CONFIG, else config.json beside the module.

    .PARAMETER Strategy
    How this session's requests choose among the ready providers: fallback
    (config order), round_robin, weighted, random or fastest.  Without it,
    the config's "strategy" applies.  Other sessions are not affected.

    .EXAMPLE
    claude-fb

    .EXAMPLE
    claude-fb -Strategy round_robin

    .EXAMPLE
    Enable-ClaudeProxy; claude
    #>
    [CmdletBinding()]
    param(
        [Parameter(Position = 0)]
        [ValidateSet('fallback', 'round_robin', 'weighted', 'random', 'fastest')]
        [string]$Strategy
    )
    $problem = Use-ClaudeProxy -Strategy $Strategy
    if ($null -ne $problem) {
        Write-Error -Message $problem -ErrorId $script:ErrorId -Category NotSpecified
    }
}

function Switch-ClaudeProvider {
    <#
    .SYNOPSIS
    Pins this session to one provider of claude-proxy (alias: claude-switch).

    .DESCRIPTION
    Like claude-fb, but every request of this session goes to the named
    provider only, with no failover.  Other sessions are not affected.  Use
    claude-fb to go back to failover, claude-reset to stop using the proxy.
    An unknown name is an error that lists the configured names; nothing is
    started and the session's variables stay as they were.

    .PARAMETER Provider
    The provider's name as in config.json (case does not matter).  Tab
    completes the configured names.

    .EXAMPLE
    claude-switch -Provider moonshot

    .EXAMPLE
    claude-switch minimax
    #>
    [CmdletBinding()]
    param(
        # Tab completion: Register-ArgumentCompleter below.
        [Parameter(Mandatory, Position = 0)]
        [string]$Provider
    )
    $problem = Use-ClaudeProxy -Provider $Provider
    if ($null -ne $problem) {
        Write-Error -Message $problem -ErrorId $script:ErrorId -Category NotSpecified
    }
}

function Get-ClaudeProxyStatus {
    <#
    .SYNOPSIS
    Shows this session's mode and the state of claude-proxy (alias: claude-status).

    .DESCRIPTION
    Prints whether the proxy is running (pid, uptime, address, log file), how
    this session uses it (normal, fallback, or pinned to a provider), and each
    provider in order: ready, cooling for how long, no key or disabled, with
    its last error, request count and tokens.  When the proxy is not running
    it says so and how to start it.  $LASTEXITCODE is 0 when the proxy is
    running, 3 when it is not, and 1 when its process is alive but does not
    answer (see its log, then proxy.py stop).

    .PARAMETER Json
    Print the status as JSON, for scripts.

    .PARAMETER Watch
    Watch the proxy live, full screen (proxy.py top): a row per provider
    with its state, the requests in flight and the last ones, redrawn every
    second.  Keys: q quits, the up and down arrows select a provider, d
    disables or enables it, c clears its cooldown.  With the output
    captured or redirected, it prints one snapshot as plain text instead.

    .EXAMPLE
    claude-status

    .EXAMPLE
    claude-status -Watch

    .EXAMPLE
    (claude-status -Json | ConvertFrom-Json).providers
    #>
    [CmdletBinding(DefaultParameterSetName = 'Report')]
    param(
        [Parameter(ParameterSetName = 'Report')]
        [switch]$Json,

        [Parameter(ParameterSetName = 'Watch')]
        [switch]$Watch
    )
    if ($Watch) {
        $problem = Get-ClaudeProxyCliProblem
        if ($null -ne $problem) {
            Write-Error -Message $problem -ErrorId $script:ErrorId -Category NotSpecified
            return
        }
        # Not collected, so that the view has the console (and this session's
        # variables, for the mode it shows).
        Invoke-ClaudeProxyCli 'top' -Attached
        return
    }
    $options = @()
    if ($Json) {
        $options += '--json'
    }
    $result = Invoke-ClaudeProxyCli 'status' $options
    if ($null -ne $result.Problem) {
        Write-Error -Message $result.Problem -ErrorId $script:ErrorId -Category NotSpecified
        return
    }
    $result.Output
    if ($result.ExitCode -eq 3 -and -not $Json) {
        '  start it with claude-fb (failover) or claude-switch -Provider NAME (one provider)'
    }
    if ($result.ExitCode -notin 0, 1, 3) {
        Write-Error -Message (Get-ClaudeProxyReason $result) -ErrorId $script:ErrorId -Category NotSpecified
    }
    else {
        foreach ($line in $result.Errors) {
            Write-Warning ($line -replace '^claude-proxy: (warning: )?', '')
        }
    }
}

function Reset-ClaudeProxy {
    <#
    .SYNOPSIS
    Puts this session back as it was before claude-fb, and stops the proxy if no other session uses it (alias: claude-reset).

    .DESCRIPTION
    Restores ANTHROPIC_BASE_URL, ANTHROPIC_AUTH_TOKEN and ANTHROPIC_API_KEY to
    exactly what this session had before the first claude-fb or claude-switch:
    a variable that was not set is removed again.  Then the session stops
    using the proxy (proxy.py release), which stops the proxy, letting
    requests in flight finish for a few seconds, unless another live shell
    session still uses it.  In a session that never used the proxy,
    claude-reset changes nothing and stops nothing (proxy.py stop stops it
    regardless of sessions).

    .PARAMETER KeepRunning
    Leave the proxy running even if no other session uses it.

    .EXAMPLE
    claude-reset

    .EXAMPLE
    claude-reset -KeepRunning
    #>
    [CmdletBinding()]
    param(
        [switch]$KeepRunning
    )
    if (-not (Restore-ClaudeProxySession)) {
        Write-Host 'claude-reset: this session was not using the proxy; nothing to restore, nothing stopped'
        return
    }
    Write-Host "claude-reset: this session's ANTHROPIC_* variables are back as they were"
    $options = @('--session', "$PID")
    if ($KeepRunning) {
        $options += '--keep-running'
    }
    $result = Invoke-ClaudeProxyCli 'release' $options
    if ($result.ExitCode -ne 0) {
        Write-Error -Message "could not stop claude-proxy: $(Get-ClaudeProxyReason $result)" -ErrorId $script:ErrorId -Category NotSpecified
        return
    }
    foreach ($line in @($result.Output) + @($result.Errors)) {
        Write-Host $line
    }
}

Set-Alias -Name claude-fb -Value Enable-ClaudeProxy
Set-Alias -Name claude-switch -Value Switch-ClaudeProvider
Set-Alias -Name claude-status -Value Get-ClaudeProxyStatus
Set-Alias -Name claude-reset -Value Reset-ClaudeProxy

function Write-ClaudeProxyControlResult {
    # Show what a runtime-control command (disable, enable, cool, uncool) did, or its one-line error.
    param($Result)
    if ($null -ne $Result.Problem) {
        Write-Error -Message $Result.Problem -ErrorId $script:ErrorId -Category NotSpecified
    }
    elseif ($Result.ExitCode -ne 0) {
        Write-Error -Message (Get-ClaudeProxyReason $Result) -ErrorId $script:ErrorId -Category NotSpecified
    }
    else {
        $Result.Output
    }
}

function Get-ClaudeProxyControlOption {
    # proxy.py's options for a provider name and an optional --for.
    param([string]$Name, [string]$For)
    $options = @()
    if ($For) {
        $options += @('--for', $For)
    }
    if ($Name) {
        $options += @('--', $Name)
    }
    , $options
}

function Disable-ClaudeProxyProvider {
    <#
    .SYNOPSIS
    Takes a provider out of use in the running claude-proxy, at once.

    .DESCRIPTION
    Requests go to the other providers until Enable-ClaudeProxyProvider, or
    for the time -For gives.  Requests in flight finish as they started.
    Nothing is written to config.json, and a restart forgets it.

    .PARAMETER Name
    The provider's name as in config.json.  Tab completes the configured names.

    .PARAMETER For
    How long: 90s, 10m, 1h, 1h30m (a bare number is minutes).  Without it,
    until Enable-ClaudeProxyProvider.

    .EXAMPLE
    Disable-ClaudeProxyProvider -Name minimax -For 30m
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory, Position = 0)]
        [string]$Name,
        [string]$For
    )
    Write-ClaudeProxyControlResult (Invoke-ClaudeProxyCli 'disable' (Get-ClaudeProxyControlOption -Name $Name -For $For))
}

function Enable-ClaudeProxyProvider {
    <#
    .SYNOPSIS
    Puts a provider that Disable-ClaudeProxyProvider took out back in use.

    .DESCRIPTION
    Takes effect at once for new requests of every session.

    .PARAMETER Name
    The provider's name as in config.json.  Tab completes the configured names.

    .EXAMPLE
    Enable-ClaudeProxyProvider -Name minimax
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory, Position = 0)]
        [string]$Name
    )
    Write-ClaudeProxyControlResult (Invoke-ClaudeProxyCli 'enable' (Get-ClaudeProxyControlOption -Name $Name))
}

function Suspend-ClaudeProxyProvider {
    <#
    .SYNOPSIS
    Puts a provider in cooldown, as if it had failed.

    .DESCRIPTION
    A cooling provider is tried only when no other is ready.  The cooldown
    lasts -For, else the config's cooldown_minutes; Resume-ClaudeProxyProvider
    ends it early.  A restart forgets it.

    .PARAMETER Name
    The provider's name as in config.json.  Tab completes the configured names.

    .PARAMETER For
    How long: 90s, 10m, 1h, 1h30m (a bare number is minutes).

    .EXAMPLE
    Suspend-ClaudeProxyProvider -Name minimax -For 10m
    #>
    [CmdletBinding()]
    param(
        [Parameter(Mandatory, Position = 0)]
        [string]$Name,
        [string]$For
    )
    Write-ClaudeProxyControlResult (Invoke-ClaudeProxyCli 'cool' (Get-ClaudeProxyControlOption -Name $Name -For $For))
}

function Resume-ClaudeProxyProvider {
    <#
    .SYNOPSIS
    Clears the cooldowns of one provider, or of all.

    .DESCRIPTION
    Its own cooldown, and those of its models and keys: it is tried again at
    once, in its turn.

    .PARAMETER Name
    The provider's name; without it, every provider.  Tab completes the
    configured names.

    .EXAMPLE
    Resume-ClaudeProxyProvider

    .EXAMPLE
    Resume-ClaudeProxyProvider -Name minimax
    #>
    [CmdletBinding()]
    param(
        [Parameter(Position = 0)]
        [string]$Name
    )
    Write-ClaudeProxyControlResult (Invoke-ClaudeProxyCli 'uncool' (Get-ClaudeProxyControlOption -Name $Name))
}

# Tab completion of -Provider.  Registered here, at module scope, so the script
# block runs in the module's scope and can call the private
# Get-ClaudeProxyProviderName (an [ArgumentCompleter()] script block on the
# parameter runs outside it, where that function does not exist).
$script:ProviderNameCompleter = {
    param($commandName, $parameterName, $wordToComplete, $commandAst, $fakeBoundParameters)
    Get-ClaudeProxyProviderName | Where-Object { $_ -like "$wordToComplete*" } | ForEach-Object {
        New-Object -TypeName System.Management.Automation.CompletionResult -ArgumentList $_, $_, 'ParameterValue', $_
    }
}
Register-ArgumentCompleter -CommandName 'Switch-ClaudeProvider', 'claude-switch' -ParameterName 'Provider' -ScriptBlock $script:ProviderNameCompleter
Register-ArgumentCompleter -CommandName 'Disable-ClaudeProxyProvider', 'Enable-ClaudeProxyProvider', 'Suspend-ClaudeProxyProvider', 'Resume-ClaudeProxyProvider' -ParameterName 'Name' -ScriptBlock $script:ProviderNameCompleter

# Removing the module gives the session its variables back; the proxy keeps
# running, without this session among its users.
$ExecutionContext.SessionState.Module.OnRemove = {
    if (Restore-ClaudeProxySession) {
        # Without Python this says so in its result; the proxy forgets a
        # session whose shell has ended anyway.
        $null = Invoke-ClaudeProxyCli 'release' @('--session', "$PID", '--keep-running')
    }
}

Export-ModuleMember -Function Enable-ClaudeProxy, Switch-ClaudeProvider, Get-ClaudeProxyStatus, Reset-ClaudeProxy, Disable-ClaudeProxyProvider, Enable-ClaudeProxyProvider, Suspend-ClaudeProxyProvider, Resume-ClaudeProxyProvider -Alias claude-fb, claude-switch, claude-status, claude-reset
