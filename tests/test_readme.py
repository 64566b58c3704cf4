"""The README's Python blocks run as written (so the front door cannot rot)."""

import os
import re

from helpers import REPO_ROOT


def test_readme_python_blocks_run(capsys):
    text = open(os.path.join(REPO_ROOT, "README.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "nelbo" in out
