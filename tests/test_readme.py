"""The README's Python example runs as written."""

import re

from conftest import REPO


def test_readme_api_example_runs(tmp_path, monkeypatch, capsys):
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Python API\s+```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "['resnet34', 'vgg16_bn'] 5" in out
    assert "torch.Size([8, 512, 2, 2])" in out
    assert (tmp_path / "kb_dir" / "knowledge_base.json").is_file()
