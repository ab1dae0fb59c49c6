"""The `engine` console script: `engine study CONFIG ...`, `engine show STUDY_DIR ...` and
`engine bench BENCH ...`, the same commands as `python -m engine.study`, `engine.show` and
`engine.bench`, runnable without activating the virtualenv (`.venv/bin/engine`)."""

from __future__ import annotations

import sys

COMMANDS = ("study", "show", "bench")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: engine {{{','.join(COMMANDS)}}} ...  (engine <command> --help for more)",
              file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "study":
        from engine.study import main as study

        return study(argv[1:], invoked_as=f"{sys.argv[0]} study")  # its resume hint repeats it
    if argv[0] == "show":
        from engine.show import main as show

        return show(argv[1:])
    from engine.bench import main as bench

    return bench(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
