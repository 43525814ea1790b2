"""docs/daily.md runs as written: its shell blocks in order in an empty directory (the block that starts with
#!/bin/sh saved as daily.sh, as the page says), with `tron` on PATH and only its port 8080 swapped for a free one."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "daily.md"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_daily_walkthrough_runs_as_written(tmp_path):
    port = str(_free_port())
    blocks = [block.replace("8080", port) for block in re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)]
    scripts = [block for block in blocks if block.startswith("#!/bin/sh")]
    assert len(scripts) == 1 and len(blocks) == 3
    (tmp_path / "daily.sh").write_text(scripts[0])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tron").write_text(f'#!/bin/sh\nexec {sys.executable} -m tron_cli "$@"\n')
    (bin_dir / "tron").chmod(0o755)
    commands = "set -e\n" + "".join(block for block in blocks if block not in scripts)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRON_")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", PYTHONPATH=str(DOC.parents[1]))
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    try:  # into files, not pipes: the server started in the background would hold a pipe open after bash ends
        with open(out, "w") as stdout, open(err, "w") as stderr:
            code = subprocess.run(["bash", "-c", commands], cwd=tmp_path, env=env, stdout=stdout, stderr=stderr, timeout=900).returncode
    finally:
        pid = tmp_path / "serve.pid"
        if pid.is_file():
            with contextlib.suppress(ProcessLookupError):  # the walkthrough stopped it already unless it failed
                os.kill(int(pid.read_text()), signal.SIGKILL)
    printed, said = out.read_text(), err.read_text()
    assert code == 0, printed + said
    served, n_items, reloads = printed.strip().splitlines()[-1].split(" ", 2)
    assert served == "day-003" and "'count': 1" in reloads and "'failed': 0" in reloads
    assert "day-004 refused by the gate" in printed and "below 0.99" in said
    assert os.readlink(tmp_path / "bundles" / "current") == "day-003" and not (tmp_path / "bundles" / "day-004").exists()
    lineage = json.loads((tmp_path / "data" / "day-003" / "dataset.json").read_text())["catalogue_from"]
    assert lineage["new"] > 0 and int(n_items) == lineage["n_items"] + lineage["new"]
    assert json.loads((tmp_path / "runs" / "day-004" / "config.json").read_text())["init_from"]["name"] == "day-003"
