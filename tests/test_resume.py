"""Kill -9 anywhere, Ctrl-C, a full disk, two runs on one folder: outputs stay whole and a rerun ends identical.

Each command runs in a forked child (the parent's imports are already warm, so a run takes about a second) that is
killed with SIGKILL after a seeded random share of an uninterrupted run's time; the parent then reruns the same
command on the same folder and compares every file with the uninterrupted run's: tensors exactly, JSON equal
but for timing fields (and resume keys, which name file times), every other file byte for byte, nothing left over.
"""

from __future__ import annotations

import errno
import faulthandler
import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PAIR_ROWS, write_pairs_file
from safetensors import safe_open
from tqdm import tqdm

import safety_probe.core.files as spio
import safety_probe.core.lock as splock
from safety_probe.cli import main
from safety_probe.core.errors import OutputError
from safety_probe.organism.preset import write_tga_data

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the tokenizer's threads and fork do not mix
FORK = multiprocessing.get_context("fork")
# tqdm's default write lock is a cross-process semaphore: a child killed while it draws a bar would hold it forever and
# the parent's next bar would wait on it; the runs here are single-process, so a thread lock serves
tqdm.set_lock(threading.RLock())
IGNORED = {"started", "seconds", "run_key"}  # when it ran; resume keys hold file modification times
REAL_SYNC = spio._sync


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_model_dir, pairs_file) -> dict:
    root = tmp_path_factory.mktemp("resume")
    model = str(tiny_model_dir("llava"))
    data = write_tga_data(seed=0, n=6, out_dir=root / "data", retrieval="world")
    held_out = write_pairs_file(root / "held-out", PAIR_ROWS[:2])
    commands = {
        "probe": ["probe", "--model", model, "--pairs", str(pairs_file), "--device", "cpu", "--figures", "false",
                  "--patch-pairs", "2", "--batch-size", "1"],
        "eval": ["eval", "--model", model, "--pairs", str(pairs_file), "--device", "cpu", "--figures", "false",
                 "--max-new-tokens", "4", "--batch-size", "1"],
        "tga": ["tga", "--model", model, "--data", str(data), "--eval-pairs", str(held_out), "--layers", "0-1",
                "--device", "cpu", "--stage", "2", "--lr", "1e-3", "--max-steps", "3", "--save-every", "1",
                "--batch-size", "2", "--max-new-tokens", "2", "--eval-batch-size", "2", "--baselines",
                "--threads", "1"],  # a thread pool in this process would hang the next forked child
    }
    return {"root": root, "commands": commands, "reference": {}}


def argv(env: dict, command: str, out: Path) -> list[str]:
    return [*env["commands"][command], "--out", str(out)]


def reference(env: dict, command: str) -> tuple[Path, float]:
    """The uninterrupted run of ``command`` (run once) and how long it took, timed after a first run that loaded
    every module, as the forked runs find them loaded."""
    if command not in env["reference"]:
        assert main(argv(env, command, env["root"] / f"{command}-warm-up")) == 0
        out = env["root"] / f"{command}-reference"
        begin = time.time()
        assert main(argv(env, command, out)) == 0
        env["reference"][command] = (out, time.time() - begin)
    return env["reference"][command]


def _child(args: list[str], log: Path) -> None:
    """The forked run: its output goes to ``log``; its exit code is the command's."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = sys.stderr = open(fd, "w", buffering=1, closefd=False)
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)  # a hang can be asked where it is
    os._exit(main(args))


def start(args: list[str], log: Path) -> multiprocessing.Process:
    child = FORK.Process(target=_child, args=(args, log))
    child.start()
    return child


def _normal(obj, paths: tuple[str, ...]):
    """JSON with the output folders' paths replaced and the ignored keys dropped."""
    text = json.dumps(obj)
    for path in paths:
        text = text.replace(path, "OUT")

    def drop(x):
        if isinstance(x, dict):
            return {k: drop(v) for k, v in x.items() if k not in IGNORED}
        return [drop(v) for v in x] if isinstance(x, list) else x

    return drop(json.loads(text))


def assert_same_file(a: Path, b: Path, paths: tuple[str, ...]) -> None:
    """``b`` holds what ``a`` holds: the same tensors, the same JSON (paths and ignored keys aside), the same bytes."""
    if a.suffix == ".safetensors":  # compared by content: the header's metadata order is not fixed
        with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
            assert sorted(fa.keys()) == sorted(fb.keys()), b
            assert _normal(fa.metadata(), paths) == _normal(fb.metadata(), paths), b
            for key in fa.keys():
                assert torch.equal(fa.get_tensor(key), fb.get_tensor(key)), (b, key)
    elif a.suffix == ".json":
        assert _normal(json.loads(a.read_text()), paths) == _normal(json.loads(b.read_text()), paths), b
    elif a.suffix == ".jsonl":
        rows = [[_normal(json.loads(line), paths) for line in p.read_text().splitlines()] for p in (a, b)]
        assert rows[0] == rows[1], b
    elif a.parent.name != "figures":  # figures carry their creation time and random element ids
        assert a.read_bytes() == b.read_bytes(), b


def assert_same_outputs(ref: Path, out: Path) -> None:
    """Every file of ``out`` equals ``ref``'s, and there are no others (no temporary, partial or lock file)."""
    files = sorted(str(p.relative_to(ref)) for p in ref.rglob("*") if p.is_file())
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == files
    for rel in files:
        assert_same_file(ref / rel, out / rel, (str(ref), str(out)))


SEEDS = 3
KILLS = [(command, seed) for command in ("probe", "eval", "tga") for seed in range(SEEDS)]


@pytest.mark.parametrize("command, seed", KILLS, ids=[f"{c}-{s}" for c, s in KILLS])
def test_killed_anywhere_a_rerun_resumes_to_identical_outputs(command, seed, env):
    ref, seconds = reference(env, command)
    out = env["root"] / f"{command}-killed-{seed}"
    child = start(argv(env, command, out), env["root"] / f"{command}-{seed}.log")
    share = (seed + np.random.default_rng(seed).uniform(0.1, 0.9)) / SEEDS  # seed k: a random point in the k-th third
    time.sleep(share * seconds)
    interrupted = child.is_alive()
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    print(f"{command} killed at {share:.2f} of {seconds:.1f}s: {'mid-run' if interrupted else 'after the end'}")
    assert main(argv(env, command, out)) == 0
    assert_same_outputs(ref, out)
    if command == "tga":
        digests = {hashlib.sha256((p / "model" / "model.safetensors").read_bytes()).hexdigest() for p in (ref, out)}
        assert len(digests) == 1


# the first trace of work in progress: the recording's, the generation's and the training's first checkpoint
MID_WORK = {"probe": ".states.partial.safetensors", "eval": ".responses.partial.safetensors",
            "tga": "checkpoints/step_1/trainer_state.json"}
# and the training's last checkpoint: the rerun then trains nothing and must still save the same model folder
KILL_POINTS = [*MID_WORK.items(), ("tga", "checkpoints/step_3/trainer_state.json")]


def _wait_for(path: Path, child: multiprocessing.Process) -> None:
    deadline = time.time() + 60
    while not path.exists() and child.is_alive() and time.time() < deadline:
        time.sleep(0.002)


@pytest.mark.parametrize("command, mark", KILL_POINTS, ids=[f"{c}-{m.split('/')[-2] if '/' in m else 'partial'}"
                                                           for c, m in KILL_POINTS])
def test_killed_as_a_checkpoint_lands_a_rerun_resumes_to_identical_outputs(command, mark, env):
    ref, _ = reference(env, command)
    out = env["root"] / f"{command}-killed-at-{Path(mark).parent.name or 'partial'}"
    child = start(argv(env, command, out), env["root"] / f"{command}-mid-work.log")
    _wait_for(out / mark, child)
    assert child.is_alive(), "the run ended before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert main(argv(env, command, out)) == 0
    assert_same_outputs(ref, out)


def test_ctrl_c_exits_with_one_line_and_a_rerun_resumes(env):
    ref, _ = reference(env, "probe")
    out, log = env["root"] / "probe-interrupted", env["root"] / "probe-interrupted.log"
    child = start(argv(env, "probe", out), log)
    _wait_for(out / MID_WORK["probe"], child)
    os.kill(child.pid, signal.SIGINT)
    child.join()
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert child.exitcode == 130 and lines[-1].startswith("interrupted: "), lines[-3:]
    assert "Traceback" not in log.read_text()
    assert not (out / splock.LOCK_NAME).exists()
    assert main(argv(env, "probe", out)) == 0
    assert_same_outputs(ref, out)


# ---------------------------------------------------------------------------------------------------------
# A full disk
# ---------------------------------------------------------------------------------------------------------


def _full_disk_at(monkeypatch, n: int) -> list[int]:
    """Make the ``n``-th flush of an atomic write fail as a full disk does (the data already in the temporary)."""
    calls = [0]

    def failing(path: Path) -> None:
        calls[0] += 1
        if calls[0] == n:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        REAL_SYNC(path)

    monkeypatch.setattr(spio, "_sync", failing)
    return calls


def test_a_full_disk_leaves_earlier_outputs_whole_and_a_rerun_resumes(env, monkeypatch, capsys):
    ref, _ = reference(env, "probe")
    calls = _full_disk_at(monkeypatch, 0)
    out = env["root"] / "probe-count"
    assert main(argv(env, "probe", out)) == 0
    writes = calls[0]  # every atomic write of one run: checkpoints, states, layers.csv, layers.json, run.json
    for n in range(1, writes + 1):
        out = env["root"] / f"probe-full-{n}"
        _full_disk_at(monkeypatch, n)
        capsys.readouterr()
        assert main(argv(env, "probe", out)) == 2
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]  # after the progress bar the failure cut short
        assert last.startswith("error: cannot write ") and "No space left" in last and err.count("error:") == 1, err
        assert "Traceback" not in err
        written = sorted(p for p in out.rglob("*") if p.is_file())
        assert not [p for p in written if p.name.endswith(".tmp") or p.name == splock.LOCK_NAME]
        for path in written:  # each file there is whole: the one the uninterrupted run wrote
            if path.name != ".states.partial.safetensors":  # (the checkpoint: whole, but of fewer pairs)
                assert_same_file(ref / path.name, path, (str(ref), str(out)))
        monkeypatch.setattr(spio, "_sync", REAL_SYNC)
        assert main(argv(env, "probe", out)) == 0
        assert_same_outputs(ref, out)


def test_a_failed_write_names_the_path_and_keeps_the_old_file(tmp_path):
    path = spio.write_json(tmp_path / "result.json", {"old": True})

    def half_then_full(p: Path) -> None:
        p.write_text('{"new": tr')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match=r"cannot write .*result\.json: No space left on device"):
        spio.write_atomic(path, half_then_full)
    assert json.loads(path.read_text()) == {"old": True} and sorted(tmp_path.iterdir()) == [path]


# ---------------------------------------------------------------------------------------------------------
# Two runs, one folder
# ---------------------------------------------------------------------------------------------------------


def _lock(folder: Path, pid: int, host: str | None = None) -> Path:
    import socket

    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / splock.LOCK_NAME
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "then"}))
    return lock


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_live_run_holds_its_folder_and_a_second_run_stops_with_one_line(env, capsys):
    out = env["root"] / "probe-busy"
    child = start(argv(env, "probe", out), env["root"] / "probe-busy.log")
    _wait_for(out / splock.LOCK_NAME, child)
    before = _files(out)
    capsys.readouterr()
    code = main(argv(env, "probe", out))
    err = capsys.readouterr().err.strip().splitlines()
    alive = child.is_alive()
    child.join()
    assert child.exitcode == 0
    if alive or before:  # the child may, rarely, have finished between the check and the second run
        assert code == 2 and len(err) == 1 and "in use by another run" in err[0] and f"pid {child.pid}" in err[0], err


def test_locks_of_live_dead_foreign_and_unreadable_owners(env, capsys, tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        busy = tmp_path / "busy"
        lock = _lock(busy, sleeper.pid)
        before = _files(busy)
        capsys.readouterr()
        assert main(argv(env, "probe", busy)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"pid {sleeper.pid}" in err[0] and str(lock) in err[0], err
        assert _files(busy) == before
        foreign = tmp_path / "foreign"
        _lock(foreign, os.getpid(), host="elsewhere")
        assert main(argv(env, "probe", foreign)) == 2
        assert "on elsewhere" in capsys.readouterr().err
    finally:
        sleeper.kill()
        sleeper.wait()
    dead = tmp_path / "dead"
    _lock(dead, sleeper.pid)  # the process is gone: its lock is stale and taken over
    (dead / ".states.partial.safetensors.abcd1234.tmp").write_bytes(b"half")  # what a killed write left
    assert main(argv(env, "probe", dead)) == 0
    assert not (dead / splock.LOCK_NAME).exists() and not list(dead.glob("*.tmp"))
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / splock.LOCK_NAME).write_text('{"pid": ')  # no run writes a lock like this: taken over
    with splock.output_lock(torn) as held:
        assert json.loads(held.read_text())["pid"] == os.getpid()
    assert not held.exists()


def test_the_lock_leaves_no_folder_it_made_for_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with splock.output_lock(tmp_path / "a" / "b" / "c"):
            raise RuntimeError("the command failed before writing")
    assert list(tmp_path.iterdir()) == []
