# shellcheck shell=bash
# claude-proxy.sh: the claude-proxy session commands for bash and zsh.
#
# Source it from ~/.bashrc or ~/.zshrc:
#
#     source ~/.claude-proxy/claude-proxy.sh
#
# then, in any shell session:
#
#     claude-fb                  this session goes through the proxy, with failover
#     claude-switch moonshot     this session is pinned to one provider (Tab completes)
#     claude-status              this session's mode and the proxy's state
#     claude-status --watch      the same, live, full screen (q quits)
#     claude-reset               restore this session's previous ANTHROPIC_* values, and
#                                stop the proxy unless another shell session still uses
#                                it (--keep-running leaves it up in any case)
#
# Everything is decided by `proxy.py` (start, env, status, top, stop, providers);
# these functions only remember and restore the session's own variables.
# Python is $CLAUDE_PROXY_PYTHON, else the first of python3 and python that is 3.10+.

# Where this file is, so proxy.py is found wherever the repository is cloned.
# (bash: BASH_SOURCE; zsh: the %x prompt escape, the file being sourced.)
if [ -n "${ZSH_VERSION:-}" ]; then
    eval '_claude_proxy_src=${(%):-%x}'
else
    _claude_proxy_src=${BASH_SOURCE[0]:-$0}
fi
case $_claude_proxy_src in
    */*) _claude_proxy_dir=${_claude_proxy_src%/*} ;;
    *) _claude_proxy_dir=. ;;
esac
case $_claude_proxy_dir in
    /*) ;;
    *) _claude_proxy_dir=$PWD/$_claude_proxy_dir ;;
esac
unset _claude_proxy_src

# Print the major.minor of the Python $1; true if it is 3.10 or newer.
_claude_proxy_python_ok() {
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2]); sys.exit(sys.version_info < (3, 10))' 2>/dev/null
}

# Find the Python that runs proxy.py into $_claude_proxy_python: $CLAUDE_PROXY_PYTHON
# if set, else the first of python3 and python that is 3.10 or newer.  The answer
# is kept for this shell while CLAUDE_PROXY_PYTHON and PATH stay the same and the
# program is still there, so a change to either is seen at the next command.
_claude_proxy_find_python() {
    local key="${CLAUDE_PROXY_PYTHON:-}|$PATH" candidate version tried=
    if [ -n "${_claude_proxy_python:-}" ] && [ "${_claude_proxy_python_for:-}" = "$key" ] \
        && command -v "$_claude_proxy_python" >/dev/null 2>&1; then
        return 0
    fi
    _claude_proxy_python=
    _claude_proxy_python_for=
    if [ -n "${CLAUDE_PROXY_PYTHON:-}" ]; then
        if ! command -v "$CLAUDE_PROXY_PYTHON" >/dev/null 2>&1; then
            echo "claude-proxy: CLAUDE_PROXY_PYTHON is $CLAUDE_PROXY_PYTHON, which is not a program; fix or unset it" >&2
            return 127
        fi
        if ! version=$(_claude_proxy_python_ok "$CLAUDE_PROXY_PYTHON"); then
            echo "claude-proxy: CLAUDE_PROXY_PYTHON is $CLAUDE_PROXY_PYTHON, which is Python ${version:-of an unknown version}; claude-proxy needs 3.10 or newer: fix or unset it" >&2
            return 127
        fi
        _claude_proxy_python=$CLAUDE_PROXY_PYTHON
    else
        for candidate in python3 python; do
            command -v "$candidate" >/dev/null 2>&1 || continue
            if version=$(_claude_proxy_python_ok "$candidate"); then
                _claude_proxy_python=$candidate
                break
            fi
            tried="$tried${tried:+, }$candidate is ${version:-not a working Python}"
        done
        if [ -z "$_claude_proxy_python" ]; then
            echo "claude-proxy: Python 3.10 or newer was not found${tried:+ ($tried)}; install it, or set CLAUDE_PROXY_PYTHON to its path" >&2
            return 127
        fi
    fi
    _claude_proxy_python_for=$key
}

# Run proxy.py with the arguments given.
_claude_proxy() {
    _claude_proxy_find_python || return
    if [ ! -f "$_claude_proxy_dir/proxy.py" ]; then
        echo "claude-proxy: proxy.py is not beside claude-proxy.sh in $_claude_proxy_dir; source the file from the repository" >&2
        return 1
    fi
    "$_claude_proxy_python" "$_claude_proxy_dir/proxy.py" "$@"
}

# True if the variable named $1 is exported (not just a shell variable).
_claude_proxy_exported() {
    if [ -n "${ZSH_VERSION:-}" ]; then
        # zsh syntax, kept from bash's parser: ${(tP)1} is the type of the variable named by $1.
        eval 'case ${(tP)1} in *export*) return 0 ;; esac'
        return 1
    fi
    local flags
    flags=$(declare -p "$1" 2>/dev/null) || return 1
    flags=${flags#declare -}
    flags=${flags%% *}
    case $flags in *x*) return 0 ;; esac
    return 1
}

# Remember the session's variables, once: a second claude-fb or claude-switch
# keeps what the session had before the first.
_claude_proxy_save() {
    [ -n "${_CLAUDE_PROXY_SAVED:-}" ] && return 0
    local name
    for name in ANTHROPIC_BASE_URL ANTHROPIC_AUTH_TOKEN ANTHROPIC_API_KEY; do
        if eval "[ -n \"\${$name+set}\" ]"; then
            eval "_CLAUDE_PROXY_OLD_$name=\$$name"
            if _claude_proxy_exported "$name"; then
                eval "_CLAUDE_PROXY_HOW_$name=export"
            else
                eval "_CLAUDE_PROXY_HOW_$name=local"
            fi
        else
            eval "_CLAUDE_PROXY_HOW_$name=unset"
            unset "_CLAUDE_PROXY_OLD_$name"
        fi
    done
    _CLAUDE_PROXY_SAVED=1
}

# Put back exactly what _claude_proxy_save remembered: values, unset
# variables, and whether each was exported.  Returns 1 if nothing was saved.
_claude_proxy_restore() {
    [ -n "${_CLAUDE_PROXY_SAVED:-}" ] || return 1
    local name how
    for name in ANTHROPIC_BASE_URL ANTHROPIC_AUTH_TOKEN ANTHROPIC_API_KEY; do
        eval "how=\${_CLAUDE_PROXY_HOW_$name:-unset}"
        case $how in
            export)
                eval "export $name=\"\$_CLAUDE_PROXY_OLD_$name\""
                ;;
            local)
                unset "$name"
                eval "$name=\"\$_CLAUDE_PROXY_OLD_$name\""
                ;;
            *)
                unset "$name"
                ;;
        esac
        unset "_CLAUDE_PROXY_OLD_$name" "_CLAUDE_PROXY_HOW_$name"
    done
    unset _CLAUDE_PROXY_SAVED
    return 0
}

# Start the proxy if needed and point this session at it ($1: a provider to pin, or empty).
# The routing strategies proxy.py knows (`proxy.py env --help`).
_claude_proxy_strategies="fallback round_robin weighted random fastest"

# Start the proxy if needed and point this session at it
# ($1: a provider to pin, or empty; $2: a strategy, or empty).
_claude_proxy_use() {
    local shell=bash settings
    [ -n "${ZSH_VERSION:-}" ] && shell=zsh
    # An unknown provider name is an error before anything is started.
    if [ -n "$1" ]; then
        _claude_proxy providers -- "$1" >/dev/null || return
    fi
    _claude_proxy start --quiet || return
    if [ -n "$1" ]; then
        settings=$(_claude_proxy env --shell "$shell" --provider "$1" --session $$ --announce) || return
    elif [ -n "${2:-}" ]; then
        settings=$(_claude_proxy env --shell "$shell" --strategy "$2" --session $$ --announce) || return
    else
        settings=$(_claude_proxy env --shell "$shell" --session $$ --announce) || return
    fi
    _claude_proxy_save
    eval "$settings"
}

claude-fb() {
    local strategy=
    if [ $# -eq 2 ] && [ "$1" = --strategy ]; then
        strategy=$2
    elif [ $# -eq 1 ] && [ "${1#--strategy=}" != "$1" ]; then
        strategy=${1#--strategy=}
    elif [ $# -ne 0 ]; then
        strategy=-  # anything else: the usage below
    fi
    if [ -n "$strategy" ]; then
        case " $_claude_proxy_strategies " in
            *" $strategy "*) ;;
            *)
                echo "usage: claude-fb [--strategy NAME]   (this session goes through claude-proxy, with failover; NAME: ${_claude_proxy_strategies// /, })" >&2
                return 2
                ;;
        esac
    fi
    _claude_proxy_use "" "$strategy"
}

claude-switch() {
    if [ $# -ne 1 ] || [ -z "$1" ]; then
        local names
        names=$(_claude_proxy providers 2>/dev/null)
        names=${names//$'\n'/ }
        echo "usage: claude-switch PROVIDER   (${names:+one of: }${names:-no providers: see python proxy.py check})" >&2
        return 2
    fi
    _claude_proxy_use "$1"
}

# claude-status --watch: `proxy.py top`, live and full screen (one snapshot when the
# output is not a terminal); anything else goes to `proxy.py status`.
claude-status() {
    if [ "${1:-}" = --watch ]; then
        shift
        _claude_proxy top "$@"
        return
    fi
    _claude_proxy status "$@"
}

claude-reset() {
    local keep=
    case $# in
        0) ;;
        1)
            case $1 in
                --keep-running|-k) keep=--keep-running ;;
                *) echo "usage: claude-reset [--keep-running]" >&2; return 2 ;;
            esac
            ;;
        *) echo "usage: claude-reset [--keep-running]" >&2; return 2 ;;
    esac
    if ! _claude_proxy_restore; then
        echo "claude-reset: this session was not using the proxy; nothing to restore, and the proxy is left as it is"
        return 0
    fi
    echo "claude-reset: this session's ANTHROPIC_* variables are back as they were"
    # Stops the proxy unless another live shell session still uses it.
    _claude_proxy release --session $$ ${keep:+"$keep"}
}

# Runtime control of the running proxy, and any other proxy.py command:
#     claude-proxy disable minimax --for 30m    claude-proxy enable minimax
#     claude-proxy cool minimax --for 10m       claude-proxy uncool
claude-proxy() {
    _claude_proxy "$@"
}

# Tab completion of provider names for claude-switch (and for claude-proxy's
# disable, enable, cool and uncool).
if [ -n "${ZSH_VERSION:-}" ]; then
    # zsh syntax, kept from bash's parser: one provider name per line of output.
    eval '_claude_proxy_complete_zsh() {
        local -a names
        names=(${(f)"$(_claude_proxy providers 2>/dev/null)"})
        compadd -a names
    }'
    eval '_claude_proxy_complete_control_zsh() {
        if [ "$CURRENT" -eq 2 ]; then
            compadd disable enable cool uncool status top usage check validate providers
        elif [ "$CURRENT" -eq 3 ] && [[ $words[2] == (disable|enable|cool|uncool) ]]; then
            _claude_proxy_complete_zsh
        fi
    }'
    if command -v compdef >/dev/null 2>&1; then
        compdef _claude_proxy_complete_zsh claude-switch
        compdef _claude_proxy_complete_control_zsh claude-proxy
    fi
elif [ -n "${BASH_VERSION:-}" ]; then
    _claude_proxy_complete_bash() {
        local word=${COMP_WORDS[COMP_CWORD]} name
        COMPREPLY=()
        [ "$COMP_CWORD" -eq 1 ] || return 0
        while IFS= read -r name; do
            case $name in "$word"*) COMPREPLY+=("$name") ;; esac
        done < <(_claude_proxy providers 2>/dev/null)
    }
    complete -F _claude_proxy_complete_bash claude-switch
    _claude_proxy_complete_control_bash() {
        local word=${COMP_WORDS[COMP_CWORD]} name
        COMPREPLY=()
        if [ "$COMP_CWORD" -eq 1 ]; then
            for name in disable enable cool uncool status top usage check validate providers; do
                case $name in "$word"*) COMPREPLY+=("$name") ;; esac
            done
        elif [ "$COMP_CWORD" -eq 2 ]; then
            case ${COMP_WORDS[1]} in
                disable|enable|cool|uncool)
                    while IFS= read -r name; do
                        case $name in "$word"*) COMPREPLY+=("$name") ;; esac
                    done < <(_claude_proxy providers 2>/dev/null)
                    ;;
            esac
        fi
    }
    complete -F _claude_proxy_complete_control_bash claude-proxy
fi
