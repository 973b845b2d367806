# claude-proxy.fish: the claude-proxy session commands for fish.
#
# Source it from ~/.config/fish/config.fish:
#
#     source ~/.claude-proxy/claude-proxy.fish
#
# then, in any fish session:
#
#     claude-fb                  this session goes through the proxy, with failover
#     claude-switch moonshot     this session is pinned to one provider (Tab completes)
#     claude-status              this session's mode and the proxy's state
#     claude-status --watch      the same, live, full screen (q quits)
#     claude-reset               restore this session's previous ANTHROPIC_* values, and
#                                stop the proxy unless another shell session still uses
#                                it (--keep-running leaves it up in any case)
#
# Everything is decided by `proxy.py` (start, env, status, top, release, providers);
# these functions only remember and restore the session's own variables, as
# claude-proxy.sh does for bash and zsh.  What is remembered is the session's
# global scope: each variable's value (a list, as fish has it), whether it is
# exported (set -gx) or not (set -g), or that it was not set.  Universal
# variables (set -U) are shared by every fish session and kept on disk, so they
# are never changed: a universal ANTHROPIC_API_KEY is hidden from this session
# behind an empty global one, because fish cannot unset it for one session only.
# Python is $CLAUDE_PROXY_PYTHON, else the first of python3 and python that is 3.10+.

# Where this file really is (through symlinks), so proxy.py is found beside it.
set -g __claude_proxy_dir (string replace -r '/[^/]*$' '' -- (builtin realpath (status --current-filename)))
# The variables `proxy.py env` sets or clears.
set -g __claude_proxy_variables ANTHROPIC_BASE_URL ANTHROPIC_AUTH_TOKEN ANTHROPIC_API_KEY

# Print the major.minor of the Python $argv[1]; true if it is 3.10 or newer.
function __claude_proxy_python_ok
    command $argv[1] -c 'import sys; print("%d.%d" % sys.version_info[:2]); sys.exit(sys.version_info < (3, 10))' 2>/dev/null
end

# Find the Python that runs proxy.py into $__claude_proxy_python: $CLAUDE_PROXY_PYTHON
# if set, else the first of python3 and python that is 3.10 or newer.  The answer
# is kept for this session while CLAUDE_PROXY_PYTHON and PATH stay the same and the
# program is still there, so a change to either is seen at the next command.
function __claude_proxy_find_python
    set -l key "$CLAUDE_PROXY_PYTHON|$PATH"
    if test -n "$__claude_proxy_python"; and test "$__claude_proxy_python_for" = "$key"
        and command -q -- $__claude_proxy_python
        return 0
    end
    set -g __claude_proxy_python
    set -g __claude_proxy_python_for
    set -l reported
    if test -n "$CLAUDE_PROXY_PYTHON"
        if not command -q -- $CLAUDE_PROXY_PYTHON
            echo "claude-proxy: CLAUDE_PROXY_PYTHON is $CLAUDE_PROXY_PYTHON, which is not a program; fix or unset it" >&2
            return 127
        end
        if not set reported (__claude_proxy_python_ok $CLAUDE_PROXY_PYTHON)
            test -n "$reported"; or set reported "of an unknown version"
            echo "claude-proxy: CLAUDE_PROXY_PYTHON is $CLAUDE_PROXY_PYTHON, which is Python $reported; claude-proxy needs 3.10 or newer: fix or unset it" >&2
            return 127
        end
        set -g __claude_proxy_python $CLAUDE_PROXY_PYTHON
    else
        set -l tried
        for candidate in python3 python
            command -q $candidate; or continue
            if set reported (__claude_proxy_python_ok $candidate)
                set -g __claude_proxy_python $candidate
                break
            end
            test -n "$reported"; or set reported "not a working Python"
            set -a tried "$candidate is $reported"
        end
        if test -z "$__claude_proxy_python"
            set -q tried[1]; and set tried " ("(string join ', ' -- $tried)")"
            echo "claude-proxy: Python 3.10 or newer was not found$tried; install it, or set CLAUDE_PROXY_PYTHON to its path" >&2
            return 127
        end
    end
    set -g __claude_proxy_python_for $key
end

# Run proxy.py with the arguments given.
function __claude_proxy
    __claude_proxy_find_python; or return
    if not test -f "$__claude_proxy_dir/proxy.py"
        echo "claude-proxy: proxy.py is not beside claude-proxy.fish in $__claude_proxy_dir; source the file from the repository" >&2
        return 1
    end
    command $__claude_proxy_python "$__claude_proxy_dir/proxy.py" $argv
end

# Remember the session's variables, once: a second claude-fb or claude-switch
# keeps what the session had before the first.
function __claude_proxy_save
    set -q __claude_proxy_saved; and return 0
    for name in $__claude_proxy_variables
        set -l old __claude_proxy_old_$name
        set -l how __claude_proxy_how_$name
        if set -q -g $name
            set -g $old $$name
            if set -q -g -x $name
                set -g $how export
            else
                set -g $how global
            end
        else
            set -g $how unset
            set -e -g $old
        end
    end
    set -g __claude_proxy_saved 1
end

# Put back exactly what __claude_proxy_save remembered: values, unset variables,
# and whether each was exported.  Returns 1 if nothing was saved.
function __claude_proxy_restore
    set -q __claude_proxy_saved; or return 1
    for name in $__claude_proxy_variables
        set -l old __claude_proxy_old_$name
        set -l how __claude_proxy_how_$name
        set -e -g $name
        switch "$$how"
            case export
                set -g -x $name $$old
            case global
                set -g -u $name $$old
        end
        set -e -g $old
        set -e -g $how
    end
    set -e -g __claude_proxy_saved
    return 0
end

# Start the proxy if needed and point this session at it ($argv[1]: a provider to pin).
# The routing strategies proxy.py knows (`proxy.py env --help`).
set -g __claude_proxy_strategies fallback round_robin weighted random fastest

# Start the proxy if needed and point this session at it
# (argv[1]: a provider to pin, or empty; argv[2]: a strategy, or empty).
function __claude_proxy_use
    set -l pin
    if test -n "$argv[1]"
        # An unknown provider name is an error before anything is started.
        __claude_proxy providers -- $argv[1] >/dev/null; or return
        set pin --provider $argv[1]
    else if test -n "$argv[2]"
        set pin --strategy $argv[2]
    end
    __claude_proxy start --quiet; or return
    set -l settings (__claude_proxy env --shell fish $pin --session $fish_pid --announce); or return
    __claude_proxy_save
    for name in $__claude_proxy_variables
        # `set -e NAME` in the settings erases the innermost NAME: with no global one,
        # that would be a universal variable, in every fish session and for good.
        if set -q -U $name; and not set -q -g $name
            set -g -x $name
        end
    end
    string join \n -- $settings | source
    for name in $__claude_proxy_variables
        # Erased above, but a universal one would still reach programs started here.
        if set -q -U -x $name; and not set -q -g $name
            set -g -x $name ''
        end
    end
end

function claude-fb --description 'This fish session goes through claude-proxy, with failover'
    set -l strategy
    if test (count $argv) -eq 2; and test "$argv[1]" = --strategy
        set strategy $argv[2]
    else if test (count $argv) -eq 1; and string match -q -- '--strategy=*' $argv[1]
        set strategy (string replace -- '--strategy=' '' $argv[1])
    else if set -q argv[1]
        set strategy - # anything else: the usage below
    end
    if test -n "$strategy"; and not contains -- $strategy $__claude_proxy_strategies
        echo "usage: claude-fb [--strategy NAME]   (this session goes through claude-proxy, with failover; NAME:" (string join ', ' $__claude_proxy_strategies)")" >&2
        return 2
    end
    __claude_proxy_use '' "$strategy"
end

function claude-switch --description 'Pin this fish session to one claude-proxy provider'
    if test (count $argv) -ne 1; or test -z "$argv[1]"
        set -l names (string join ' ' -- (__claude_proxy providers 2>/dev/null))
        if test -n "$names"
            echo "usage: claude-switch PROVIDER   (one of: $names)" >&2
        else
            echo "usage: claude-switch PROVIDER   (no providers: see python proxy.py check)" >&2
        end
        return 2
    end
    __claude_proxy_use $argv[1]
end

# claude-status --watch: `proxy.py top`, live and full screen (one snapshot when the
# output is not a terminal); anything else goes to `proxy.py status`.
function claude-status --description "This session's claude-proxy mode and the proxy's state"
    if test "$argv[1]" = --watch
        set -e argv[1]
        __claude_proxy top $argv
        return
    end
    __claude_proxy status $argv
end

function claude-reset --description "Restore this session's ANTHROPIC_* variables; stop claude-proxy if no other session uses it"
    set -l keep
    switch (count $argv)
        case 0
        case 1
            switch $argv[1]
                case --keep-running -k
                    set keep --keep-running
                case '*'
                    echo "usage: claude-reset [--keep-running]" >&2
                    return 2
            end
        case '*'
            echo "usage: claude-reset [--keep-running]" >&2
            return 2
    end
    if not __claude_proxy_restore
        echo "claude-reset: this session was not using the proxy; nothing to restore, and the proxy is left as it is"
        return 0
    end
    echo "claude-reset: this session's ANTHROPIC_* variables are back as they were"
    # Stops the proxy unless another live shell session still uses it.
    __claude_proxy release --session $fish_pid $keep
end

# Tab completion: provider names for claude-switch, the option of claude-reset.
# Runtime control of the running proxy, and any other proxy.py command:
#     claude-proxy disable minimax --for 30m    claude-proxy uncool
function claude-proxy --description 'Run a proxy.py command (disable, enable, cool, uncool, usage, ...)'
    __claude_proxy $argv
end

complete -c claude-proxy -f
complete -c claude-proxy -n 'test (count (commandline -opc)) -eq 1' -a 'disable enable cool uncool status top usage check validate providers'
complete -c claude-proxy -n 'test (count (commandline -opc)) -eq 2; and contains -- (commandline -opc)[2] disable enable cool uncool' -a '(__claude_proxy providers 2>/dev/null)'
complete -c claude-switch -f
complete -c claude-switch -n 'test (count (commandline -opc)) -eq 1' -a '(__claude_proxy providers 2>/dev/null)'
complete -c claude-fb -f
complete -c claude-status -f -l watch -d 'live, full screen (proxy.py top)'
complete -c claude-reset -f -s k -l keep-running -d 'leave the proxy running'
