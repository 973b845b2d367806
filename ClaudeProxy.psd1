@{
    RootModule           = 'ClaudeProxy.psm1'
    ModuleVersion        = '0.1.0'
    GUID                 = '6f0c3b7e-2d7a-4f0e-9a52-8e3c1b9d4a61'
    Author               = 'claude-proxy contributors'
    Copyright            = '(c) claude-proxy contributors'
    Description          = 'Session commands for claude-proxy, a local failover proxy for Anthropic-compatible APIs: claude-fb, claude-switch, claude-status, claude-reset.'
    PowerShellVersion    = '5.1'
    CompatiblePSEditions = @('Desktop', 'Core')
    FunctionsToExport    = @('Enable-ClaudeProxy', 'Switch-ClaudeProvider', 'Get-ClaudeProxyStatus', 'Reset-ClaudeProxy', 'Disable-ClaudeProxyProvider', 'Enable-ClaudeProxyProvider', 'Suspend-ClaudeProxyProvider', 'Resume-ClaudeProxyProvider')
    AliasesToExport      = @('claude-fb', 'claude-switch', 'claude-status', 'claude-reset')
    CmdletsToExport      = @()
    VariablesToExport    = @()
    PrivateData          = @{
        PSData = @{
            Tags = @('Claude', 'Anthropic', 'proxy', 'failover')
        }
    }
}
