# bash completion for tunnelctl(1)                                 -*- shell-script -*-
# Commands, options, and the tunnel names of the running tunneld (asked with
# `tunnelctl --json status` on the socket given with -s, if any); when tunneld does not
# answer, names are simply not offered.

_tunnelctl_tunnels()
{
        local socket=$1 pid=$2 reply
        local -a cmd=(tunnelctl)
        [[ -n $socket ]] && cmd+=(-s "$socket")
        [[ -n $pid ]] && cmd+=(--pid "$pid")
        if type -P timeout >/dev/null; then
                reply=$(timeout 2 "${cmd[@]}" --json --color=never status 2>/dev/null)
        else
                reply=$("${cmd[@]}" --json --color=never status 2>/dev/null)
        fi
        # Tunnel names are [A-Za-z0-9_.-]: no JSON escapes to undo.
        local re='"name":"([A-Za-z0-9_.-]+)"'
        while [[ $reply =~ $re ]]; do
                printf '%s\n' "${BASH_REMATCH[1]}"
                reply=${reply#*"${BASH_REMATCH[0]}"}
        done
}

_tunnelctl()
{
        local cur prev words cword split=false
        if declare -F _init_completion >/dev/null; then
                _init_completion -s || return
        else
                cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
                words=("${COMP_WORDS[@]}") cword=$COMP_CWORD
        fi

        local commands="status start stop restart wait events reload check metrics"
        local options="-s --socket -p --pid -j --json -l --long -t --timeout --color= -h --help -V --version"

        case $prev in
        -s | --socket)
                mapfile -t COMPREPLY < <(compgen -f -- "$cur")
                compopt -o filenames 2>/dev/null
                return
                ;;
        --color)
                mapfile -t COMPREPLY < <(compgen -W "auto always never" -- "$cur")
                return
                ;;
        -p | --pid)
                mapfile -t COMPREPLY < <(compgen -W "$(pgrep -x tunneld 2>/dev/null)" -- "$cur")
                return
                ;;
        -t | --timeout)
                return
                ;;
        -h | --help | -V | --version)
                return
                ;;
        esac
        $split && return

        # The command, and the socket, among the words before the cursor.
        local i command="" socket="" pid=""
        for ((i = 1; i < cword; i++)); do
                case ${words[i]} in
                -s | --socket) socket=${words[i + 1]}; ((i++)) ;;
                --socket=*) socket=${words[i]#--socket=} ;;
                -p | --pid) pid=${words[i + 1]}; ((i++)) ;;
                -t | --timeout) ((i++)) ;;
                --pid=*) pid=${words[i]#--pid=} ;;
                -*) ;;
                *) [[ -z $command ]] && command=${words[i]} ;;
                esac
        done
        # ~ in a path typed on the line
        [[ $socket == "~"* ]] && socket=${socket/#\~/$HOME}

        if [[ -z $command ]]; then
                if [[ $cur == -* ]]; then
                        mapfile -t COMPREPLY < <(compgen -W "$options" -- "$cur")
                        [[ ${COMPREPLY-} == *= ]] && compopt -o nospace 2>/dev/null
                else
                        mapfile -t COMPREPLY < <(compgen -W "$commands" -- "$cur")
                fi
                return
        fi

        case $command in
        status | wait | events)
                if [[ $cur == -* ]]; then
                        mapfile -t COMPREPLY < <(compgen -W "$options" -- "$cur")
                else
                        mapfile -t COMPREPLY < <(compgen -W "$(_tunnelctl_tunnels "$socket" "$pid")" -- "$cur")
                fi
                ;;
        start | stop | restart)
                if [[ $cur == -* ]]; then
                        mapfile -t COMPREPLY < <(compgen -W "--all $options" -- "$cur")
                else
                        mapfile -t COMPREPLY < <(compgen -W "$(_tunnelctl_tunnels "$socket" "$pid")" -- "$cur")
                fi
                ;;
        reload | check | metrics)
                [[ $cur == -* ]] && mapfile -t COMPREPLY < <(compgen -W "$options" -- "$cur")
                ;;
        esac
} &&
        complete -F _tunnelctl tunnelctl

# ex: filetype=sh
