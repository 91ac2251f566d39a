"""Two runs writing to one output folder: the second refuses with a clear message (exit status 2), a lock
left by a killed run is taken over, and of several runs starting at once exactly one gets the folder."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from minigpt.errors import TrainingError
from minigpt.output_lock import LOCK_FILE, OutputLock

from .helpers import PYTHON, files_under, stage_dict, subprocess_env, write_yaml

REPO = Path(__file__).resolve().parents[2]

# A run stand-in that takes the real lock the runner takes, then holds it (or reports that it could not).
HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from minigpt.output_lock import OutputLock
    from minigpt.errors import TrainingError
    start = float(sys.argv[3])
    while time.time() < start:
        time.sleep(0.001)
    try:
        with OutputLock(Path(sys.argv[1])):
            print("locked", flush=True)
            time.sleep(float(sys.argv[2]))
    except TrainingError as exc:
        print("refused", exc, flush=True)
    """
)


def _holder(out: Path, hold: float, start: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen(
        [PYTHON, "-c", HOLDER, str(out), str(hold), str(start)],
        cwd=REPO,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_second_run_on_a_locked_folder_exits_2_with_the_lock_message(
    tmp_path: Path, tiny_tokenizer_dir: Path, lm_data: dict[str, Path]
) -> None:
    out = tmp_path / "run"
    first = _holder(out, hold=120)
    try:
        assert first.stdout.readline().strip() == "locked"
        config = write_yaml(tmp_path / "c.yaml", stage_dict(out, tiny_tokenizer_dir, lm_data["conv"]))
        second = subprocess.run(
            [PYTHON, "-m", "minigpt", "train", "--config", str(config)],
            cwd=REPO,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        first.send_signal(signal.SIGKILL)  # dies holding the lock: the file stays, its flock goes
        first.wait()
    assert second.returncode == 2, second.stderr[-2000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in second.stderr
    assert (
        f"{out}: another run is writing to this folder (pid {first.pid} on {socket.gethostname()})"
        in errors[0]
    )
    assert files_under(out) == [LOCK_FILE]  # the refused run wrote nothing
    # The first run was killed without releasing: its lock is recognised as stale and taken over.
    with OutputLock(out) as lock:
        assert lock.held and json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (out / LOCK_FILE).exists()


@pytest.mark.slow
@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "stale-lock-present"])
def test_of_runs_starting_together_exactly_one_gets_the_folder(tmp_path: Path, stale: bool) -> None:
    out = tmp_path / "run"
    if stale:  # a killed run's lock: every contender tries to take it over at the same moment
        out.mkdir()
        (out / LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": socket.gethostname()}))
    start = time.time() + 1.5  # every process spins until then, so they really contend
    procs = [_holder(out, hold=2.0, start=start) for _ in range(4)]
    results = [p.communicate(timeout=60)[0].split()[0] for p in procs]
    assert sorted(results) == ["locked", "refused", "refused", "refused"]


def test_a_lock_held_on_another_host_is_never_taken_over(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "another-host"}))
    with pytest.raises(TrainingError, match="pid 1 on another-host"), OutputLock(tmp_path):
        pass
    assert (tmp_path / LOCK_FILE).exists()
