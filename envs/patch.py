"""Unified diffs against the trainer's mutable files: parse, check, apply, and diff back.

Only the plain line-edit part of the format is taken: `--- a/path`, `+++ b/path`, then hunks
`@@ -start,count +start,count @@` of context (' '), removed ('-') and added ('+') lines. A
diff that creates, deletes, renames or chmods a file, or carries binary data, is refused: a
hypothesis edits code that exists, and nothing else.

A hunk applies where its old lines (context and removed) match the file exactly, at the line its
header names or, failing that, at the nearest place after the previous hunk where they do. That
is the rebase the engine allows: a patch written against the base still applies on top of a kept
patch that moved its lines, as long as its own context is intact. There is no fuzz: a hunk whose
context was changed does not apply, and the error names the hunk.
"""
from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

HUNK_HEADER = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
NO_NEWLINE = "\\ No newline at end of file"
# Header lines of a diff that does more than edit lines of an existing text file.
REFUSED_HEADERS = ("new file mode", "deleted file mode", "rename from", "rename to", "copy from",
                   "copy to", "old mode", "new mode", "Binary files", "GIT binary patch",
                   "similarity index")


def hiding_character(text: str) -> int | None:
    """The index of the first character that could show a reviewer other code than Python runs,
    or None: a control character but tab, newline and form feed (a terminal escape; a carriage
    return not before a newline, which Python reads as a line break a terminal overwrites), or
    a format or separator character (the bidirectional overrides of "Trojan Source", zero-width
    characters, U+2028)."""
    for index, char in enumerate(text):
        if char in "\t\n\x0c" or (char == "\r" and text[index + 1:index + 2] == "\n"):
            continue
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            return index
    return None


def split_lines(text: str) -> list[str]:
    """`text` cut after each newline, and only there (str.splitlines also cuts at form feeds
    and Unicode line separators, which a diff's lines may hold)."""
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


class PatchError(ValueError):
    """A diff that is malformed, touches what it may not, or does not apply."""


@dataclass(frozen=True)
class Hunk:
    """One hunk: the 1-based line it starts at in the old file, its old and new lines (each
    with its line ending, none on a last line that has no newline)."""

    old_start: int
    old: tuple[str, ...]
    new: tuple[str, ...]
    removed: int = 0  # of the old lines, those the hunk removes (the rest are context)
    added: int = 0

    def header(self) -> str:
        return f"@@ -{self.old_start},{len(self.old)} +{len(self.new)} lines @@"


@dataclass(frozen=True)
class FilePatch:
    path: str
    hunks: tuple[Hunk, ...]


def _strip_prefix(old: str, new: str) -> tuple[str, str]:
    """The paths without git's a/ and b/ prefixes (when both carry them) and any timestamp."""
    old, new = old.split("\t")[0].strip(), new.split("\t")[0].strip()
    if old.startswith("a/") and new.startswith("b/"):
        return old[2:], new[2:]
    return old, new


def check_path(path: str) -> str | None:
    """Why `path` is not a plain relative path inside the trainer's tree, or None."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..")
                                                               for p in parts):
        return f"{path!r} is not a plain relative path (no '/' start, '.', '..' or '\\\\')"
    return None


def parse_diff(text: str) -> tuple[FilePatch, ...]:
    """The file patches of a unified diff, in order; PatchError if it is malformed or does more
    than edit lines of existing files."""
    hidden = hiding_character(text)
    if hidden is not None:
        line = text[:hidden].count("\n") + 1
        raise PatchError(f"line {line}: character {text[hidden]!r}: a patch is plain text (a "
                         "control, format or line-separator character could hide code from "
                         "a reviewer)")
    lines = split_lines(text)
    files: list[FilePatch] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith(REFUSED_HEADERS):
            raise PatchError(f"line {index + 1}: {line.strip()!r}: a patch may only edit lines "
                             "of existing files (no new, deleted, renamed or binary files)")
        if not line.startswith("--- "):
            if line.startswith("@@") or line.startswith("+++ "):
                raise PatchError(f"line {index + 1}: {line.strip()!r} outside a file's header")
            index += 1  # `diff --git`, `index ...` and prose before a file are skipped
            continue
        if index + 1 >= len(lines) or not lines[index + 1].startswith("+++ "):
            raise PatchError(f"line {index + 1}: '---' is not followed by a '+++' line")
        old, new = _strip_prefix(line[4:], lines[index + 1][4:])
        if "/dev/null" in (old, new):
            raise PatchError(f"line {index + 1}: a patch may not create or delete a file")
        if old != new:
            raise PatchError(f"line {index + 1}: {old!r} -> {new!r}: a patch may not rename "
                             "a file")
        problem = check_path(old)
        if problem:
            raise PatchError(f"line {index + 1}: {problem}")
        hunks, index = _parse_hunks(lines, index + 2)
        if not hunks:
            raise PatchError(f"{old}: no hunks")
        files.append(FilePatch(old, tuple(hunks)))
    if not files:
        raise PatchError("no file patches found (expected '--- a/path', '+++ b/path', '@@' hunks)")
    if len({f.path for f in files}) != len(files):
        raise PatchError("a file is patched twice in one diff")
    return tuple(files)


def _parse_hunks(lines: list[str], index: int) -> tuple[list[Hunk], int]:
    hunks: list[Hunk] = []
    while index < len(lines) and lines[index].startswith("@@"):
        match = HUNK_HEADER.match(lines[index])
        if match is None:
            raise PatchError(f"line {index + 1}: bad hunk header {lines[index].strip()!r}")
        old_start = int(match[1])
        old_count = 1 if match[2] is None else int(match[2])
        new_count = 1 if match[4] is None else int(match[4])
        old: list[str] = []
        new: list[str] = []
        removed = added = 0
        index += 1
        while len(old) < old_count or len(new) < new_count:
            if index >= len(lines):
                raise PatchError(f"hunk at line {old_start}: the diff ends inside it")
            line = lines[index]
            tag, body = line[:1], line[1:]
            if tag in ("\n", "\r"):  # a blank context line whose ' ' an editor stripped
                tag, body = " ", line
            sides = {" ": (old, new), "-": (old,), "+": (new,)}.get(tag)
            if sides is None:
                raise PatchError(f"line {index + 1}: {line.rstrip()!r} in a hunk (expected a "
                                 "line starting ' ', '-' or '+')")
            for side in sides:
                side.append(body)
            removed += tag == "-"
            added += tag == "+"
            index += 1
            if index < len(lines) and lines[index].rstrip("\r\n") == NO_NEWLINE:
                for side in sides:
                    side[-1] = side[-1].rstrip("\r\n")
                index += 1
        if len(old) != old_count or len(new) != new_count:
            raise PatchError(f"hunk at line {old_start}: its lines do not match its header's "
                             f"counts ({old_count} old, {new_count} new)")
        hunks.append(Hunk(old_start, tuple(old), tuple(new), removed, added))
    return hunks, index


def _find(lines: list[str], wanted: tuple[str, ...], near: int, earliest: int) -> int | None:
    """The start nearest `near` (and not before `earliest`) where `wanted` matches `lines`."""
    last = len(lines) - len(wanted)
    for distance in range(len(lines) + 1):
        for start in (near - distance, near + distance) if distance else (near,):
            if earliest <= start <= last and tuple(lines[start:start + len(wanted)]) == wanted:
                return start
    return None


def apply_file(source: str, patch: FilePatch) -> str:
    """`source` with every hunk of `patch` applied in order (PatchError where one does not)."""
    lines = split_lines(source)
    result: list[str] = []
    position = 0
    for number, hunk in enumerate(patch.hunks, start=1):
        near = max(hunk.old_start - 1, 0) if hunk.old else hunk.old_start
        start = _find(lines, hunk.old, near, position)
        if start is None:
            raise PatchError(f"{patch.path}: hunk {number} of {len(patch.hunks)} "
                             f"({hunk.header()}) does not apply: its lines are not in the file")
        result += lines[position:start]
        result += hunk.new
        position = start + len(hunk.old)
    return "".join(result + lines[position:])


def apply_diff(sources: Mapping[str, str], text: str) -> dict[str, str]:
    """`sources` (path -> text) with the diff `text` applied; a path outside them is refused."""
    patched = dict(sources)
    for patch in parse_diff(text):
        if patch.path not in sources:
            raise PatchError(f"{patch.path!r} is not a file a patch may edit "
                             f"(allowed: {', '.join(sorted(sources))})")
        patched[patch.path] = apply_file(patched[patch.path], patch)
    return patched


def apply_diffs(sources: Mapping[str, str], diffs: Iterable[str]) -> dict[str, str]:
    """`sources` with each diff applied on top of the ones before it, in order."""
    patched = dict(sources)
    for text in diffs:
        patched = apply_diff(patched, text)
    return patched


def diff_between(before: Mapping[str, str], after: Mapping[str, str],
                 paths: Sequence[str] | None = None) -> str:
    """One unified diff (git-style a/ b/ paths) that takes `before` to `after`."""
    chunks = []
    for path in paths or sorted(before):
        if before[path] != after[path]:
            chunks += difflib.unified_diff(split_lines(before[path]),
                                           split_lines(after[path]),
                                           f"a/{path}", f"b/{path}")
    return "".join(line if line.endswith("\n") else line + "\n" + NO_NEWLINE + "\n"
                   for line in chunks)
