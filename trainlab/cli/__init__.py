"""Command line: the only place argv is read. One thin function per subcommand calls downward.

Options and `key=value` overrides may come in any order (`trainlab eval RUN --split val
data.root=X` and `trainlab eval RUN data.root=X --split val` are the same). Every argument
error is a one-paragraph `trainlab: error:` with exit code 2, like every other user mistake.

The commands import their modules when they run: torch and matplotlib take seconds to load,
and `trainlab --help` or `trainlab status` should not wait for them (start-up time).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainlab.cli.commands import split_recipe
from trainlab.cli.parser import Parser, build_parser
from trainlab.errors import Interrupted, TrainlabError

__all__ = ["build_parser", "main", "parse", "split_recipe"]


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse argv; `key=value` overrides may follow options (`eval RUN --split val a=b`):
    argparse leaves them over, and they join the subcommand's overrides."""
    parser = build_parser()
    ns, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if e.startswith("-") or not hasattr(ns, "rest")]
    if unknown:
        sub = " ".join(v for v in (ns.command, getattr(ns, "config_command", None),
                                   getattr(ns, "data_command", None)) if v)
        Parser(prog=f"trainlab {sub}").error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        setattr(ns, ns.rest, [*getattr(ns, ns.rest), *extra])
    _path_first(ns)
    return ns


def _path_first(ns: argparse.Namespace) -> None:
    """`eval optim.x=1 RUN`: argparse takes the first word for RUN; when that word is a
    key=value that names no file and a later word has no '=', the two trade places (a run
    folder may contain '=': sweep points, so an existing path is left alone)."""
    path, rest = getattr(ns, "path", None), getattr(ns, "rest", None)
    if not isinstance(path, str) or rest != "overrides" or "=" not in path or Path(path).exists():
        return
    words = list(ns.overrides)
    plain = next((i for i, w in enumerate(words) if "=" not in w), None)
    if plain is None:
        Parser(prog=f"trainlab {ns.command}").error(
            f"'{path}' is no file or folder, and it looks like a key=value override: give the "
            f"run folder or checkpoint too, e.g. `trainlab {ns.command} runs/NAME {path}`")
    ns.path = words.pop(plain)
    ns.overrides = [path, *words]


def main(argv: list[str] | None = None) -> int:
    code = _main(argv)
    setup = sys.modules.get("trainlab.dist.setup")  # loaded only if the command trained
    if setup is not None:
        setup.exit_process_of_a_group(code)  # a rank of a process group ends here, at once
    return code


def _main(argv: list[str] | None) -> int:
    try:
        ns = parse(argv)
    except SystemExit as e:  # --help (0) or an argument error (2, message printed)
        return int(e.code or 0)
    try:
        return ns.func(ns)
    except TrainlabError as e:
        prefix = "trainlab: " if isinstance(e, Interrupted) else "trainlab: error: "
        print(prefix + str(e), file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        print("trainlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
