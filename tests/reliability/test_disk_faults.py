"""Disk faults: a full disk or a read-only folder gives one line naming the path and the cause, whichever
library was writing (Python's files, safetensors, torch.save). The real cases run on a small tmpfs, which
needs root; elsewhere they are skipped and the errno cases still run."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest

from minigpt.cli import main
from minigpt.disk import DiskError, writing

from .helpers import stage_dict, write_yaml


@pytest.fixture()
def small_disk(tmp_path: Path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount: Path) -> None:
    with (mount / "filler").open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError:
            pass


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        (errno.ENOSPC, "no space left on device"),
        (errno.EROFS, "read-only file system"),
        (errno.EDQUOT, "disk quota exceeded"),
    ],
)
def test_errno_faults_become_one_line(tmp_path: Path, code: int, cause: str) -> None:
    with pytest.raises(DiskError) as info, writing(tmp_path / "x", "saving checkpoint-4"):
        raise OSError(code, "boom")
    assert str(info.value) == f"{tmp_path / 'x'}: {cause} (while saving checkpoint-4)"


def test_other_errors_pass_through(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a disk fault"), writing(tmp_path, "x"):
        raise ValueError("not a disk fault")


def test_a_library_error_on_a_full_disk_is_put_down_to_the_disk(small_disk: Path) -> None:
    _fill(small_disk)
    # safetensors and torch.save report a full disk as their own error types, without an errno
    with (
        pytest.raises(DiskError, match=r"no space left on device \(while exporting\)"),
        writing(small_disk, "exporting"),
    ):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_train_on_a_full_or_read_only_disk_prints_one_line(
    small_disk: Path, tmp_path: Path, tiny_tokenizer_dir: Path, lm_data, capsys, fault: str
) -> None:
    out = small_disk / "run"
    cfg = write_yaml(tmp_path / "s.yaml", stage_dict(out, tiny_tokenizer_dir, lm_data["conv"], max_steps=2))
    if fault == "full":
        _fill(small_disk)
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    cause = "no space left on device" if fault == "full" else "read-only file system"
    assert len(err) == 1 and err[0].startswith(f"error: {out}") and cause in err[0], err


def test_export_on_a_full_disk_keeps_the_trained_weights(
    small_disk: Path, tmp_path: Path, tiny_tokenizer_dir: Path, lm_data, capsys, monkeypatch
) -> None:
    from minigpt import checkpoints

    out = tmp_path / "run"
    cfg = write_yaml(tmp_path / "s.yaml", stage_dict(out, tiny_tokenizer_dir, lm_data["conv"], max_steps=2))
    real = checkpoints.export_final

    def export_on_the_full_disk(model, tokenizer, output_dir, state_dict=None):
        _fill(small_disk)  # the disk fills while the final folder is written
        real(model, tokenizer, small_disk / "final", state_dict)

    monkeypatch.setattr("minigpt.runner.export_final", export_on_the_full_disk)
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no space left on device (while exporting the final model)" in err
    assert f"The trained weights are kept in {out / 'checkpoints' / 'checkpoint-2'}" in err
    monkeypatch.setattr("minigpt.runner.export_final", real)
    assert main(["train", "--config", str(cfg), "--resume"]) == 0
    assert (out / "stage.json").exists() and (out / "model.safetensors").exists()
