package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// The bash and zsh scripts ask casfs itself for the candidates: urfave/cli
// answers a command line ending in --generate-bash-completion with the
// subcommands (or, after a "-", the flags) that can come next.
const bashCompletion = `# casfs completion for bash: source it, or put it in /etc/bash_completion.d/casfs
_casfs() {
	local cur="${COMP_WORDS[COMP_CWORD]}"
	local prev=("${COMP_WORDS[@]:1:COMP_CWORD-1}")
	local words
	if [[ "$cur" == -* ]]; then
		words=$(casfs "${prev[@]}" "$cur" --generate-bash-completion 2>/dev/null)
	else
		words=$(casfs "${prev[@]}" --generate-bash-completion 2>/dev/null)
	fi
	COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o bashdefault -o default -F _casfs casfs
`

const zshCompletion = `#compdef casfs
# casfs completion for zsh: put it on $fpath as _casfs, or source it
_casfs() {
	local -a cands
	local cur="${words[CURRENT]}"
	local -a prev=("${(@)words[2,CURRENT-1]}")
	if [[ "$cur" == -* ]]; then
		cands=("${(@f)$(_CLI_ZSH_AUTOCOMPLETE_HACK=1 casfs "${prev[@]}" "$cur" --generate-bash-completion 2>/dev/null)}")
	else
		cands=("${(@f)$(_CLI_ZSH_AUTOCOMPLETE_HACK=1 casfs "${prev[@]}" --generate-bash-completion 2>/dev/null)}")
	fi
	if [[ -n "${cands[1]}" ]]; then
		_describe 'casfs' cands
	else
		_files
	fi
}
if [[ "$funcstack[1]" == "_casfs" ]]; then
	_casfs "$@"
else
	compdef _casfs casfs
fi
`

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script: bash, zsh or fish",
		ArgsUsage: "bash|zsh|fish",
		Action: func(c *cli.Context) error {
			if err := wantArgs(c, 1, 1); err != nil {
				return err
			}
			switch sh := c.Args().First(); sh {
			case "bash":
				_, err := fmt.Fprint(c.App.Writer, bashCompletion)
				return err
			case "zsh":
				_, err := fmt.Fprint(c.App.Writer, zshCompletion)
				return err
			case "fish":
				script, err := c.App.ToFishCompletion()
				if err != nil {
					return err
				}
				_, err = fmt.Fprint(c.App.Writer, script)
				return err
			default:
				return usagef("completion: unknown shell %q: want bash, zsh or fish", sh)
			}
		},
	}
}
