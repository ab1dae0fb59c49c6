"""python -I train/confine.py [--read DIR]... [--write DIR]... [--memory-mb N] -- COMMAND...

Confines this process, then replaces it with COMMAND, which inherits the confinement: the way
a patched trainer (code written by a hypothesis) is run. Standard library only, and run by its
path, so nothing of the confined code is imported before the walls are up.

- Memory: RLIMIT_DATA caps the private writable memory (heap and anonymous maps) at N MiB.
  RLIMIT_AS is not used: torch reserves far more address space than it ever touches.
- Files (Linux Landlock, kernel 5.13+): COMMAND may read and execute under the --read folders
  and read and write under the --write folders, and nothing else. So it cannot read the
  validation data, the study's ledger or other runs' folders, nor write to the project.
- Network and signals (Landlock ABI 4 and 6): no TCP connect or bind, and no signals to
  processes outside the confinement. UDP and UNIX sockets are not confined (`what_holds`).
- Devices: only null, zero, random, shared memory and the GPUs' nodes.

Where Landlock is missing (macOS, older kernels, containers that filter it), the memory limit
still holds, and a line starting `confine: no Landlock` on stderr says the rest was skipped.
"""
from __future__ import annotations

import ctypes
import os
import platform
import resource
import site
import sys
from pathlib import Path

# Landlock's system calls (the same numbers on x86_64 and arm64) and flags, from
# include/uapi/linux/landlock.h.
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
# Filesystem rights by the ABI that added them.
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_TRUNCATE, _IOCTL_DEV = 1 << 14, 1 << 15
_NET_ALL = (1 << 0) | (1 << 1)  # bind and connect TCP
_SCOPE_ALL = (1 << 0) | (1 << 1)  # abstract unix sockets and signals
# The devices a trainer uses: null, zero and random, the shared memory of its locks, and the
# GPUs' nodes; no terminal, disk or other device.
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/shm",
            "/dev/dri", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools",
            "/dev/nvidia-modeset")
_GPU_NODES = "/dev/nvidia"  # /dev/nvidia0, /dev/nvidia1, ...
# What a confined command keeps of the environment: where programs and libraries are, the
# locale, thread and device settings, and the run's own paths and tag. Nothing else (an API
# key, say) reaches code a patch wrote.
ENVIRONMENT_KEPT = ("PATH", "LANG", "LC_ALL", "LD_LIBRARY_PATH", "PYTHONPATH", "TMPDIR",
                    "TRAIN_DATA_DIR", "ENGINE_RUN_TAG", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
                    "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "PYTORCH_ENABLE_MPS_FALLBACK")


def kept_environment(environment: dict[str, str]) -> dict[str, str]:
    """The part of `environment` a confined command is given (ENVIRONMENT_KEPT)."""
    return {key: value for key, value in environment.items() if key in ENVIRONMENT_KEPT}


def what_holds(abi: int) -> str:
    """In words, what Landlock ABI `abi` confines (with RLIMIT_DATA always)."""
    if abi == 0:
        return ("RLIMIT_DATA only: no Landlock here, so files, network and signals are not "
                "confined")
    held = ["reads and writes" if abi >= 3 else "reads and writes but not truncation"]
    held.append("TCP" if abi >= 4 else "not TCP")
    held.append("signals and abstract sockets" if abi >= 6 else "not signals")
    return f"landlock ABI {abi} ({', '.join(held)}; not UDP or UNIX sockets) and RLIMIT_DATA"


# Where the interpreter and its libraries live, besides its own prefixes: read, never written.
_SYSTEM_FOLDERS = ("/usr", "/lib", "/lib64", "/bin", "/etc", "/sys")
# Of /proc, only what a trainer reads about the machine, and the command's own /proc/PID (added
# when it is confined: execv keeps the pid): not other processes' environments or memory.
_PROC_FILES = ("/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/proc/sys", "/proc/filesystems")


def library_folders(*, keep_out: list[Path]) -> list[str]:
    """The folders a confined Python needs to read: the system's, the interpreter's prefixes and
    its site-packages; none that holds a folder of `keep_out` (the project, the data cache)."""
    found = [*_SYSTEM_FOLDERS, sys.prefix, sys.base_prefix, sys.exec_prefix,
             *site.getsitepackages()]
    kept = []
    for folder in dict.fromkeys(str(Path(f).resolve()) for f in found):
        if not any(Path(out).resolve().is_relative_to(folder) for out in keep_out):
            kept.append(folder)
    return kept


def confined(command: list[str], *, read: list[str], write: list[str],
             memory_mb: int) -> list[str]:
    """The argv that runs `command` under this module's confinement."""
    options = [*(arg for f in read for arg in ("--read", f)),
               *(arg for f in write for arg in ("--write", f)), "--memory-mb", str(memory_mb)]
    # -I: nothing of the caller's environment (PYTHONPATH, a sitecustomize there) is read
    # before the walls are up; the command then runs with the environment it is given.
    return [sys.executable, "-I", str(Path(__file__).resolve()), *options, "--", *command]


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 where there is none (or not Linux)."""
    if platform.system() != "Linux":
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    version = libc.syscall(_CREATE_RULESET, None, ctypes.c_size_t(0),
                           ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def _fs_rights(abi: int) -> int:
    return max(rights for since, rights in _FS_RIGHTS_BY_ABI.items() if since <= abi)


def landlock(read: list[str], write: list[str]) -> int:
    """Restrict this process (and what it executes) to reading `read` and reading and writing
    `write` (a folder in both is writable), with no TCP and no signals out, as far as the ABI
    allows (`what_holds`); returns the ABI used (0: nothing was done)."""
    abi = landlock_abi()
    if abi == 0:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    handled = _fs_rights(abi)
    attr = _RulesetAttr(handled, _NET_ALL if abi >= 4 else 0, _SCOPE_ALL if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    reading = _EXECUTE | _READ_FILE | _READ_DIR
    devices = reading | _WRITE_FILE | ((_TRUNCATE | _IOCTL_DEV) & handled)
    own = [f"/proc/{os.getpid()}", *_PROC_FILES]
    rules = [(path, reading) for path in [*read, *own]] + [(path, handled) for path in write]
    gpus = [f"/dev/{name}" for name in sorted(os.listdir("/dev"))
            if f"/dev/{name}".startswith(_GPU_NODES) and name[6:].isdigit()]
    rules += [(path, devices) for path in (*_DEVICES, *gpus)]
    try:
        for path, rights in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                if not os.path.isdir(path):  # a file takes only the rights a file can have
                    rights &= _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
                rule = _PathBeneathAttr(rights & handled, fd)
                if libc.syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule),
                                ctypes.c_uint32(0)) < 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if libc.syscall(_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) < 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    return abi


def limit_memory(megabytes: int) -> None:
    """Cap private writable memory (RLIMIT_DATA) at `megabytes` MiB; 0 leaves it unlimited."""
    if megabytes > 0:
        limit = megabytes * 2**20
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def parse(argv: list[str]) -> tuple[list[str], list[str], int, list[str]]:
    """(read folders, write folders, memory MiB, command) from this script's arguments."""
    if "--" not in argv:
        raise ValueError("expected '--' before the command")
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    read: list[str] = []
    write: list[str] = []
    memory = 0
    for flag, value in zip(options[::2], options[1::2]):
        if flag == "--read":
            read.append(value)
        elif flag == "--write":
            write.append(value)
        elif flag == "--memory-mb":
            memory = int(value)
        else:
            raise ValueError(f"unknown option {flag!r}")
    if len(options) % 2 or not command:
        raise ValueError("options come in pairs, and a command must follow '--'")
    return read, write, memory, command


def main(argv: list[str]) -> int:
    try:
        read, write, memory, command = parse(argv)
    except ValueError as error:
        print(f"confine: {error}", file=sys.stderr)
        return 2
    limit_memory(memory)
    if landlock(read, write) == 0:
        print("confine: no Landlock on this system: the files, network and signals of the "
              "command are not confined (memory is)", file=sys.stderr, flush=True)
    os.execv(command[0], command)
    return 127  # not reached: execv replaces this process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
