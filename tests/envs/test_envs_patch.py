"""Unified diffs (envs.patch) against independent makers and appliers: difflib writes the diffs,
GNU patch applies them where it is installed."""
from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.patch import PatchError, apply_diff, apply_diffs, diff_between, parse_diff

PATH = "train/model.py"
ROWS = ["a = 1", "b = 2", "", "def f():", "    return 3", "# x", "s = 'é\x0c'"]
lines = st.lists(st.sampled_from(ROWS), max_size=12)


def text_of(rows: list[str]) -> str:
    return "".join(row + "\n" for row in rows)


@settings(max_examples=200, deadline=None)
@given(old=lines, new=lines)
def test_a_difflib_diff_takes_the_old_text_to_the_new(old, new):
    before, after = {PATH: text_of(old)}, {PATH: text_of(new)}
    if before == after:
        return
    assert apply_diff(before, diff_between(before, after)) == after


@settings(max_examples=100, deadline=None)
@given(old=st.lists(st.sampled_from(ROWS), min_size=1, unique=True), new=lines,
       prefix=st.lists(st.just("# moved"), min_size=1, max_size=5))
def test_a_diff_applies_where_its_lines_moved(old, new, prefix):
    """The rebase: lines inserted above (a kept patch's) move a hunk, which still applies
    (where its old lines occur once: a hunk matches text, and text that repeats is
    ambiguous to any patch tool)."""
    before, after = {PATH: text_of(old)}, {PATH: text_of(new)}
    if before == after:
        return
    moved = {PATH: text_of(prefix + old)}
    diff = diff_between(before, after)
    assert apply_diff(moved, diff) == {PATH: text_of(prefix + new)}


def test_a_last_line_without_a_newline_round_trips():
    before, after = {PATH: "a\nb"}, {PATH: "a\nc"}
    diff = diff_between(before, after)
    assert "\\ No newline at end of file" in diff
    assert apply_diff(before, diff) == after


@pytest.mark.skipif(shutil.which("patch") is None, reason="GNU patch is not installed")
def test_gnu_patch_reads_our_diffs_and_we_read_its_unified_output(tmp_path):
    old = text_of([f"line {i}" for i in range(30)])
    new = old.replace("line 3\n", "line three\n").replace("line 20\n", "")
    diff = diff_between({PATH: old}, {PATH: new})
    (tmp_path / "train").mkdir()
    (tmp_path / PATH).write_text(old)
    subprocess.run(["patch", "-p1", "--quiet"], input=diff, text=True, cwd=tmp_path, check=True)
    assert (tmp_path / PATH).read_text() == new
    # and a diff written by diff(1) (GNU diffutils) applies here
    (tmp_path / "b").write_text(new)
    (tmp_path / "a").write_text(old)
    made = subprocess.run(["diff", "-u", "a", "b"], capture_output=True, text=True,
                          cwd=tmp_path).stdout.replace("--- a", f"--- a/{PATH}", 1)
    made = made.replace("+++ b", f"+++ b/{PATH}", 1)
    assert apply_diff({PATH: old}, made) == {PATH: new}


def test_later_diffs_apply_on_top_of_earlier_ones():
    rows = [f"v{i} = {i}" for i in range(20)]
    base = {PATH: text_of(rows)}
    first = diff_between(base, {PATH: text_of(["first = 0"] + rows[:2] + rows[3:])})
    second = diff_between(base, {PATH: text_of(rows[:15] + ["v15 = 150"] + rows[16:])})
    both = ["first = 0"] + rows[:2] + rows[3:15] + ["v15 = 150"] + rows[16:]
    assert apply_diffs(base, [first, second]) == {PATH: text_of(both)}
    assert apply_diffs(base, [second, first]) == {PATH: text_of(both)}


def test_a_hunk_whose_context_changed_does_not_apply_and_is_named():
    base = {PATH: text_of(["x = 1", "y = 2", "z = 3"])}
    first = diff_between(base, {PATH: text_of(["x = 1", "y = 20", "z = 3"])})
    second = diff_between(base, {PATH: text_of(["x = 1", "y = 2", "z = 30"])})
    with pytest.raises(PatchError, match=r"train/model.py: hunk 1 of 1 .* does not apply"):
        apply_diffs(base, [first, second])


@pytest.mark.parametrize("diff, message", [
    ("", "no file patches"),
    ("--- a/x.py\n", "not followed by"),
    ("--- /dev/null\n+++ b/train/new.py\n@@ -0,0 +1 @@\n+x\n", "create or delete"),
    ("--- a/train/model.py\n+++ b/train/other.py\n@@ -1 +1 @@\n-x\n+y\n", "rename"),
    ("diff --git a/m b/n\nrename from m\nrename to n\n", "only edit lines"),
    ("diff --git a/m b/m\nnew file mode 100644\n", "only edit lines"),
    ("Binary files a/m and b/m differ\n", "only edit lines"),
    ("--- a/../evil.py\n+++ b/../evil.py\n@@ -1 +1 @@\n-x\n+y\n", "plain relative path"),
    ("--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-x\n+y\n", "plain relative path"),
    ("--- a/train/model.py\n+++ b/train/model.py\n@@ -1,2 +1,1 @@\n-x\n", "ends inside"),
    ("--- a/train/model.py\n+++ b/train/model.py\n@@ -1 +1 @@\n-x\n?y\n", "in a hunk"),
    ("--- a/train/model.py\n+++ b/train/model.py\n@@ bad @@\n", "bad hunk header"),
])
def test_malformed_or_overreaching_diffs_are_refused_with_the_reason(diff, message):
    with pytest.raises(PatchError, match=message):
        parse_diff(diff)


def test_a_path_outside_the_mutable_files_is_refused():
    evaluate = diff_between({"train/evaluate.py": "a\n"}, {"train/evaluate.py": "b\n"})
    with pytest.raises(PatchError, match="'train/evaluate.py' is not a file a patch may edit"):
        apply_diff({PATH: "a\n"}, evaluate)


@pytest.mark.parametrize("hidden", ["\x1b[2K\x1b[1A", "\rprint('x')", "\u202e", "\u2066",
                                    "\u200b", "\u2028"])
def test_a_patch_that_could_hide_code_from_a_reviewer_is_refused(hidden):
    diff = diff_between({PATH: "a = 1\n"}, {PATH: f"a = 1  # {hidden}\n"})
    with pytest.raises(PatchError, match=r"line 5: character .* could hide code"):
        parse_diff(diff)


def test_a_diff_with_windows_line_endings_is_read():
    before, after = {PATH: "a = 1\r\nb = 2\r\n"}, {PATH: "a = 1\r\nb = 3\r\n"}
    assert apply_diff(before, diff_between(before, after)) == after


def test_hunks_count_the_lines_they_remove_and_add_even_ones_that_look_like_headers():
    before = {PATH: text_of(["-- a dashed line", "++ a plussed line", "keep"])}
    after = {PATH: text_of(["keep", "-- new", "++ new", "more"])}
    (patch,) = parse_diff(diff_between(before, after))
    assert sum(h.removed for h in patch.hunks) == 2
    assert sum(h.added for h in patch.hunks) == 3
