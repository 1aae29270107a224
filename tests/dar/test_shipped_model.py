"""The demo model committed under checkpoints/dar-animals: safetensors within budget, loads, `dar sample` works offline."""

from pathlib import Path

from PIL import Image

from dar import DARPipeline, cli

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "checkpoints" / "dar-animals"


def test_shipped_folders_are_safetensors_within_the_size_budget():
    weights = sorted(SHIPPED.rglob("*.safetensors"))
    assert {p.parent.name for p in weights} == {"tokenizer", "ar_model"}
    assert sum(p.stat().st_size for p in weights) <= 25 * 2**20
    assert not [p for p in SHIPPED.rglob("*") if p.suffix in (".bin", ".pt", ".pkl")]


def test_dar_sample_runs_on_the_shipped_checkpoint(tmp_path, capsys):
    cli.main(["sample", "--classes", "cat", "zebra", "--per-class", "3", "--out", str(tmp_path), "--quiet"])
    grid = Image.open(tmp_path / "samples.png")
    assert grid.size == (3 * 34 + 2, 2 * 34 + 2)  # 32-px images, 2-px borders, one class per row
    assert "samples.png" in capsys.readouterr().out


def test_shipped_pipeline_loads_with_class_names_and_a_stock_llama():
    from transformers import AutoModelForCausalLM

    pipe = DARPipeline.from_pretrained(str(SHIPPED))
    assert pipe.get_label_ids(["bear", "zebra"]) == [0, 9] and pipe.tokenizer.config.image_size == 32
    ar = AutoModelForCausalLM.from_pretrained(SHIPPED / "ar_model")
    assert type(ar).__name__ == "LlamaForCausalLM"
