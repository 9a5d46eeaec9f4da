# bash completion for tunneld(8)                                   -*- shell-script -*-

_tunneld()
{
        # shellcheck disable=SC2034 # words, cword: set by _init_completion, unused here
        local cur prev words cword split=false
        if declare -F _init_completion >/dev/null; then
                _init_completion -s || return
        else
                cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
        fi

        case $prev in
        -c | --config)
                # configuration files: *.conf, and directories to walk into
                mapfile -t COMPREPLY < <(compgen -d -- "$cur"; compgen -f -X '!*.conf' -- "$cur")
                compopt -o filenames 2>/dev/null
                return
                ;;
        -s | --control-socket)
                mapfile -t COMPREPLY < <(compgen -f -- "$cur"; compgen -W none -- "$cur")
                compopt -o filenames 2>/dev/null
                return
                ;;
        --keyscan)
                return  # a tunnel name of the configuration
                ;;
        -h | --help | -V | --version)
                return
                ;;
        esac
        $split && return
        local w
        for w in "${COMP_WORDS[@]}"; do
                if [[ $w == --import-autossh && $cur != -* ]]; then
                        # autossh command line files and systemd units
                        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
                        compopt -o filenames 2>/dev/null
                        return
                fi
        done

        mapfile -t COMPREPLY < <(compgen -W "-c --config -s --control-socket -t --check -v --verbose
                -d --debug --allow-insecure-config --import-autossh --keyscan -h --help -V --version" -- "$cur")
} &&
        complete -F _tunneld tunneld

# ex: filetype=sh
