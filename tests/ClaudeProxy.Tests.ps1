<#
ClaudeProxy.psm1 run for real, with Pester 5: Import-Module of the manifest
by path, the daemon started by the module (proxy.py start), real environment
variables, and two fake providers, alpha and beta, steered over HTTP
(tests/fakes.py ControlledFakeProvider: POST /_fake/mode, GET /_fake/count).

tests/test_powershell_pester.py runs this file (it is how the README's
pytest command runs it) and starts the fakes; run by hand, it starts them
itself:

    Invoke-Pester -Path tests/ClaudeProxy.Tests.ps1 -Output Detailed

Environment, all optional: CLAUDE_PROXY_TEST_PYTHON (the Python for the
fakes, the daemon and the checks; else python3, python or py -3 on PATH),
CLAUDE_PROXY_TEST_ALPHA_URL and CLAUDE_PROXY_TEST_BETA_URL (running fakes),
CLAUDE_PROXY_TEST_PWSH (the PowerShell for child sessions; else this one),
CLAUDE_CODE_BIN (Claude Code, for the `claude -p` test).

Each Context gets its own config.json in its own temporary folder (its own
state directory and a free port), so nothing touches the repository or
another Context's daemon; each It gets a freshly imported module and its
environment back afterwards.  Kept to Windows PowerShell 5.1's language, so
it runs there too.
#>

BeforeAll {
    $script:ModulePath = [System.IO.Path]::GetFullPath((Join-Path -Path $PSScriptRoot -ChildPath '../ClaudeProxy.psd1'))
    $script:ProxyScript = [System.IO.Path]::GetFullPath((Join-Path -Path $PSScriptRoot -ChildPath '../proxy.py'))
    $script:OnWindows = [System.Environment]::OSVersion.Platform -eq [System.PlatformID]::Win32NT
    # This PowerShell, for child sessions: pwsh, or powershell.exe in 5.1.
    if ($env:CLAUDE_PROXY_TEST_PWSH) {
        $script:Shell = $env:CLAUDE_PROXY_TEST_PWSH
    }
    elseif ($PSVersionTable.PSEdition -eq 'Desktop') {
        $script:Shell = Join-Path -Path $PSHOME -ChildPath 'powershell.exe'
    }
    else {
        $script:Shell = (Get-Command -Name pwsh -CommandType Application | Select-Object -First 1).Path
    }
    $script:TestRoot = Join-Path -Path ([System.IO.Path]::GetTempPath()) -ChildPath ('claude-proxy-pester-' + [guid]::NewGuid().ToString('N').Substring(0, 8))
    $null = New-Item -ItemType Directory -Path $script:TestRoot
    $script:Configs = New-Object System.Collections.Generic.List[string]
    # What each It may change, and gets back afterwards.
    $script:EnvironmentNames = @(
        'ANTHROPIC_BASE_URL', 'ANTHROPIC_AUTH_TOKEN', 'ANTHROPIC_API_KEY', 'CLAUDE_PROXY_CONFIG',
        'CLAUDE_PROXY_PYTHON', 'PATH', 'PYTHONIOENCODING', 'HOME', 'USERPROFILE', 'XDG_CONFIG_HOME',
        'CLAUDE_CONFIG_DIR', 'CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC', 'DISABLE_AUTOUPDATER',
        'CLAUDE_CODE_MAX_RETRIES', 'API_TIMEOUT_MS')

    function Find-TestPython {
        # The full path of a Python 3.10+ for the fakes, the daemon and the checks.
        if ($env:CLAUDE_PROXY_TEST_PYTHON) {
            return $env:CLAUDE_PROXY_TEST_PYTHON
        }
        foreach ($candidate in @(@('python3'), @('python'), @('py', '-3'))) {
            $command = Get-Command -Name $candidate[0] -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1
            if ($null -eq $command) {
                continue
            }
            $arguments = @($candidate | Select-Object -Skip 1) + @('-c', 'import sys; sys.version_info >= (3, 10) and print(sys.executable)')
            $found = & $command.Path @arguments 2>$null
            if ($found) {
                return "$found".Trim()
            }
        }
        throw 'no Python 3.10+ for the tests: set CLAUDE_PROXY_TEST_PYTHON'
    }
    $script:Python = Find-TestPython

    # The fakes: the driver's, or our own.
    $script:FakeProcess = $null
    if ($env:CLAUDE_PROXY_TEST_ALPHA_URL -and $env:CLAUDE_PROXY_TEST_BETA_URL) {
        $script:Fakes = @{ alpha = $env:CLAUDE_PROXY_TEST_ALPHA_URL; beta = $env:CLAUDE_PROXY_TEST_BETA_URL }
    }
    else {
        $start = New-Object System.Diagnostics.ProcessStartInfo
        $start.FileName = $script:Python
        $start.Arguments = '"{0}" alpha beta' -f (Join-Path -Path $PSScriptRoot -ChildPath 'fakes.py')
        $start.UseShellExecute = $false
        $start.RedirectStandardInput = $true
        $start.RedirectStandardOutput = $true
        $script:FakeProcess = [System.Diagnostics.Process]::Start($start)
        $urls = $script:FakeProcess.StandardOutput.ReadLine() | ConvertFrom-Json
        $script:Fakes = @{ alpha = $urls.alpha; beta = $urls.beta }
    }
    if (-not $env:KEY_ALPHA) { $env:KEY_ALPHA = 'fake-key-alpha' }
    if (-not $env:KEY_BETA) { $env:KEY_BETA = 'fake-key-beta' }

    function Get-FreePort {
        $listener = New-Object System.Net.Sockets.TcpListener ([System.Net.IPAddress]::Loopback), 0
        $listener.Start()
        try { return $listener.LocalEndpoint.Port } finally { $listener.Stop() }
    }

    function New-TestConfig {
        # A config.json in a folder of its own (so its own state directory);
        # -Content replaces the whole file.  Every daemon it starts is stopped in AfterAll.
        param([string]$Folder = 'proxy', [string]$Content)
        $dir = Join-Path -Path $script:TestRoot -ChildPath ($Folder + '-' + [guid]::NewGuid().ToString('N').Substring(0, 6))
        $null = New-Item -ItemType Directory -Path $dir
        $path = Join-Path -Path $dir -ChildPath 'config.json'
        if (-not $Content) {
            $Content = @{
                proxy_port = Get-FreePort
                providers  = @(
                    @{ name = 'alpha'; base_url = $script:Fakes.alpha; api_key_env = 'KEY_ALPHA' },
                    @{ name = 'beta'; base_url = $script:Fakes.beta; api_key_env = 'KEY_BETA' })
            } | ConvertTo-Json -Depth 5
        }
        [System.IO.File]::WriteAllText($path, $Content, (New-Object System.Text.UTF8Encoding $false))
        $script:Configs.Add($path)
        return $path
    }

    function Wait-StatusText {
        # claude-status's text once it matches -Pattern (the daemon reads a saved config
        # within a second or two), or as it is after 10 seconds.
        param([string]$Pattern)
        $deadline = (Get-Date).AddSeconds(10)
        do {
            Start-Sleep -Milliseconds 200
            $text = @(claude-status) -join "`n"
        } until ($text -match $Pattern -or (Get-Date) -gt $deadline)
        return $text
    }

    function Invoke-TestProxy {
        # proxy.py ARGS --config CONFIG with the tests' Python; its stdout lines.
        param([string]$Config, [string[]]$Arguments)
        $ErrorActionPreference = 'Continue'
        & $script:Python $script:ProxyScript @Arguments --config $Config 2>$null
    }

    function Get-TestDaemon {
        # The daemon of this config as proxy.py status --json sees it (running, pid, providers...).
        param([string]$Config)
        (Invoke-TestProxy -Config $Config -Arguments 'status', '--json') -join "`n" | ConvertFrom-Json
    }

    function Stop-TestDaemon {
        param([string]$Config)
        $null = Invoke-TestProxy -Config $Config -Arguments 'stop', '--grace', '0', '--quiet'
    }

    function Set-FakeMode {
        # 'ok' (answers "hello from NAME") or 'overloaded' (529).
        param([string]$Name, [string]$Mode)
        $null = Invoke-RestMethod -Method Post -Uri "$($script:Fakes[$Name])/_fake/mode" -Body (@{ mode = $Mode } | ConvertTo-Json) -ContentType 'application/json'
    }

    function Get-FakeCount {
        # How many requests this fake received since the test began.
        param([string]$Name)
        (Invoke-RestMethod -Uri "$($script:Fakes[$Name])/_fake/count").requests
    }

    function Send-TestRequest {
        # One Messages API request configured only by the session's variables,
        # as Claude Code's are; returns Status and Text.
        $body = @{ model = 'claude-test-model'; max_tokens = 8; messages = @(@{ role = 'user'; content = 'hi' }) } | ConvertTo-Json -Depth 5
        $headers = @{ Authorization = "Bearer $env:ANTHROPIC_AUTH_TOKEN"; 'anthropic-version' = '2023-06-01' }
        try {
            $answer = Invoke-RestMethod -Method Post -Uri "$env:ANTHROPIC_BASE_URL/v1/messages" -Headers $headers -ContentType 'application/json' -Body $body -TimeoutSec 30
            return [pscustomobject]@{ Status = 200; Text = $answer.content[0].text }
        }
        catch {
            $response = $_.Exception.PSObject.Properties['Response']
            if ($null -eq $response -or $null -eq $response.Value) {
                throw
            }
            return [pscustomobject]@{ Status = [int]$response.Value.StatusCode; Text = $null }
        }
    }

    function Get-SessionVariables {
        # ANTHROPIC_* as the session has them: a value, or '<unset>'.
        $state = [ordered]@{}
        foreach ($name in 'ANTHROPIC_BASE_URL', 'ANTHROPIC_AUTH_TOKEN', 'ANTHROPIC_API_KEY') {
            $item = Get-Item -LiteralPath "Env:$name" -ErrorAction SilentlyContinue
            if ($null -eq $item) { $state[$name] = '<unset>' } else { $state[$name] = $item.Value }
        }
        return ($state.GetEnumerator() | ForEach-Object { "$($_.Key)=$($_.Value)" }) -join "`n"
    }

    function New-FakeCommand {
        # An executable NAME in FOLDER running the shell or batch code given.
        param([string]$Folder, [string]$Name, [string]$Unix, [string]$Windows)
        if ($script:OnWindows) {
            $path = Join-Path -Path $Folder -ChildPath "$Name.cmd"
            [System.IO.File]::WriteAllText($path, "@echo off`r`n$Windows`r`n")
        }
        else {
            $path = Join-Path -Path $Folder -ChildPath $Name
            [System.IO.File]::WriteAllText($path, "#!/bin/sh`n$Unix`n")
            & chmod +x $path
        }
    }

    function ConvertTo-EncodedCommand {
        # For pwsh -EncodedCommand: no quoting rules between here and the child shell.
        param([string]$Command)
        [System.Convert]::ToBase64String([System.Text.Encoding]::Unicode.GetBytes($Command))
    }

    function Remove-ControlSequence {
        param([string]$Text)
        $Text -replace "\x1b\[[0-9;]*[A-Za-z]", ''
    }
}

AfterAll {
    foreach ($config in $script:Configs) {
        Stop-TestDaemon -Config $config
    }
    if ($null -ne $script:FakeProcess) {
        $script:FakeProcess.StandardInput.Close()
        $null = $script:FakeProcess.WaitForExit(10000)
    }
    Remove-Item -LiteralPath $script:TestRoot -Recurse -Force -ErrorAction SilentlyContinue
}

Describe 'ClaudeProxy' {
    BeforeEach {
        $saved = @{}
        foreach ($name in $script:EnvironmentNames) {
            $saved[$name] = [System.Environment]::GetEnvironmentVariable($name)
        }
        $script:SavedTestEnvironment = $saved
        $script:SavedLastExitCode = $global:LASTEXITCODE
        foreach ($name in 'ANTHROPIC_BASE_URL', 'ANTHROPIC_AUTH_TOKEN', 'ANTHROPIC_API_KEY') {
            Remove-Item -LiteralPath "Env:$name" -ErrorAction SilentlyContinue
        }
        $env:CLAUDE_PROXY_PYTHON = $script:Python
        Import-Module $script:ModulePath -Force
        foreach ($name in 'alpha', 'beta') {
            $null = Invoke-RestMethod -Method Post -Uri "$($script:Fakes[$name])/_fake/reset"
        }
    }

    AfterEach {
        # The module first: removing it puts back what claude-fb saved.
        Remove-Module -Name ClaudeProxy -Force -ErrorAction SilentlyContinue
        foreach ($name in $script:EnvironmentNames) {
            [System.Environment]::SetEnvironmentVariable($name, $script:SavedTestEnvironment[$name])
        }
        $global:LASTEXITCODE = $script:SavedLastExitCode
    }

    Context 'Importing the module' {
        It 'exports the four commands and their short names, and nothing else' {
            $module = Get-Module -Name ClaudeProxy
            @($module.ExportedFunctions.Keys | Sort-Object) | Should -Be @('Disable-ClaudeProxyProvider', 'Enable-ClaudeProxy', 'Enable-ClaudeProxyProvider', 'Get-ClaudeProxyStatus', 'Reset-ClaudeProxy', 'Resume-ClaudeProxyProvider', 'Suspend-ClaudeProxyProvider', 'Switch-ClaudeProvider')
            @($module.ExportedAliases.Keys | Sort-Object) | Should -Be @('claude-fb', 'claude-reset', 'claude-status', 'claude-switch')
            $module.ExportedCmdlets.Count | Should -Be 0
            $module.ExportedVariables.Count | Should -Be 0
            (Get-Alias -Name claude-fb).ResolvedCommandName | Should -Be 'Enable-ClaudeProxy'
            (Get-Alias -Name claude-switch).ResolvedCommandName | Should -Be 'Switch-ClaudeProvider'
            (Get-Alias -Name claude-status).ResolvedCommandName | Should -Be 'Get-ClaudeProxyStatus'
            (Get-Alias -Name claude-reset).ResolvedCommandName | Should -Be 'Reset-ClaudeProxy'
            Get-Command -Name Find-ClaudeProxyPython, Invoke-ClaudeProxyCli, Use-ClaudeProxy -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        }

        It 'Get-Help <Alias> -Full shows a synopsis, the parameters and an example' -TestCases @(
            @{ Alias = 'claude-fb'; Parameters = @() },
            @{ Alias = 'claude-switch'; Parameters = @('Provider') },
            @{ Alias = 'claude-status'; Parameters = @('Json', 'Watch') },
            @{ Alias = 'claude-reset'; Parameters = @('KeepRunning') }
        ) {
            param($Alias, $Parameters)
            $help = Get-Help -Name $Alias -Full
            $help.Synopsis | Should -Match "\(alias: $Alias\)"
            @($help.examples.example).Count | Should -BeGreaterThan 0
            $full = (Get-Help -Name $Alias -Full | Out-String)
            $full | Should -Match 'PARAMETERS'
            foreach ($parameter in $Parameters) {
                $entry = @($help.parameters.parameter | Where-Object { $_.name -eq $parameter })
                $entry.Count | Should -Be 1
                ($entry[0].description | Out-String).Trim() | Should -Not -BeNullOrEmpty
            }
        }

        It 'imports under Set-StrictMode -Version Latest and $ErrorActionPreference = Stop, twice in a row' {
            $command = "Set-StrictMode -Version Latest; `$ErrorActionPreference = 'Stop'; " +
                "Import-Module '$script:ModulePath' -Force; Import-Module '$script:ModulePath' -Force; " +
                "Get-ClaudeProxyStatus -Json | Out-Null; 'imported'"
            $output = & $script:Shell -NoProfile -NonInteractive -OutputFormat Text -EncodedCommand (ConvertTo-EncodedCommand $command) 2>&1
            $LASTEXITCODE | Should -Be 0
            ($output | ForEach-Object { "$_" }) -join "`n" | Should -Be 'imported'
        }

        It 'removing the module puts the session''s variables back' {
            $env:CLAUDE_PROXY_CONFIG = New-TestConfig -Folder 'remove'
            $env:ANTHROPIC_API_KEY = 'fake-user-key-before'
            claude-fb 6>$null
            $env:ANTHROPIC_API_KEY | Should -BeNullOrEmpty
            Remove-Module -Name ClaudeProxy
            $env:ANTHROPIC_API_KEY | Should -Be 'fake-user-key-before'
            Test-Path -LiteralPath Env:ANTHROPIC_BASE_URL | Should -BeFalse
            (Get-TestDaemon -Config $env:CLAUDE_PROXY_CONFIG).running | Should -BeTrue
        }
    }

    Context 'claude-fb' {
        BeforeAll {
            $config = New-TestConfig -Folder 'fb'
        }
        BeforeEach {
            $env:CLAUDE_PROXY_CONFIG = $config
        }

        It 'starts the daemon when it is not running' {
            (Get-TestDaemon -Config $config).running | Should -BeFalse
            claude-fb 6>$null
            (Get-TestDaemon -Config $config).running | Should -BeTrue
        }

        It 'reuses the daemon that is running' {
            $before = (Get-TestDaemon -Config $config).pid
            $before | Should -Not -BeNullOrEmpty
            claude-fb 6>$null
            (Get-TestDaemon -Config $config).pid | Should -Be $before
        }

        It 'sets ANTHROPIC_BASE_URL and ANTHROPIC_AUTH_TOKEN, removes ANTHROPIC_API_KEY, prints one line with the order' {
            $env:ANTHROPIC_API_KEY = 'fake-user-key'
            $printed = @(claude-fb 6>&1 | ForEach-Object { "$_" })
            $daemon = Get-TestDaemon -Config $config
            $env:ANTHROPIC_BASE_URL | Should -Be $daemon.url
            $token = (Get-Content -LiteralPath (Join-Path -Path (Split-Path -Path $config) -ChildPath 'proxy.token') -Raw).Trim()
            $env:ANTHROPIC_AUTH_TOKEN | Should -Be $token
            Test-Path -LiteralPath Env:ANTHROPIC_API_KEY | Should -BeFalse
            $printed.Count | Should -Be 1
            $printed[0] | Should -Match 'fallback order: alpha > beta'
        }

        It 'a request sent with those variables is answered' {
            claude-fb 6>$null
            $answer = Send-TestRequest
            $answer.Status | Should -Be 200
            $answer.Text | Should -Be 'hello from alpha'
            Get-FakeCount -Name alpha | Should -Be 1
        }

        It 'takes a strategy of its own for this session (-Strategy), completed from the valid names (before alpha cools below)' {
            $printed = @(claude-fb -Strategy round_robin 6>&1 | ForEach-Object { "$_" })
            $env:ANTHROPIC_BASE_URL | Should -Be ((Get-TestDaemon -Config $config).url + '/strategy/round_robin')
            $printed[0] | Should -Match 'strategy round_robin over alpha, beta'
            $first, $second = (Send-TestRequest).Text, (Send-TestRequest).Text
            @($first, $second) | Sort-Object | Should -Be @('hello from alpha', 'hello from beta')
            { claude-fb -Strategy cheapest } | Should -Throw
            $line = 'claude-fb -Strategy r'
            (TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText |
                Should -Be @('random', 'round_robin')
        }

        It 'Claude Code itself (claude -p) is answered through it, while alpha answers 529' -Skip:(-not $env:CLAUDE_CODE_BIN) {
            claude-fb 6>$null
            Set-FakeMode -Name alpha -Mode overloaded
            $claudeHome = Join-Path -Path $script:TestRoot -ChildPath ('home-' + [guid]::NewGuid().ToString('N').Substring(0, 6))
            $null = New-Item -ItemType Directory -Path $claudeHome
            $env:HOME = $claudeHome
            $env:USERPROFILE = $claudeHome
            $env:XDG_CONFIG_HOME = Join-Path -Path $claudeHome -ChildPath '.config'
            $env:CLAUDE_CONFIG_DIR = Join-Path -Path $claudeHome -ChildPath '.claude'
            $env:CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = '1'
            $env:DISABLE_AUTOUPDATER = '1'
            $env:CLAUDE_CODE_MAX_RETRIES = '1'
            $env:API_TIMEOUT_MS = '60000'
            $out = Join-Path -Path $claudeHome -ChildPath 'out.json'
            $run = Start-Process -FilePath $env:CLAUDE_CODE_BIN -ArgumentList '-p', '"say hi"', '--output-format', 'json' -WorkingDirectory $claudeHome -RedirectStandardOutput $out -RedirectStandardError (Join-Path -Path $claudeHome -ChildPath 'err.txt') -NoNewWindow -PassThru
            if (-not $run.WaitForExit(120000)) {
                $run.Kill()
                throw 'claude -p did not finish within 120 s'
            }
            $run.ExitCode | Should -Be 0
            (Get-Content -LiteralPath $out -Raw | ConvertFrom-Json).result | Should -Match 'hello from beta'
            Get-FakeCount -Name alpha | Should -BeGreaterThan 0
        }

        It 'a request is answered by beta while alpha answers 529' {
            claude-fb 6>$null
            Set-FakeMode -Name alpha -Mode overloaded
            $answer = Send-TestRequest
            $answer.Status | Should -Be 200
            $answer.Text | Should -Be 'hello from beta'
            Get-FakeCount -Name beta | Should -Be 1
        }

        It 'works under Set-StrictMode -Version Latest and $ErrorActionPreference = Stop in the caller' {
            Set-StrictMode -Version Latest
            $ErrorActionPreference = 'Stop'
            { claude-fb 6>$null } | Should -Not -Throw
            $env:ANTHROPIC_BASE_URL | Should -Be (Get-TestDaemon -Config $config).url
        }
    }

    Context 'claude-switch' {
        BeforeAll {
            $config = New-TestConfig -Folder 'switch'
        }
        BeforeEach {
            $env:CLAUDE_PROXY_CONFIG = $config
        }

        It 'an unknown name is an error listing the configured names; nothing starts, nothing changes' {
            $env:ANTHROPIC_API_KEY = 'fake-user-key'
            $before = Get-SessionVariables
            claude-switch -Provider gamma -ErrorVariable failure -ErrorAction SilentlyContinue 6>$null
            @($failure).Count | Should -Be 1
            "$($failure[0])" | Should -Match 'unknown provider "gamma"; configured providers: alpha, beta'
            Get-SessionVariables | Should -Be $before
            (Get-TestDaemon -Config $config).running | Should -BeFalse
        }

        It '-Provider beta pins the session: the base URL ends in /provider/beta, and only beta gets requests' {
            claude-switch -Provider beta 6>$null
            $env:ANTHROPIC_BASE_URL | Should -Match '/provider/beta$'
            (Send-TestRequest).Text | Should -Be 'hello from beta'
            (Send-TestRequest).Text | Should -Be 'hello from beta'
            Get-FakeCount -Name beta | Should -Be 2
            Get-FakeCount -Name alpha | Should -Be 0
        }

        It 'only beta gets requests even while beta is failing' {
            claude-switch beta 6>$null
            Set-FakeMode -Name beta -Mode overloaded
            (Send-TestRequest).Status | Should -Be 529
            Get-FakeCount -Name beta | Should -BeGreaterThan 0
            Get-FakeCount -Name alpha | Should -Be 0
        }

        It 'Tab completes -Provider with the configured names after "<Line>"' -TestCases @(
            @{ Line = 'claude-switch -Provider '; Expected = @('alpha', 'beta') },
            @{ Line = 'claude-switch -Provider b'; Expected = @('beta') },
            @{ Line = 'Switch-ClaudeProvider '; Expected = @('alpha', 'beta') },
            @{ Line = 'claude-switch '; Expected = @('alpha', 'beta') }
        ) {
            param($Line, $Expected)
            $completion = TabExpansion2 -inputScript $Line -cursorColumn $Line.Length
            @($completion.CompletionMatches | ForEach-Object { $_.CompletionText }) | Should -Be $Expected
        }
    }

    Context 'Runtime control (Disable-, Enable-, Suspend-, Resume-ClaudeProxyProvider)' {
        BeforeAll {
            $config = New-TestConfig -Folder 'control'
        }
        BeforeEach {
            $env:CLAUDE_PROXY_CONFIG = $config
        }

        It 'takes a provider out of use at once, and puts it back' {
            claude-fb 6>$null
            Disable-ClaudeProxyProvider -Name alpha -For 10m | Should -Be 'alpha: disabled for 10m 00s; requests go to the other providers (a restart forgets this)'
            (Send-TestRequest).Text | Should -Be 'hello from beta'
            (@(claude-status) -join "`n") | Should -Match '1\. alpha\s+disabled by proxy\.py disable for \d+m \d+s more'
            Enable-ClaudeProxyProvider alpha | Should -Be 'alpha: enabled again'
            (Send-TestRequest).Text | Should -Be 'hello from alpha'
        }

        It 'puts a provider in cooldown and clears it' {
            claude-fb 6>$null
            Suspend-ClaudeProxyProvider -Name alpha -For 5m | Should -Be 'alpha: cooling for 5m 00s; tried only when no other is ready'
            (Send-TestRequest).Text | Should -Be 'hello from beta'
            Resume-ClaudeProxyProvider | Should -Be 'cooldowns cleared: alpha'
            (Send-TestRequest).Text | Should -Be 'hello from alpha'
        }

        It 'an unknown name is one error, and -Name completes the configured names' {
            claude-fb 6>$null
            $problems = @()
            Disable-ClaudeProxyProvider -Name gamma -ErrorVariable problems -ErrorAction SilentlyContinue
            $problems.Count | Should -Be 1
            "$($problems[0])" | Should -Match 'unknown provider "gamma"; configured providers: alpha, beta'
            $line = 'Disable-ClaudeProxyProvider -Name '
            (TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText |
                Should -Be @('alpha', 'beta')
        }
    }

    Context 'claude-status' {
        BeforeAll {
            $config = New-TestConfig -Folder 'status'
        }
        BeforeEach {
            $env:CLAUDE_PROXY_CONFIG = $config
        }

        It 'when the daemon is not running, says so and suggests claude-fb' {
            $lines = @(claude-status)
            $LASTEXITCODE | Should -Be 3
            $lines[0] | Should -Match '^claude-proxy is not running'
            ($lines -join "`n") | Should -Match 'this session: normal'
            ($lines -join "`n") | Should -Match 'claude-fb'
        }

        It 'shows the session in fallback mode and each provider ready' {
            claude-fb 6>$null
            $text = @(claude-status) -join "`n"
            $LASTEXITCODE | Should -Be 0
            $text | Should -Match 'this session: fallback through the proxy'
            $text | Should -Match '1\. alpha\s+ready'
            $text | Should -Match '2\. beta\s+ready'
        }

        It 'shows a provider cooling, with the time left, after it answered 529' {
            claude-fb 6>$null
            Set-FakeMode -Name alpha -Mode overloaded
            $null = Send-TestRequest
            $text = @(claude-status) -join "`n"
            $text | Should -Match '1\. alpha\s+cooling for (\d+m )?\d+s'
            $text | Should -Match '2\. beta\s+ready'
        }

        It "adds today's figures per provider from the usage record" {
            claude-fb 6>$null
            Set-FakeMode -Name alpha -Mode ok
            Set-FakeMode -Name beta -Mode ok
            (Send-TestRequest).Status | Should -Be 200
            $text = @(claude-status) -join "`n"
            $text | Should -Match 'today, per provider'
            $text | Should -Match '(?m)^\s+(alpha|beta)\s+[1-9]\d* requests?(, \d+ failovers?)?, tokens in \d+ out \d+'
            @((claude-status -Json | ConvertFrom-Json).today).Count | Should -BeGreaterThan 0
        }

        It 'shows the session pinned to a provider' {
            claude-switch -Provider beta 6>$null
            @(claude-status) -join "`n" | Should -Match 'this session: pinned to beta'
        }

        It 'shows the order of a config.json saved while it runs, and a broken save as a config error' {
            $saved = New-TestConfig -Folder 'reload'
            $env:CLAUDE_PROXY_CONFIG = $saved
            claude-fb 6>$null
            $settings = Get-Content -Raw -Path $saved | ConvertFrom-Json
            $settings.providers = @($settings.providers[1], $settings.providers[0])
            $utf8 = New-Object System.Text.UTF8Encoding $false
            [System.IO.File]::WriteAllText($saved, ($settings | ConvertTo-Json -Depth 5), $utf8)
            $text = Wait-StatusText -Pattern '1\. beta\s+ready'
            $text | Should -Match '1\. beta\s+ready'
            $text | Should -Match '2\. alpha\s+ready'

            [System.IO.File]::WriteAllText($saved, '{"providers": [', $utf8)
            $text = Wait-StatusText -Pattern 'config error since'
            $text | Should -Match 'config error since \d\d:\d\d: .*invalid JSON at line 1'
            $text | Should -Match '1\. beta\s+ready'
            $LASTEXITCODE | Should -Be 0
        }

        It '-Watch runs proxy.py top, which prints one plain snapshot when its output is captured' {
            $env:CLAUDE_PROXY_CONFIG = New-TestConfig -Folder 'watch'
            $lines = @(claude-status -Watch)
            $LASTEXITCODE | Should -Be 3
            $lines[0] | Should -Match '^claude-proxy is not running'
            claude-switch -Provider beta 6>$null
            $text = @(claude-status -Watch) -join "`n"
            $LASTEXITCODE | Should -Be 0
            $text | Should -Match '(?m)^  this session: pinned to beta$'
            $text | Should -Match '(?m)^  alpha\s+ready\s+0\s+0\s'
            $text | Should -Match '(?m)^IN FLIGHT \(0\)$'
            $text | Should -Not -Match ([regex]::Escape([string][char]27))
        }

        It '-Watch and -Json do not go together' {
            { claude-status -Watch -Json -ErrorAction Stop } | Should -Throw
        }

        It '-Json gives what ConvertFrom-Json reads' {
            claude-fb 6>$null
            $status = claude-status -Json | ConvertFrom-Json
            $status.running | Should -BeTrue
            $status.session.mode | Should -Be 'fallback'
            @($status.providers | ForEach-Object { $_.name }) | Should -Be @('alpha', 'beta')
        }
    }

    Context 'claude-reset' {
        BeforeAll {
            $config = New-TestConfig -Folder 'reset'
        }
        BeforeEach {
            $env:CLAUDE_PROXY_CONFIG = $config
        }
        AfterEach {
            Stop-TestDaemon -Config $config
        }

        It 'removes again the variables that were unset, and stops the daemon' {
            $before = Get-SessionVariables
            claude-fb 6>$null
            Get-SessionVariables | Should -Not -Be $before
            claude-reset 6>$null
            Get-SessionVariables | Should -Be $before
            (Get-TestDaemon -Config $config).running | Should -BeFalse
        }

        It 'gives set variables their old values back, also after several switches' {
            $env:ANTHROPIC_BASE_URL = 'https://api.example.test'
            $env:ANTHROPIC_AUTH_TOKEN = 'sk-test-old-token'
            $env:ANTHROPIC_API_KEY = 'fake-old-user-key'
            $before = Get-SessionVariables
            claude-fb 6>$null
            claude-switch -Provider beta 6>$null
            claude-switch -Provider alpha 6>$null
            claude-fb 6>$null
            $env:ANTHROPIC_BASE_URL | Should -Be (Get-TestDaemon -Config $config).url
            claude-reset 6>$null
            Get-SessionVariables | Should -Be $before
        }

        It '-KeepRunning leaves the daemon up' {
            claude-fb 6>$null
            claude-reset -KeepRunning 6>$null
            Test-Path -LiteralPath Env:ANTHROPIC_BASE_URL | Should -BeFalse
            (Get-TestDaemon -Config $config).running | Should -BeTrue
        }

        It 'in a session that never used the proxy, restores nothing and stops nothing' {
            $null = Invoke-TestProxy -Config $config -Arguments 'start', '--quiet'
            $env:ANTHROPIC_BASE_URL = 'https://api.example.test'
            $printed = @(claude-reset 6>&1 | ForEach-Object { "$_" })
            $printed -join "`n" | Should -Match 'not using the proxy'
            $env:ANTHROPIC_BASE_URL | Should -Be 'https://api.example.test'
            (Get-TestDaemon -Config $config).running | Should -BeTrue
        }

        It 'leaves the daemon running while another session uses it; the last reset stops it' {
            claude-fb 6>$null
            $ready = Join-Path -Path $script:TestRoot -ChildPath ('ready-' + [guid]::NewGuid().ToString('N'))
            $go = "$ready.go"
            $child = "Import-Module '$script:ModulePath'; claude-fb 6>`$null; " +
                "New-Item -ItemType File -Path '$ready' | Out-Null; " +
                "`$deadline = (Get-Date).AddSeconds(60); while (-not (Test-Path '$go') -and (Get-Date) -lt `$deadline) { Start-Sleep -Milliseconds 50 }; " +
                "claude-reset"
            $other = Start-Process -FilePath $script:Shell -ArgumentList '-NoProfile', '-NonInteractive', '-OutputFormat', 'Text', '-EncodedCommand', (ConvertTo-EncodedCommand $child) -NoNewWindow -PassThru -RedirectStandardOutput "$ready.out" -RedirectStandardError "$ready.err"
            try {
                $deadline = (Get-Date).AddSeconds(30)
                while (-not (Test-Path -LiteralPath $ready) -and -not $other.HasExited -and (Get-Date) -lt $deadline) {
                    Start-Sleep -Milliseconds 50
                }
                Test-Path -LiteralPath $ready | Should -BeTrue
                $printed = @(claude-reset 6>&1 | ForEach-Object { "$_" }) -join "`n"
                $printed | Should -Match 'keeps running for 1 other shell session'
                (Get-TestDaemon -Config $config).running | Should -BeTrue
            }
            finally {
                $null = New-Item -ItemType File -Path $go -Force
                $null = $other.WaitForExit(30000)
            }
            (Get-TestDaemon -Config $config).running | Should -BeFalse
        }
    }

    Context 'When something is wrong' {
        BeforeAll {
            $config = New-TestConfig -Folder 'failures'
        }
        BeforeEach {
            $env:CLAUDE_PROXY_CONFIG = $config
        }

        It 'without Python: one line naming what to install and CLAUDE_PROXY_PYTHON; nothing changes' {
            Remove-Item -LiteralPath Env:CLAUDE_PROXY_PYTHON
            $empty = Join-Path -Path $script:TestRoot -ChildPath ('empty-' + [guid]::NewGuid().ToString('N').Substring(0, 6))
            $null = New-Item -ItemType Directory -Path $empty
            $env:PATH = $empty
            $before = Get-SessionVariables
            claude-fb -ErrorVariable failure -ErrorAction SilentlyContinue 6>$null
            @($failure).Count | Should -Be 1
            $message = "$($failure[0])"
            $message | Should -Match 'Python 3\.10 or newer'
            $message | Should -Match 'install it'
            $message | Should -Match 'CLAUDE_PROXY_PYTHON'
            $message | Should -Not -Match "`n"
            $failure[0].InvocationInfo.MyCommand.Name | Should -Be 'Enable-ClaudeProxy'
            Get-SessionVariables | Should -Be $before
        }

        It 'an old python3 does not hide a new python on PATH' {
            Remove-Item -LiteralPath Env:CLAUDE_PROXY_PYTHON
            $bin = Join-Path -Path $script:TestRoot -ChildPath ('bin-' + [guid]::NewGuid().ToString('N').Substring(0, 6))
            $null = New-Item -ItemType Directory -Path $bin
            # Python 3.9 answers the module's version probe with python-too-old.
            New-FakeCommand -Folder $bin -Name 'python3' -Unix 'echo python-too-old; exit 1' -Windows 'echo python-too-old& exit /b 1'
            New-FakeCommand -Folder $bin -Name 'python' -Unix "exec '$script:Python' `"`$@`"" -Windows "`"$script:Python`" %*"
            $env:PATH = $bin
            claude-fb 6>$null
            $env:ANTHROPIC_BASE_URL | Should -Be (Get-TestDaemon -Config $config).url
        }

        It 'a python3 that cannot start is passed over, whatever $LASTEXITCODE was' -Skip:([System.Environment]::OSVersion.Platform -eq 'Win32NT') {
            Remove-Item -LiteralPath Env:CLAUDE_PROXY_PYTHON
            $bin = Join-Path -Path $script:TestRoot -ChildPath ('broken-' + [guid]::NewGuid().ToString('N').Substring(0, 6))
            $null = New-Item -ItemType Directory -Path $bin
            $broken = Join-Path -Path $bin -ChildPath 'python3'
            [System.IO.File]::WriteAllText($broken, "#!/nonexistent/interpreter`n")
            & chmod +x $broken
            $env:PATH = $bin
            $global:LASTEXITCODE = 0  # as after the user's last successful command
            claude-fb -ErrorVariable failure -ErrorAction SilentlyContinue 6>$null
            # -ErrorVariable also holds the probe's caught "cannot start" exception.
            $told = @($failure | Where-Object { $_.FullyQualifiedErrorId -like 'ClaudeProxy,*' })
            $told.Count | Should -Be 1
            "$($told[0])" | Should -Match 'Python 3\.10 or newer was not found'
            Test-Path -LiteralPath Env:ANTHROPIC_BASE_URL | Should -BeFalse
        }

        It 'a CLAUDE_PROXY_PYTHON that is not Python 3.10+ is named in the error' {
            $env:CLAUDE_PROXY_PYTHON = Join-Path -Path $script:TestRoot -ChildPath 'no-such-python'
            claude-status -ErrorVariable failure -ErrorAction SilentlyContinue
            @($failure).Count | Should -Be 1
            "$($failure[0])" | Should -Match ([regex]::Escape("CLAUDE_PROXY_PYTHON [$env:CLAUDE_PROXY_PYTHON]"))
        }

        It 'a broken config.json: the daemon''s one-line message, no stack trace' {
            $env:CLAUDE_PROXY_CONFIG = New-TestConfig -Folder 'broken' -Content '{"proxy_port": 8787, "providers": ['
            $before = Get-SessionVariables
            claude-fb -ErrorVariable failure -ErrorAction SilentlyContinue 6>$null
            @($failure).Count | Should -Be 1
            $message = "$($failure[0])"
            $message | Should -BeLike "could not start claude-proxy: $env:CLAUDE_PROXY_CONFIG`: invalid JSON at line 1, column *"
            $message | Should -Not -Match "`n|Traceback"
            Get-SessionVariables | Should -Be $before
        }

        It 'a broken config.json shows as one line in the console' -Skip:($PSVersionTable.PSVersion.Major -lt 7) {
            $broken = New-TestConfig -Folder 'broken-console' -Content '{"proxy_port": 8787, "providers": ['
            $command = "`$ErrorView = 'ConciseView'; Import-Module '$script:ModulePath'; `$env:CLAUDE_PROXY_CONFIG = '$broken'; claude-fb"
            $errorFile = Join-Path -Path (Split-Path -Path $broken) -ChildPath 'stderr.txt'
            $run = Start-Process -FilePath $script:Shell -ArgumentList '-NoProfile', '-NonInteractive', '-OutputFormat', 'Text', '-EncodedCommand', (ConvertTo-EncodedCommand $command) -NoNewWindow -PassThru -Wait -RedirectStandardError $errorFile -RedirectStandardOutput "$errorFile.out"
            $lines = @(Get-Content -LiteralPath $errorFile | ForEach-Object { Remove-ControlSequence $_ } | Where-Object { $_.Trim() })
            $lines.Count | Should -Be 1 -Because ($lines -join ' | ')
            $lines[0] | Should -Match '^Enable-ClaudeProxy: could not start claude-proxy: .*config\.json: invalid JSON'
        }

        It 'the port taken by another program: says so, nothing changes' {
            $port = Get-FreePort
            $env:CLAUDE_PROXY_CONFIG = New-TestConfig -Folder 'taken' -Content (@{
                    proxy_port = $port
                    providers  = @(@{ name = 'alpha'; base_url = $script:Fakes.alpha; api_key_env = 'KEY_ALPHA' })
                } | ConvertTo-Json -Depth 5)
            $listener = New-Object System.Net.Sockets.TcpListener ([System.Net.IPAddress]::Loopback), $port
            $listener.Start()
            try {
                $before = Get-SessionVariables
                claude-fb -ErrorVariable failure -ErrorAction SilentlyContinue 6>$null
                @($failure).Count | Should -Be 1
                "$($failure[0])" | Should -Match "port $port on 127\.0\.0\.1 is already in use by another program"
                Get-SessionVariables | Should -Be $before
            }
            finally {
                $listener.Stop()
            }
        }
    }

    Context 'The README''s PowerShell commands' {
        # Run as written, in a new session whose home holds the clone as
        # ~/.claude-proxy (on Windows, ~ does not follow HOME: not run there).
        It 'Import-Module ~/.claude-proxy/ClaudeProxy.psd1, claude-fb; and the profile line loads the commands' -Skip:([System.Environment]::OSVersion.Platform -eq 'Win32NT') {
            $env:CLAUDE_PROXY_CONFIG = New-TestConfig -Folder 'readme'
            $readme = Get-Content -LiteralPath (Join-Path -Path (Split-Path -Path $PSScriptRoot) -ChildPath 'README.md') -Raw
            $section = $readme.Substring($readme.IndexOf('### PowerShell ('))
            $blocks = [regex]::Matches($section, '(?s)```powershell\r?\n(.*?)```')
            $quickStart = @($blocks[0].Groups[1].Value -split '\r?\n' | Where-Object { $_.Trim() -and $_.Trim() -ne 'claude' })
            $profileLine = $blocks[1].Groups[1].Value.Trim()
            $quickStart[0] | Should -Be 'Import-Module ~/.claude-proxy/ClaudeProxy.psd1'
            $home2 = Join-Path -Path $script:TestRoot -ChildPath ('home-' + [guid]::NewGuid().ToString('N').Substring(0, 6))
            $null = New-Item -ItemType Directory -Path $home2
            $null = New-Item -ItemType SymbolicLink -Path (Join-Path -Path $home2 -ChildPath '.claude-proxy') -Target (Split-Path -Path $PSScriptRoot)
            $env:HOME = $home2
            $command = ($quickStart -join "`n") + "`n" + '"URL=$env:ANTHROPIC_BASE_URL"' + "`n" +
                'New-Item -ItemType File -Path $PROFILE -Force | Out-Null' + "`n" + $profileLine
            $output = @(& $script:Shell -NoProfile -NonInteractive -OutputFormat Text -EncodedCommand (ConvertTo-EncodedCommand $command) 2>&1 | ForEach-Object { "$_" })
            $output | Should -Contain "URL=$((Get-TestDaemon -Config $env:CLAUDE_PROXY_CONFIG).url)"
            $loaded = & $script:Shell -NonInteractive -OutputFormat Text -Command '(Get-Command -Name claude-fb).ResolvedCommandName' 2>&1
            "$loaded" | Should -Be 'Enable-ClaudeProxy'
        }
    }

    Context 'Non-ASCII text from Python' {
        It 'comes through whatever the console code page, which is put back afterwards' {
            $env:CLAUDE_PROXY_CONFIG = New-TestConfig -Folder 'données-Ω-€'
            # A console that is not UTF-8, and a Python that would write in a
            # code page without these characters (UnicodeEncodeError).
            $previous = [Console]::OutputEncoding
            $latin1 = [System.Text.Encoding]::GetEncoding('iso-8859-1')
            [Console]::OutputEncoding = $latin1
            $env:PYTHONIOENCODING = 'ascii'
            try {
                $text = @(claude-status) -join "`n"
                [Console]::OutputEncoding.WebName | Should -Be $latin1.WebName
            }
            finally {
                [Console]::OutputEncoding = $previous
            }
            $env:PYTHONIOENCODING | Should -Be 'ascii'
            $text | Should -Match ([regex]::Escape("config: $env:CLAUDE_PROXY_CONFIG"))
        }
    }
}

Describe 'Windows PowerShell 5.1 language' {
    BeforeAll {
        # Commands that Windows PowerShell 5.1 does not have.
        $script:MissingCommands = @(
            'Get-Error', 'Test-Json', 'Join-String', 'Get-Uptime', 'Remove-Alias', 'Remove-Service',
            'ConvertFrom-Markdown', 'Show-Markdown', 'Get-MarkdownOption', 'Set-MarkdownOption',
            'Get-PSSubsystem', 'Enable-ExperimentalFeature', 'Get-ExperimentalFeature')
        # Parameters that 5.1's version of a command does not have.
        $script:MissingParameters = @{
            'ConvertFrom-Json'  = @('AsHashtable', 'Depth', 'NoEnumerate')
            'ConvertTo-Json'    = @('EscapeHandling', 'AsArray')
            'Join-Path'         = @('AdditionalChildPath')
            'ForEach-Object'    = @('Parallel', 'ThrottleLimit', 'TimeoutSeconds', 'AsJob')
            'Start-Process'     = @('Environment')
            'Invoke-RestMethod' = @('SkipCertificateCheck', 'Authentication', 'Token', 'StatusCodeVariable',
                'ResponseHeadersVariable', 'SkipHttpErrorCheck', 'Form', 'Resume', 'MaximumRetryCount',
                'RetryIntervalSec', 'SslProtocol', 'NoProxy', 'HttpVersion', 'SkipHeaderValidation')
            'Invoke-WebRequest' = @('SkipCertificateCheck', 'Authentication', 'Token', 'SkipHttpErrorCheck',
                'Form', 'Resume', 'MaximumRetryCount', 'RetryIntervalSec', 'SslProtocol', 'NoProxy',
                'HttpVersion', 'SkipHeaderValidation')
            'Split-Path'        = @('LeafBase', 'Extension')
            'Select-String'     = @('Raw', 'NoEmphasis')
            'Sort-Object'       = @('Top', 'Bottom')
            'Get-Date'          = @('AsUTC', 'UnixTimeSeconds')
            'Get-Content'       = @('AsByteStream')
            'Set-Content'       = @('AsByteStream')
            'Add-Content'       = @('AsByteStream')
            'Import-Module'     = @('UseWindowsPowerShell', 'SkipEditionCheck')
            'Get-Command'       = @('UseFuzzyMatching', 'UseAbbreviationExpansion')
            'Test-Connection'   = @('TargetName', 'TcpPort', 'Traceroute', 'MtuSize', 'Repeat')
        }
        # -Encoding values that 5.1 does not know.
        $script:MissingEncodings = @('utf8NoBOM', 'utf8BOM', 'ansi')
        $script:Aliases = @{ '%' = 'ForEach-Object'; 'foreach' = 'ForEach-Object'; 'irm' = 'Invoke-RestMethod'; 'iwr' = 'Invoke-WebRequest'; 'gc' = 'Get-Content'; 'sc' = 'Set-Content'; 'ac' = 'Add-Content'; 'saps' = 'Start-Process'; 'start' = 'Start-Process'; 'sls' = 'Select-String'; 'sort' = 'Sort-Object'; 'ipmo' = 'Import-Module'; 'gcm' = 'Get-Command' }

        function Find-NotWindowsPowerShellCode {
            # One line for each thing in this code that Windows PowerShell 5.1
            # cannot run: 7-only syntax (ternary, ??, ??=, ?. and ?[], && and
            # ||, background &, clean {}, `u{} escapes), $IsWindows and friends
            # (not defined in 5.1), and the commands and parameters listed above.
            param([string]$Path, [string]$Code)
            $tokens = $null
            $errors = $null
            if ($Path) {
                $ast = [System.Management.Automation.Language.Parser]::ParseFile($Path, [ref]$tokens, [ref]$errors)
            }
            else {
                $ast = [System.Management.Automation.Language.Parser]::ParseInput($Code, [ref]$tokens, [ref]$errors)
            }
            foreach ($problem in $errors) {
                "line $($problem.Extent.StartLineNumber): does not parse: $($problem.Message)"
            }
            foreach ($token in $tokens) {
                if ("$($token.Kind)" -eq 'StringExpandable' -and $token.Text -match '`u\{') {
                    "line $($token.Extent.StartLineNumber): " + 'the `u{...} escape (PowerShell 6+)'
                }
            }
            foreach ($node in $ast.FindAll({ $true }, $true)) {
                $at = "line $($node.Extent.StartLineNumber)"
                $kind = $node.GetType().Name
                if ($kind -eq 'TernaryExpressionAst') {
                    "${at}: ternary operator a ? b : c (PowerShell 7)"
                }
                elseif ($kind -eq 'PipelineChainAst') {
                    "${at}: pipeline chain && / || (PowerShell 7)"
                }
                elseif ($kind -eq 'BinaryExpressionAst' -and "$($node.Operator)" -eq 'QuestionQuestion') {
                    "${at}: ?? operator (PowerShell 7)"
                }
                elseif ($kind -eq 'AssignmentStatementAst' -and "$($node.Operator)" -eq 'QuestionQuestionEquals') {
                    "${at}: ??= operator (PowerShell 7)"
                }
                elseif ($kind -match '^(Invoke)?MemberExpressionAst$' -and $node.PSObject.Properties['NullConditional'] -and $node.NullConditional) {
                    "${at}: ?. member access (PowerShell 7)"
                }
                elseif ($kind -eq 'IndexExpressionAst' -and $node.PSObject.Properties['NullConditional'] -and $node.NullConditional) {
                    "${at}: ?[] index (PowerShell 7)"
                }
                elseif ($kind -eq 'ScriptBlockAst' -and $node.PSObject.Properties['CleanBlock'] -and $null -ne $node.CleanBlock) {
                    "${at}: clean {} block (PowerShell 7.3)"
                }
                elseif ($kind -eq 'PipelineAst' -and $node.PSObject.Properties['Background'] -and $node.Background) {
                    "${at}: background operator & (PowerShell 6)"
                }
                elseif ($kind -eq 'VariableExpressionAst' -and $node.VariablePath.UserPath -in 'IsWindows', 'IsLinux', 'IsMacOS', 'IsCoreCLR') {
                    "${at}: `$$($node.VariablePath.UserPath) is not defined in 5.1"
                }
                elseif ($kind -eq 'CommandAst') {
                    $name = $node.GetCommandName()
                    if (-not $name) {
                        continue
                    }
                    if ($script:Aliases.ContainsKey($name)) {
                        $name = $script:Aliases[$name]
                    }
                    if ($script:MissingCommands -contains $name) {
                        "${at}: $name is not in 5.1"
                        continue
                    }
                    $elements = @($node.CommandElements | Select-Object -Skip 1)
                    $positional = 0
                    for ($i = 0; $i -lt $elements.Count; $i++) {
                        $element = $elements[$i]
                        if ($element.GetType().Name -ne 'CommandParameterAst') {
                            $positional++
                            continue
                        }
                        $parameter = $element.ParameterName
                        $missing = @()
                        if ($script:MissingParameters.ContainsKey($name)) {
                            $missing = @($script:MissingParameters[$name] | Where-Object { $_ -like "$parameter*" })
                        }
                        if ($missing) {
                            "${at}: $name -$($missing[0]) is not in 5.1"
                        }
                        $value = $element.Argument
                        if ($null -eq $value -and $i + 1 -lt $elements.Count -and $elements[$i + 1].GetType().Name -ne 'CommandParameterAst') {
                            $value = $elements[$i + 1]
                            if ('Encoding' -like "$parameter*" -or $name -eq 'Join-Path') {
                                $i++  # the value of this parameter, not a positional argument
                            }
                        }
                        if ('Encoding' -like "$parameter*" -and $null -ne $value -and $script:MissingEncodings -contains "$($value.Extent.Text)".Trim("'`"")) {
                            "${at}: $name -Encoding $($value.Extent.Text) is not in 5.1"
                        }
                    }
                    if ($name -eq 'Join-Path' -and $positional -gt 2) {
                        "${at}: Join-Path with more than two paths (-AdditionalChildPath) is not in 5.1"
                    }
                }
            }
        }
    }

    It 'ClaudeProxy.psm1 and ClaudeProxy.psd1 use nothing that 5.1 lacks' {
        foreach ($file in 'ClaudeProxy.psm1', 'ClaudeProxy.psd1') {
            $path = Join-Path -Path (Split-Path -Path $PSScriptRoot) -ChildPath $file
            @(Find-NotWindowsPowerShellCode -Path $path) | Should -BeNullOrEmpty -Because $file
        }
    }

    It 'these tests use nothing that 5.1 lacks, so they run there too' {
        @(Find-NotWindowsPowerShellCode -Path $PSCommandPath) | Should -BeNullOrEmpty
    }

    It 'the check finds <Expected> in: <Code>' -TestCases @(
        @{ Code = '$a = $b ? 1 : 2'; Expected = 'ternary' },
        @{ Code = '$a = $b ?? 1'; Expected = '\?\? operator' },
        @{ Code = '$a ??= 1'; Expected = '\?\?= operator' },
        @{ Code = '${a}?.Length'; Expected = '\?\. member' },
        @{ Code = '${a}?.Trim()'; Expected = '\?\. member' },
        @{ Code = '${a}?[0]'; Expected = '\?\[\] index' },
        @{ Code = 'git status && git log'; Expected = 'pipeline chain' },
        @{ Code = 'git status || exit 1'; Expected = 'pipeline chain' },
        @{ Code = 'Start-Sleep 1 &'; Expected = 'background' },
        @{ Code = 'function f { process { 1 } clean { 2 } }'; Expected = 'clean \{\} block' },
        @{ Code = '"`u{2713}"'; Expected = 'u\{\.\.\.\} escape' },
        @{ Code = 'if ($IsWindows) { 1 }'; Expected = 'IsWindows is not defined' },
        @{ Code = '1..3 | ForEach-Object -Parallel { $_ }'; Expected = 'ForEach-Object -Parallel' },
        @{ Code = '1..3 | % -Parallel { $_ }'; Expected = 'ForEach-Object -Parallel' },
        @{ Code = '$x | ConvertFrom-Json -AsHashtable'; Expected = 'ConvertFrom-Json -AsHashtable' },
        @{ Code = '$x | ConvertFrom-Json -Depth 5'; Expected = 'ConvertFrom-Json -Depth' },
        @{ Code = '$x | ConvertTo-Json -EscapeHandling EscapeNonAscii'; Expected = 'ConvertTo-Json -EscapeHandling' },
        @{ Code = 'Join-Path a b c'; Expected = 'Join-Path with more than two' },
        @{ Code = 'Join-Path -Path a -ChildPath b -AdditionalChildPath c'; Expected = 'Join-Path -AdditionalChildPath' },
        @{ Code = 'Get-Error'; Expected = 'Get-Error is not in 5.1' },
        @{ Code = 'Test-Json -Json $x'; Expected = 'Test-Json is not in 5.1' },
        @{ Code = 'Invoke-RestMethod -Uri $u -SkipCertificateCheck'; Expected = 'Invoke-RestMethod -SkipCertificateCheck' },
        @{ Code = 'Start-Process pwsh -Environment @{ A = 1 }'; Expected = 'Start-Process -Environment' },
        @{ Code = 'Set-Content -Path f -Value v -Encoding utf8NoBOM'; Expected = 'Encoding utf8NoBOM' },
        @{ Code = 'Split-Path -LeafBase $p'; Expected = 'Split-Path -LeafBase' }
    ) {
        param($Code, $Expected)
        $found = @(Find-NotWindowsPowerShellCode -Code $Code)
        $found | Should -Not -BeNullOrEmpty
        if ($PSVersionTable.PSVersion.Major -ge 7) {
            # 5.1's own parser refuses the new syntax outright: a parse error is the finding there.
            ($found -join "`n") | Should -Match $Expected
        }
    }

    It 'the check lets 5.1 code through: <Code>' -TestCases @(
        @{ Code = 'if ($a) { 1 } else { 2 }' },
        @{ Code = 'Join-Path -Path $PSScriptRoot -ChildPath proxy.py' },
        @{ Code = 'Join-Path $a b' },
        @{ Code = '$x | ConvertTo-Json -Depth 5' },
        @{ Code = '1..3 | ForEach-Object { $_ }' },
        @{ Code = 'Set-Content -Path f -Value v -Encoding UTF8' },
        @{ Code = '$a.Length; $a[0]; $a -and $b' }
    ) {
        param($Code)
        @(Find-NotWindowsPowerShellCode -Code $Code) | Should -BeNullOrEmpty
    }
}
