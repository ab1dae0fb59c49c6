"""Patched runs of the gpt env on the real trainer (tiny): each attack on the evaluation that the
code-patch issue names is refused, or cannot move val_bpb. The reference is an unpatched run at
the same seed, which makes the same weights on a CPU."""
from __future__ import annotations

import shlex

import pytest

from envs import GptEnv
from envs.patch import diff_between
from envs.patched import pristine_sources
from train.confine import landlock_abi

TINY = {"n_layer": 1, "n_embd": 32, "n_head": 2, "seq_len": 64, "batch_size": 8,
        "eval_seq_len": 64, "eval_tokens": 4096, "threads": 1}
IMPORTS = "from train import architecture as arch\n"


def edit(old: str, new: str, path: str = "train/model.py") -> str:
    """A diff of the pristine trainer that replaces `old` by `new` in `path`."""
    before = pristine_sources()
    after = dict(before)
    assert old in after[path]
    after[path] = after[path].replace(old, new, 1)
    return diff_between(before, after)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("TRAIN_DATA_DIR", str(tmp_path_factory.mktemp("cache")))
    yield GptEnv(backend="cpu", steps=20, base=TINY)
    monkeypatch.undo()


@pytest.fixture(scope="module")
def plain(env):
    outcome = env.run(dict(TINY), 3)
    assert outcome.status == "ok", outcome.extra
    return outcome


def run(env, *patches):
    return env.run({**TINY, "patches": list(patches)}, 3)


def test_monkeypatching_the_evaluation_from_the_model_file_changes_nothing(env, plain):
    cheat = edit(IMPORTS, IMPORTS + "import train.evaluate as _e\n"
                 "_e.bits_per_byte = lambda nats, nbytes: 0.01\n"
                 "_e.evaluate_val_bpb = lambda *args: 0.01\n")
    outcome = run(env, cheat)
    assert outcome.status == "ok", outcome.extra
    assert outcome.metric == plain.metric  # the judge's evaluation never imports the patch
    assert outcome.extra["eval_hash"] == plain.extra["eval_hash"]
    assert outcome.extra["code_hash"] != env.code_hash  # the run records the code it ran
    assert outcome.extra["causal_change"] == 0.0


def test_a_model_without_its_causal_mask_is_refused(env):
    outcome = run(env, edit("is_causal=True", "is_causal=False"))
    assert outcome.status == "refused"
    assert "not causal" in outcome.extra["reason"]


@pytest.mark.skipif(landlock_abi() == 0, reason="no Landlock: files are not confined here")
def test_a_patch_that_reads_the_validation_data_is_denied_it(env, plain):
    from train.data import cache_dir

    val_file = next(cache_dir().glob("*-val4096.npz"))
    outcome = run(env, edit(IMPORTS, IMPORTS + "import numpy\n"
                            f"_seen = numpy.load({str(val_file)!r})['val_tokens']\n"))
    assert outcome.status == "crash"
    assert "denied it a file" in outcome.extra["reason"]
    assert "PermissionError" in outcome.extra["stderr_tail"]


@pytest.mark.parametrize("target", ["evaluate.py", "model.py"])
def test_a_run_that_rewrites_its_own_code_is_stopped(env, target):
    """Its code is read-only to it where Landlock is; elsewhere the hashes taken before and
    after the run see the change."""
    rewrite = edit(IMPORTS, IMPORTS + "import pathlib\n"
                   f"_f = pathlib.Path(arch.__file__).with_name({target!r})\n"
                   "_f.write_text(_f.read_text() + '# changed')\n")
    outcome = run(env, rewrite)
    if landlock_abi():
        assert outcome.status == "crash" and "denied it a file" in outcome.extra["reason"]
    else:
        assert outcome.status == "refused"
        assert f"changed train/{target} of its working copy" in outcome.extra["reason"]


def test_patches_outside_the_mutable_files_are_refused_before_any_run(env):
    evaluate = diff_between({"train/evaluate.py": "a\n"}, {"train/evaluate.py": "b\n"})
    assert "not a file a patch may edit" in env.patch_problem([evaluate])
    escape = "--- a/../x.py\n+++ b/../x.py\n@@ -1 +1 @@\n-a\n+b\n"
    assert "plain relative path" in env.patch_problem([escape])
    stale = edit("is_causal=True", "is_causal=False").replace("is_causal=True", "is_causal=Maybe")
    assert "does not apply" in env.patch_problem([stale])
    note = edit("class MLP(nn.Module):", "# a note\nclass MLP(nn.Module):")
    assert env.patch_problem([note]) is None
    assert "mlx" in GptEnv(backend="mlx", steps=5).patch_problem([evaluate])


def test_a_configuration_that_fails_the_guard_is_refused_and_the_guard_runs_once(monkeypatch):
    """The guard sees the run's trainer: here it fails where train/model.py uses GELU, so the
    GELU patch's runs are refused with the guard's reason, and the base's runs go on. The
    guard runs once per configuration (counted by a spy around the real run_guard)."""
    import envs.gpt
    import envs.patched
    from envs.guard import run_guard

    calls = []

    def counted(argv, **options):
        calls.append(argv)
        return run_guard(argv, **options)

    monkeypatch.setattr(envs.gpt, "run_guard", counted)
    monkeypatch.setattr(envs.patched, "run_guard", counted)
    check = ("import sys, pathlib; "
             "src = pathlib.Path(sys.argv[1], 'train', 'model.py').read_text(); "
             "sys.exit('F.gelu' in src and 'guard: GELU is not allowed here')")
    guarded = GptEnv(backend="cpu", steps=20, base=TINY,
                     guard_command=f"{{python}} -c {shlex.quote(check)} {{trainer}}")
    gelu = edit("        return self.c_proj(F.relu(self.c_fc(x), inplace=True).square())",
                "        return self.c_proj(F.gelu(self.c_fc(x)))")
    for seed in (3, 4):
        outcome = guarded.run({**TINY, "patches": [gelu]}, seed)
        assert outcome.status == "refused"
        assert outcome.extra["reason"] == ("the guard command failed (exit status 1): "
                                           "guard: GELU is not allowed here")
    assert guarded.run(dict(TINY), 3).status == "ok"
    assert guarded.run(dict(TINY), 4).status == "ok"
    assert len(calls) == 2  # the GELU configuration once, the base once
    with pytest.raises(ValueError, match=r"guard_command .* placeholder\(s\) \{model\}"):
        GptEnv(backend="cpu", steps=5, guard_command="{python} {model}")


def test_the_documented_smoke_run_guard_passes_plain_and_patched_configurations(env):
    smoke = ("{python} -m train --config {config} --steps 2 --training-split {split} "
             "--save-weights guard.pt")
    guarded = GptEnv(backend="cpu", steps=20, base=TINY, guard_command=smoke)
    assert guarded.run(dict(TINY), 3).status == "ok"
    note = edit("class MLP(nn.Module):", "# a note\nclass MLP(nn.Module):")
    outcome = guarded.run({**TINY, "patches": [note]}, 3)
    assert outcome.status == "ok", outcome.extra
    broken = edit("class MLP(nn.Module):", "class MLP(nn.Module):\n    x = undefined_name")
    outcome = guarded.run({**TINY, "patches": [broken]}, 3)
    assert outcome.status == "refused" and "NameError" in outcome.extra["reason"]


@pytest.mark.skipif(landlock_abi() == 0, reason="no Landlock: files are not confined here")
def test_a_patch_cannot_read_another_process_s_environment(env, monkeypatch):
    """Not its own (an allow-listed one, without the API key) nor, through /proc, the
    engine's or its parent's."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-patches")
    own = run(env, edit(IMPORTS, IMPORTS + "import os\n"
                        "assert 'OPENAI_API_KEY' not in os.environ, 'the key leaked'\n"))
    assert own.status == "ok", own.extra
    parent = run(env, edit(IMPORTS, IMPORTS + "import os\n"
                           "open(f'/proc/{os.getppid()}/environ').read()\n"))
    assert parent.status == "crash" and "denied it a file" in parent.extra["reason"]
