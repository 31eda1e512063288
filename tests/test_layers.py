"""The import-layer contract of pyproject.toml ([tool.importlinter]): no module imports upward."""

import subprocess
import sys
from pathlib import Path


def test_imports_point_down_the_layers():
    root = Path(__file__).resolve().parents[1]
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], capture_output=True, text=True, cwd=root, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
    assert "1 kept, 0 broken" in done.stdout, done.stdout
