import csv
import json

import soundfile
from conftest import ROOT, speechlike

import ablate


def test_ablation_runs_each_variant_and_writes_one_table(backbone_dirs, tmp_path):
    rows = []
    for index, text in enumerate(["the quick fox", "a lazy dog"]):
        soundfile.write(tmp_path / f"{index}.wav", speechlike(0.8, seed=index), 16000)
        rows.append(json.dumps({"audio": f"{index}.wav", "text": text}))
    (tmp_path / "data.jsonl").write_text("\n".join(rows) + "\n")
    out = tmp_path / "ablation"
    ablate.main([
        str(ROOT / "configs" / "demo.yaml"), "--variants", "layerwise", "linear", "--output_dir", str(out), "--",
        "--audio_model_id", str(backbone_dirs[0]), "--text_model_id", str(backbone_dirs[1]),
        "--train_files", str(tmp_path / "data.jsonl"), "--eval_files", str(tmp_path / "data.jsonl"),
        "--max_steps", "2", "--eval_on_start", "false", "--generation_max_new_tokens", "2",
    ])  # fmt: skip
    with open(out / "ablation.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [row["variant"] for row in table] == ["layerwise", "linear"]
    layerwise, linear = (json.loads((out / name / "results.json").read_text()) for name in ("layerwise", "linear"))
    assert int(table[0]["trainable_parameters"]) == layerwise["parameters"]["total"]["trainable"]
    assert int(table[1]["trainable_parameters"]) == linear["parameters"]["total"]["trainable"]
    assert int(table[1]["trainable_parameters"]) < int(table[0]["trainable_parameters"])
    assert float(table[0]["peak_rss_mb"]) > 0 and (out / "ablation.png").stat().st_size > 0
    assert "| layerwise |" in (out / "ablation.md").read_text()
