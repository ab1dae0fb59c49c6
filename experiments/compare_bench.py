"""Check that two bench outputs record the same behaviour: bench.json without its wall-time
fields, and every study's ledger (plans, runs, decisions, steps, episodes) without the
fields that hold a clock time or a wall-clock duration, and the code hash (which names the
code version, and so differs by design).

    python experiments/compare_bench.py BEFORE_DIR AFTER_DIR

The bench is deterministic given its seeds, so a refactor that keeps the engine's behaviour
gives identical records; each study's first difference is printed and the exit status is 1.
Versions before the interaction columns were added in name order (beliefs.model) depended on
the process's string-hash seed in the 12th digit: compare those with PYTHONHASHSEED=0 set for
both runs.
A plan's `proposed` list is compared as missing = empty (older ledgers left it out of
baseline plans).
"""
from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

IGNORED_KEYS = {"wall_seconds", "seconds", "started", "finished", "created", "presented",
                "last_presented", "code_hash"}
TABLES = {"plans": "step", "runs": "step, slot", "decisions": "step, id", "steps": "step",
          "episodes": "id"}


def strip(value):
    """The value without the ignored fields, with JSON columns decoded."""
    if isinstance(value, dict):
        value = {k: strip(v) for k, v in value.items() if k not in IGNORED_KEYS}
        if "kind" in value and "n_runs" in value and "reason" in value:  # a plan
            value.setdefault("proposed", [])
        return value
    if isinstance(value, list):
        return [strip(v) for v in value]
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return strip(json.loads(value))
        except json.JSONDecodeError:
            return value
    return value


def ledger_records(path: Path) -> dict[str, list]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    connection.row_factory = sqlite3.Row
    tables = {row[0] for row in
              connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    records = {}
    for table, order in TABLES.items():
        if table in tables:
            rows = connection.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
            records[table] = [strip({k: row[k] for k in row.keys() if k != "id"}) for row in rows]
    connection.close()
    return records


def first_difference(a, b, where: str = "") -> str | None:
    if type(a) is not type(b):
        return f"{where}: {a!r} != {b!r}"
    if isinstance(a, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{where}.{key}: only in {'after' if key in b else 'before'}"
            found = first_difference(a[key], b[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{where}: {a!r} != {b!r}"


def compare(before: Path, after: Path) -> list[str]:
    problems = []
    bench = [strip(json.loads((d / "bench.json").read_text())) for d in (before, after)]
    for part in bench:
        part.pop("bench", None)  # the bench's own settings hold its out_dir
    found = first_difference(*bench, "bench.json")
    if found:
        problems.append(found)
    dbs = [sorted(p.relative_to(d) for d in (root,) for p in d.rglob("study.db"))
           for root in (before, after)]
    if dbs[0] != dbs[1]:
        problems.append(f"different study folders: {len(dbs[0])} before, {len(dbs[1])} after")
    for relative in dbs[0]:
        if relative in dbs[1]:
            found = first_difference(ledger_records(before / relative),
                                     ledger_records(after / relative), str(relative))
            if found:
                problems.append(found)
    print(f"compared bench.json and {len(dbs[0])} study ledgers")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    problems = compare(Path(argv[0]), Path(argv[1]))
    for problem in problems:
        print(f"DIFFERENT {problem}")
    print("identical" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
