"""Every Python code block in the README runs, in order, with tiny backbones standing in for the Hub ids."""

import re
from pathlib import Path

import numpy as np
import soundfile
from conftest import ROOT, speechlike

HUB_IDS = {"openai/whisper-large-v3": 0, "Qwen/Qwen2.5-7B-Instruct": 1}


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)


def test_readme_has_python_blocks():
    blocks = readme_python_blocks()
    assert len(blocks) >= 2 and all("import" in block for block in blocks)


def test_every_readme_python_block_runs(backbone_dirs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    soundfile.write("speech.flac", np.stack([speechlike(1.5, 44100, seed=1)] * 2, axis=1), 44100)
    soundfile.write("speech.mp3", speechlike(1.2, 22050, seed=2), 22050, format="MP3")
    soundfile.write("clip.wav", speechlike(0.8, 16000, seed=3), 16000)
    namespace = {}
    for index, block in enumerate(readme_python_blocks()):
        for hub_id, which in HUB_IDS.items():
            block = block.replace(f'"{hub_id}"', repr(str(backbone_dirs[which])))
        exec(compile(block, f"README.md python block {index}", "exec"), namespace)
    assert Path("my-adapter/model.safetensors").is_file()
    printed = capsys.readouterr().out
    assert "'aligner': {'trainable'" in printed and "\n[" in printed
