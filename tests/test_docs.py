"""The README and docs/ as a user reads them: the Python example runs, every command line in a
bash block composes (its config groups and keys exist), and the main job's block runs end to end."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir

from modulenet.app.config import register_configs

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
APPS = {
    "modulenet-search": "search_app",
    "modulenet-finetune": "finetune_app",
    "modulenet-evaluate": "evaluate_app",
    "modulenet-kb": "kb_app",
    "modulenet-report": "report_app",
}


def command_lines():
    """(page, line) of every modulenet command in a bash block, its comment cut off."""
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
            for line in block.splitlines():
                words = shlex.split(re.sub(r"<[^>]*>", "X", line), comments=True)  # <run> and such: a name
                if words and words[0] in APPS:
                    yield page.name, shlex.join(words)


def test_the_concepts_python_example_runs(tmp_path, monkeypatch, capsys):
    text = (REPO / "docs" / "concepts.md").read_text()
    block = re.search(r"## Python API\s+```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "docs/concepts.md", "exec"), {})
    out = capsys.readouterr().out
    assert "['resnet34', 'vgg16_bn'] 5" in out
    assert "torch.Size([8, 512, 2, 2])" in out
    assert (tmp_path / "kb_dir" / "knowledge_base.json").is_file()


@pytest.mark.parametrize("page, line", list(command_lines()))
def test_every_documented_command_composes(page, line):
    """A command the docs show names config groups, choices and keys that exist (Hydra's own
    composition; launcher overrides need the launcher's plugin and are left to Hydra)."""
    program, *args = shlex.split(line)
    overrides = [a for a in args if a != "-m" and not a.startswith("hydra")]
    if "-m" in args:  # a sweep composes as each of its jobs: the first value of each swept key
        overrides = [re.sub(r"=([^\[\]=]*?),.*$", r"=\1", o) if "[" not in o else o for o in overrides]
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name=APPS[program], overrides=overrides)
    assert cfg  # composed: every group, choice and key it names exists


def test_the_documents_show_the_commands_people_use():
    lines = {shlex.split(line)[0] for _, line in command_lines()}
    assert lines == set(APPS)


@pytest.mark.slow
def test_the_main_job_and_its_network_as_the_readme_shows_them(tmp_path):
    """The README's main-job block on tiny settings: search, fine-tune, then the saved network
    measured again from its folder by modulenet-evaluate, to the error finetune.json records."""
    import json

    text = (REPO / "README.md").read_text()
    assert "modulenet-search finetune.after_search=true" in text and "modulenet-evaluate network=" in text
    env = {**os.environ, "WANDB_MODE": "offline"}
    tiny = ["search.generations=2", "search.population_size=4", "search.epochs=2", "finetune.epochs=1"]
    bin_dir = os.path.dirname(sys.executable)
    run = tmp_path / "run"
    search = subprocess.run(
        [f"{bin_dir}/modulenet-search", "finetune.after_search=true", *tiny, f"hydra.run.dir={run}"],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert search.returncode == 0, search.stderr[-3000:]
    document = json.loads((run / "finetune" / "finetune.json").read_text())
    folder = run / "finetune" / document["selected_network"]
    assert (folder / "network.pt2").is_file()
    measured = subprocess.run(
        [f"{bin_dir}/modulenet-evaluate", f"network={folder}", f"hydra.run.dir={tmp_path / 'evaluate'}"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert measured.returncode == 0, measured.stderr[-3000:]
    recorded = next(r["test_error"] for r in document["results"] if r["network"] == document["selected_network"])
    assert json.loads((tmp_path / "evaluate" / "evaluation.json").read_text())["error"] == recorded
