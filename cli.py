"""The senseindex command line: parses arguments, calls one library function, prints the result.

This module is the front door (the console entry point `main`, the click group and its one-line
errors); the commands live in the CLI-only modules `senseindex.cli_build` (build-index, add, delete),
`senseindex.cli_search` (query, senses), `senseindex.cli_maintenance` (info, check, compact) and
`senseindex.cli_serve` (serve). The library never imports any of them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

import senseindex
from senseindex.cli_build import add_command, build_index_command, delete_command
from senseindex.cli_maintenance import check_command, compact_command, info_command
from senseindex.cli_search import change_command, query_command, senses_command
from senseindex.cli_serve import serve_command


class _OneLineErrorGroup(click.Group):
    """A click group whose every error, usage errors included, is one line on stderr and exit 1."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as error:
            if not standalone_mode:
                raise
            hint = ""
            if isinstance(error, click.UsageError) and error.ctx is not None:
                hint = f" (see '{error.ctx.command_path} --help')"
            click.echo(f"Error: {error.format_message()}{hint}", err=True)
            sys.exit(1)
        except click.Abort:
            if not standalone_mode:
                raise
            click.echo("Aborted.", err=True)
            sys.exit(1)


@click.group(cls=_OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(senseindex.__version__, prog_name="senseindex")
def main() -> None:
    """Semantic search over contextual embeddings: words in context, and sentences.

    \b
    Example:
      senseindex build-index data/sample --index sample.idx
      senseindex query --word "I sat on the [bank] of the river" --index sample.idx
      senseindex query "a heron fishing in shallow water" --index sample.idx
    """


for _command in (
    build_index_command,
    add_command,
    delete_command,
    check_command,
    compact_command,
    query_command,
    info_command,
    senses_command,
    change_command,
    serve_command,
):
    main.add_command(_command)


if __name__ == "__main__":
    main()
