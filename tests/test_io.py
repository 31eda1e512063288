import os
import re
import stat

import pytest

from wsi_pipeline.io import atomic_path, write_json_atomic


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_outputs_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "x.json", [])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644


def test_exclusive_folder_refuses_a_second_writer_until_the_first_dies(tmp_path):
    import signal
    import subprocess
    import sys

    from wsi_pipeline.io import exclusive_folder

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom wsi_pipeline.io import exclusive_folder\n"
         f"with exclusive_folder({str(tmp_path)!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(BlockingIOError, match="^" + re.escape(f"{tmp_path}: another process is writing a run here")),
            exclusive_folder(tmp_path),
        ):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean release: the operating system drops the lock
        holder.wait()
    with exclusive_folder(tmp_path) as folder:
        assert folder == tmp_path
    with exclusive_folder(tmp_path):  # released at the end of the block
        pass
