<#
ClaudeProxy: the claude-proxy session commands for PowerShell 7 (Windows,
macOS, Linux) and Windows PowerShell 5.1.

    Import-Module ~/.claude-proxy/ClaudeProxy.psd1

    claude-fb                    this session goes through the proxy, with failover
    claude-switch -Provider X    this session is pinned to one provider (Tab completes)
    claude-status                this session's mode and the proxy's state
    claude-reset                 restore this session's previous ANTHROPIC_* values,
                                 and stop the proxy (-KeepRunning leaves it up)

Everything is decided by proxy.py (start, env, status, stop, providers);
this module only finds Python, remembers the session's own variables and
puts them back.
#>

Set-StrictMode -Version Latest

$script:ProxyScript = Join-Path -Path $PSScriptRoot -ChildPath 'proxy.py'
$script:Python = $null          # @{ Path = ...; Arguments = @(...) } once found
$script:SavedEnvironment = $null  # name -> previous value ($null: it was not set)

function Find-ClaudeProxyPython {
    # $env:CLAUDE_PROXY_PYTHON, else the py launcher on Windows, else python3, else python.
    # A candidate counts only if it really is Python 3.10+ (the Windows Store's
    # python.exe stub is not).
    [CmdletBinding()]
    param()
    if ($null -ne $script:Python) {
        return $script:Python
    }
    $candidates = @()
    if ($env:CLAUDE_PROXY_PYTHON) {
        $candidates += , @{ Path = $env:CLAUDE_PROXY_PYTHON; Arguments = @() }
    }
    else {
        $onWindows = [System.Environment]::OSVersion.Platform -eq [System.PlatformID]::Win32NT
        if ($onWindows) {
            $candidates += , @{ Path = 'py'; Arguments = @('-3') }
        }
        $candidates += , @{ Path = 'python3'; Arguments = @() }
        $candidates += , @{ Path = 'python'; Arguments = @() }
    }
    foreach ($candidate in $candidates) {
        if (-not (Get-Command -Name $candidate.Path -CommandType Application -ErrorAction SilentlyContinue)) {
            continue
        }
        $probe = @($candidate.Arguments) + @('-c', 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)')
        # Windows PowerShell 5.1 turns a redirected stderr line into a terminating
        # error under $ErrorActionPreference = 'Stop'; the probe's stderr is not ours to fail on.
        $preference = $ErrorActionPreference
        $ErrorActionPreference = 'Continue'
        & $candidate.Path @probe 2>$null | Out-Null
        $ErrorActionPreference = $preference
        if ($LASTEXITCODE -eq 0) {
            $script:Python = $candidate
            return $candidate
        }
    }
    if ($env:CLAUDE_PROXY_PYTHON) {
        Write-Error "Could not run Python 3.10+ as [$env:CLAUDE_PROXY_PYTHON] (CLAUDE_PROXY_PYTHON); fix or remove that variable."
    }
    else {
        Write-Error 'Could not find Python 3.10 or newer (tried py -3, python3, python); install it, or set $env:CLAUDE_PROXY_PYTHON to its path.'
    }
    return $null
}

function Invoke-ClaudeProxyCli {
    # Run proxy.py with a subcommand and its options.  Returns an object with
    # ExitCode, Output (stdout lines) and Errors (stderr lines); with
    # -PassThru the output goes straight to the caller instead.
    [CmdletBinding()]
    param(
        [Parameter(Mandatory, Position = 0)]
        [string]$Command,

        [Parameter(Position = 1)]
        [string[]]$Options = @(),

        [switch]$PassThru
    )
    $python = Find-ClaudeProxyPython
    $failed = $null
    if ($null -eq $python) {
        $failed = [pscustomobject]@{ ExitCode = 127; Output = @(); Errors = @() }  # already reported
    }
    elseif (-not (Test-Path -LiteralPath $script:ProxyScript)) {
        Write-Error "Could not find proxy.py beside the module [$script:ProxyScript]; import ClaudeProxy from the repository folder."
        $failed = [pscustomobject]@{ ExitCode = 1; Output = @(); Errors = @() }
    }
    if ($null -ne $failed) {
        if (-not $PassThru) {
            return $failed
        }
        return
    }
    $arguments = @($python.Arguments) + @($script:ProxyScript, $Command) + @($Options)
    if ($PassThru) {
        & $python.Path @arguments
        return
    }
    # Windows PowerShell 5.1 turns redirected stderr lines into error records,
    # and with $ErrorActionPreference = 'Stop' into a terminating error.
    $ErrorActionPreference = 'Continue'
    $lines = @(& $python.Path @arguments 2>&1)
    $code = $LASTEXITCODE
    [pscustomobject]@{
        ExitCode = $code
        Output   = @($lines | Where-Object { $_ -isnot [System.Management.Automation.ErrorRecord] } | ForEach-Object { "$_" })
        Errors   = @($lines | Where-Object { $_ -is [System.Management.Automation.ErrorRecord] } | ForEach-Object { "$_" })
    }
}

function Get-ClaudeProxyProviderName {
    # The configured provider names (for tab completion); nothing on any error.
    $result = Invoke-ClaudeProxyCli 'providers' -ErrorAction SilentlyContinue
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
        $item = Get-Item -LiteralPath "Env:$variable" -ErrorAction SilentlyContinue
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
            Remove-Item -LiteralPath "Env:$variable" -ErrorAction SilentlyContinue
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
    param([string]$Provider)
    if ($Provider) {
        # An unknown provider name is an error before anything is started.
        $known = Invoke-ClaudeProxyCli 'providers' @('--', $Provider)
        if ($known.ExitCode -eq 127) {
            return  # no Python: already reported
        }
        if ($known.ExitCode -ne 0) {
            Write-Error (($known.Errors + $known.Output) -join ' ')
            return
        }
    }
    $started = Invoke-ClaudeProxyCli 'start' @('--quiet')
    if ($started.ExitCode -eq 127) {
        return  # no Python: already reported
    }
    if ($started.ExitCode -ne 0) {
        $reason = ($started.Errors + $started.Output) -join ' '
        Write-Error "Could not start claude-proxy [$reason]"
        return
    }
    $options = @('--shell', 'json')
    if ($Provider) {
        $options += @('--provider', $Provider)
    }
    $result = Invoke-ClaudeProxyCli 'env' $options
    if ($result.ExitCode -ne 0) {
        $reason = ($result.Errors + $result.Output) -join ' '
        Write-Error "Could not point this session at claude-proxy [$reason]"
        return
    }
    $settings = ($result.Output -join "`n") | ConvertFrom-Json
    $names = @($settings.variables.PSObject.Properties | ForEach-Object { $_.Name })
    Save-ClaudeProxySession -Name $names
    foreach ($property in $settings.variables.PSObject.Properties) {
        if ($null -eq $property.Value) {
            Remove-Item -LiteralPath "Env:$($property.Name)" -ErrorAction SilentlyContinue
        }
        else {
            Set-Item -LiteralPath "Env:$($property.Name)" -Value $property.Value
        }
    }
    Write-Host $settings.summary
}

function Enable-ClaudeProxy {
    <#
    .SYNOPSIS
    Sends this session's Claude Code through claude-proxy, with failover (alias: claude-fb).

    .DESCRIPTION
    Starts the proxy in the background if it is not running (proxy.py start),
    remembers this session's ANTHROPIC_BASE_URL, ANTHROPIC_AUTH_TOKEN and
    ANTHROPIC_API_KEY, then sets them from proxy.py env: the proxy's address
    and its client token, with ANTHROPIC_API_KEY removed.  Requests then go to
    the configured providers in order, moving on when one is rate-limited,
    overloaded or down.  claude-reset puts the previous values back.

    .EXAMPLE
    claude-fb

    .EXAMPLE
    Enable-ClaudeProxy; claude
    #>
    [CmdletBinding()]
    param()
    Use-ClaudeProxy
}

function Switch-ClaudeProvider {
    <#
    .SYNOPSIS
    Pins this session to one provider of claude-proxy (alias: claude-switch).

    .DESCRIPTION
    Like claude-fb, but every request of this session goes to the named
    provider only, with no failover.  Other sessions are not affected.  Use
    claude-fb to go back to failover, claude-reset to stop using the proxy.

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
        [Parameter(Mandatory, Position = 0)]
        [ArgumentCompleter({
                param($commandName, $parameterName, $wordToComplete, $commandAst, $fakeBoundParameters)
                Get-ClaudeProxyProviderName | Where-Object { $_ -like "$wordToComplete*" }
            })]
        [string]$Provider
    )
    Use-ClaudeProxy -Provider $Provider
}

function Get-ClaudeProxyStatus {
    <#
    .SYNOPSIS
    Shows this session's mode and the state of claude-proxy (alias: claude-status).

    .DESCRIPTION
    Prints whether the proxy is running (pid, uptime, address, log file), how
    this session uses it (normal, fallback, or pinned to a provider), and each
    provider in order: ready, cooling for how long, no key or disabled, with
    its last error, request count and tokens.  $LASTEXITCODE is 0 when the
    proxy is running, 3 when it is not, and 1 when its process is alive but
    does not answer (see its log, then claude-reset or proxy.py stop).

    .PARAMETER Json
    Print the status as JSON, for scripts.

    .EXAMPLE
    claude-status

    .EXAMPLE
    (claude-status -Json | ConvertFrom-Json).providers
    #>
    [CmdletBinding()]
    param(
        [switch]$Json
    )
    $options = @()
    if ($Json) {
        $options += '--json'
    }
    Invoke-ClaudeProxyCli 'status' $options -PassThru
}

function Reset-ClaudeProxy {
    <#
    .SYNOPSIS
    Puts this session back as it was before claude-fb, and stops the proxy (alias: claude-reset).

    .DESCRIPTION
    Restores ANTHROPIC_BASE_URL, ANTHROPIC_AUTH_TOKEN and ANTHROPIC_API_KEY to
    exactly what this session had before the first claude-fb or claude-switch:
    a variable that was not set is removed again.  Then stops the proxy
    (proxy.py stop), letting requests in flight finish for a few seconds.

    .PARAMETER KeepRunning
    Leave the proxy running, for other sessions that use it.

    .EXAMPLE
    claude-reset

    .EXAMPLE
    claude-reset -KeepRunning
    #>
    [CmdletBinding()]
    param(
        [switch]$KeepRunning
    )
    if (Restore-ClaudeProxySession) {
        Write-Host "claude-reset: this session's ANTHROPIC_* variables are back as they were"
    }
    else {
        Write-Host 'claude-reset: this session was not using the proxy; nothing to restore'
    }
    if (-not $KeepRunning) {
        Invoke-ClaudeProxyCli 'stop' -PassThru
    }
}

Set-Alias -Name claude-fb -Value Enable-ClaudeProxy
Set-Alias -Name claude-switch -Value Switch-ClaudeProvider
Set-Alias -Name claude-status -Value Get-ClaudeProxyStatus
Set-Alias -Name claude-reset -Value Reset-ClaudeProxy

# Removing the module gives the session its variables back (the proxy keeps running).
$ExecutionContext.SessionState.Module.OnRemove = {
    $null = Restore-ClaudeProxySession
}

Export-ModuleMember -Function Enable-ClaudeProxy, Switch-ClaudeProvider, Get-ClaudeProxyStatus, Reset-ClaudeProxy -Alias claude-fb, claude-switch, claude-status, claude-reset
