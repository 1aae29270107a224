"""Smoke and reliability tests of the training recipes (DESIGN §6, §10) on tiny configs, CPU only.

Three ``accelerate launch`` runs (two of them with two processes) share one module fixture: tokenizer training
on an imagefolder with a corrupt file → code extraction → AR training. Resume and NaN tests call ``main(cfg)``
in-process (the same code path as ``python recipes/X.py``), which avoids ~15 s of imports per launch.
"""

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dar.training.checkpoints import list_checkpoints
from dar.training.config import ARTrainingConfig, DARTTrainingConfig, TokenizerTrainingConfig
from dar.training.config_io import load_config
from dar.training.loop import NonFiniteError, read_jsonl

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "recipes" / "configs"


def _load_recipe(name):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(script, config, overrides, num_processes=1):
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
    ]
    if num_processes > 1:  # `--cpu --num_processes 2` silently runs one process (stack notes)
        cmd += [
            "--multi_gpu",
            "--num_processes",
            str(num_processes),
            "--main_process_port",
            str(_free_port()),
        ]
    else:
        cmd += ["--cpu", "--num_processes", "1"]
    cmd += [str(REPO / "recipes" / script), "--config", str(CONFIGS / config), "--set", *overrides]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("ACCELERATE_USE_CPU", None)  # the recipe itself must form the 2-process CPU group
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def _imagefolder(root):
    rng = np.random.default_rng(0)
    for cls in ("circle", "square"):
        (root / cls).mkdir(parents=True)
        for i in range(4 if cls == "circle" else 3):
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    (root / "square" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # 8 files, 1 unreadable
    return root


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory):
    """Launch tokenizer (2 processes) → extract_codes (2 processes) → AR (1 process) on tiny configs."""
    root = tmp_path_factory.mktemp("recipes")
    images = _imagefolder(root / "images")
    data = ["data.source=imagefolder", f"data.path={images}", "data.label_column=label"]
    tok_dir = root / "tok"
    _launch(
        "train_tokenizer.py",
        "tiny_tokenizer.yaml",
        [*data, f"train.output_dir={tok_dir}", "train.log_with=tensorboard", "train.sample_every=2"],
        num_processes=2,
    )
    codes_dir = root / "codes"
    export = tok_dir / "export" / "tokenizer"
    _launch(
        "extract_codes.py",
        "tiny_codes.yaml",
        [*data, f"tokenizer_path={export}", f"output_dir={codes_dir}"],
        num_processes=2,
    )
    ar_dir = root / "ar"
    _launch(
        "train_llama_ar.py",
        "tiny_ar.yaml",
        [
            "data.source=codes",
            f"data.path={codes_dir}",
            f"model.tokenizer_path={export}",
            f"train.output_dir={ar_dir}",
            "model.noise_scale=0.5",
            "model.sampling_defaults={temperature: 0.8, top_k: 5}",
        ],
    )
    return {"images": images, "tok": tok_dir, "codes": codes_dir, "ar": ar_dir}


def test_tokenizer_launch_two_processes_skips_corrupt_file_and_exports(pipeline_runs):
    from tokenizer import DARTokenizer

    run = pipeline_runs["tok"]
    log = read_jsonl(run / "logs" / "train_log.jsonl")
    assert log[0]["event"] == "start" and log[0]["world_size"] == 2
    steps = [r for r in log if "step" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert steps[-1]["skipped_images"] >= 1  # the corrupt file was read (8 files, 2 steps per epoch)
    assert all(np.isfinite(r["loss"]) for r in steps)
    tok = DARTokenizer.from_pretrained(run / "export" / "tokenizer")
    codes = tok.encode(torch.rand(2, 3, 16, 16) * 2 - 1)
    assert codes.shape == (2, tok.config.num_tokens)
    assert (run / "samples" / "step_00000002.png").is_file() and (run / "samples" / "final.png").is_file()
    assert any((run / "logs").glob("**/events.out.tfevents.*"))  # tensorboard through accelerate trackers
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [3]


def test_extract_codes_two_processes_writes_tagged_shards(pipeline_runs):
    from dar.data.codes import load_codes

    code_set = load_codes(pipeline_runs["codes"])
    index = code_set.index
    assert index.extra["world_size"] == 2 and index.extra["skipped_images"] == 1 and index.num_rows == 7
    assert {name.split("-")[1] for name in index.shards} == {"r000", "r001"}
    assert code_set.codes.shape == (7, 10, 16) and index.class_names == ["circle", "square"]
    assert int(code_set.codes.max()) < index.codebook_size


def test_ar_launch_exports_stock_llama(pipeline_runs):
    from transformers import AutoModelForCausalLM

    from llama_ar import VocabLayout
    from tokenizer import DARTokenizer

    run = pipeline_runs["ar"]
    steps = [r for r in read_jsonl(run / "logs" / "train_log.jsonl") if "step" in r]
    assert [r["step"] for r in steps] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in steps)
    model = AutoModelForCausalLM.from_pretrained(run / "export" / "ar_model")
    assert type(model).__name__ == "LlamaForCausalLM"
    layout = VocabLayout.from_config(model.config)
    assert (layout.codebook_size, layout.num_classes) == (64, 2)
    from dar.pipeline import DARPipeline

    # tokenizer_path was set: the pair is also exported as one pipeline folder
    pipe = DARPipeline.from_pretrained(run / "export" / "pipeline")
    assert pipe.vocab_layout == layout and pipe.tokenizer.config.codebook_size == 64
    # model.noise_scale went into the pipeline's tokenizer, and only there; the weights are the tokenizer's
    tok = DARTokenizer.from_pretrained(pipeline_runs["tok"] / "export" / "tokenizer")
    assert pipe.tokenizer.config == tok.config.replace(noise_scale=0.5)
    for name, weight in tok.state_dict().items():
        assert torch.equal(pipe.tokenizer.state_dict()[name], weight), name
    # model.sampling_defaults went into generation_config.json, where the pipeline and generate() read them
    assert (model.generation_config.temperature, model.generation_config.top_k) == (0.8, 5)
    assert pipe.sampling_defaults == {"temperature": 0.8, "top_k": 5, "top_p": 1.0}


def test_ar_refuses_codes_of_another_tokenizer(pipeline_runs, tmp_path):
    from dar.data.codes import TokenizerMismatchError
    from tokenizer import DARTokenizer

    other = tmp_path / "other_tokenizer"
    DARTokenizer.from_preset("tiny").save_pretrained(other)
    cfg = load_config(
        CONFIGS / "tiny_ar.yaml",
        ARTrainingConfig,
        [
            "data.source=codes",
            f"data.path={pipeline_runs['codes']}",
            f"model.tokenizer_path={other}",
            f"train.output_dir={tmp_path / 'ar'}",
        ],
    )
    with pytest.raises(TokenizerMismatchError, match="another tokenizer"):
        _load_recipe("train_llama_ar").main(cfg)


def _losses(run_dir):
    return [r["loss"] for r in read_jsonl(run_dir / "logs" / "train_log.jsonl") if "step" in r]


@pytest.mark.parametrize("recipe", ["tokenizer", "ar"])
def test_resume_gives_the_same_losses(recipe, pipeline_runs, tmp_path):
    if recipe == "tokenizer":
        module, cls, config = _load_recipe("train_tokenizer"), TokenizerTrainingConfig, "tiny_tokenizer.yaml"
        extra = ["data.synthetic_size=16"]
    else:
        module, cls, config = _load_recipe("train_llama_ar"), ARTrainingConfig, "tiny_ar.yaml"
        extra = [
            "data.source=codes",
            f"data.path={pipeline_runs['codes']}",
            f"model.tokenizer_path={pipeline_runs['tok'] / 'export' / 'tokenizer'}",
        ]
    # micro-batches of 2 (2 accumulation steps): 8 (tokenizer) or 3 (AR, 7 rows) per epoch, so 12 cross an epoch
    common = [*extra, "train.save_every=3", "optim.grad_accum=2", "ema.enabled=true"]
    module.main(
        load_config(
            CONFIGS / config, cls, [*common, "train.max_steps=6", f"train.output_dir={tmp_path / 'a'}"]
        )
    )
    run_b = [*common, f"train.output_dir={tmp_path / 'b'}"]
    module.main(load_config(CONFIGS / config, cls, [*run_b, "train.max_steps=3"]))
    module.main(load_config(CONFIGS / config, cls, [*run_b, "train.max_steps=6", "train.resume=latest"]))
    straight, resumed = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert len(straight) == len(resumed) == 6
    assert straight == resumed
    starts = [r for r in read_jsonl(tmp_path / "b" / "logs" / "train_log.jsonl") if r.get("event") == "start"]
    assert starts[1]["start_step"] == 3 and starts[1]["resumed_from"].endswith("checkpoint-00000003")


def test_nan_loss_stops_naming_the_step_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    from tokenizer import TokenizerLossModule

    module = _load_recipe("train_tokenizer")
    forward, calls = TokenizerLossModule.forward, {"n": 0}

    def poisoned(self, *args, **kwargs):  # the loss of step 3 turns NaN
        calls["n"] += 1
        terms = forward(self, *args, **kwargs)
        return {**terms, "loss": terms["loss"] * float("nan")} if calls["n"] == 3 else terms

    monkeypatch.setattr(TokenizerLossModule, "forward", poisoned)
    cfg = load_config(
        CONFIGS / "tiny_tokenizer.yaml",
        TokenizerTrainingConfig,
        ["train.save_every=1", "train.max_steps=5", f"train.output_dir={tmp_path}"],
    )
    with pytest.raises(NonFiniteError, match=r"at step 3.*checkpoint-00000002"):
        module.main(cfg)
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [1, 2]
    assert not (tmp_path / "export").exists()
    monkeypatch.undo()
    resumed = load_config(
        CONFIGS / "tiny_tokenizer.yaml",
        TokenizerTrainingConfig,
        ["train.max_steps=3", "train.resume=latest", f"train.output_dir={tmp_path}"],
    )
    assert module.main(resumed)["step"] == 3  # the kept checkpoint loads and training goes on


def test_a_fresh_run_never_takes_over_a_used_output_dir(tmp_path):
    module = _load_recipe("train_tokenizer")
    run = ["train.max_steps=2", "train.save_every=1", f"train.output_dir={tmp_path}"]
    module.main(load_config(CONFIGS / "tiny_tokenizer.yaml", TokenizerTrainingConfig, run))
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    with pytest.raises(FileExistsError, match="--resume latest.*--overwrite"):
        module.main(load_config(CONFIGS / "tiny_tokenizer.yaml", TokenizerTrainingConfig, run))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before  # nothing touched
    with pytest.raises(
        ValueError, match="other.*optim.*settings"
    ):  # resuming with another config is refused too
        module.main(
            load_config(
                CONFIGS / "tiny_tokenizer.yaml",
                TokenizerTrainingConfig,
                [*run, "train.resume=latest", "optim.lr=0.5"],
            )
        )
    module.main(
        load_config(CONFIGS / "tiny_tokenizer.yaml", TokenizerTrainingConfig, [*run, "train.overwrite=true"])
    )
    starts = [r for r in read_jsonl(tmp_path / "logs" / "train_log.jsonl") if r.get("event") == "start"]
    assert len(starts) == 1 and starts[0]["start_step"] == 0  # the old run's log went with it


@pytest.mark.parametrize("recipe", ["train_tokenizer", "train_llama_ar", "train_dart", "extract_codes"])
def test_recipe_command_errors_are_one_line_naming_the_fix(recipe, tmp_path):
    (tmp_path / "config.yaml").write_text("used: true\n")  # a used output folder
    config = {"extract_codes": "tiny_codes", "train_llama_ar": "tiny_ar"}.get(
        recipe, recipe.replace("train_", "tiny_")
    )
    done = subprocess.run(
        [sys.executable, str(REPO / "recipes" / f"{recipe}.py"), "--config", str(CONFIGS / f"{config}.yaml")]
        + [
            "--set",
            f"train.output_dir={tmp_path}" if recipe != "extract_codes" else f"output_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "DAR_TRACEBACK": ""},
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith(f"{recipe}.py: error: ") and str(tmp_path) in message, message
    assert recipe == "extract_codes" or "--overwrite" in message, message


def test_resume_never_unpickles_registered_objects(tmp_path, monkeypatch):
    module = _load_recipe("train_tokenizer")
    run = ["train.max_steps=2", "train.save_every=2", f"train.output_dir={tmp_path}"]
    module.main(load_config(CONFIGS / "tiny_tokenizer.yaml", TokenizerTrainingConfig, run))
    checkpoint = tmp_path / "checkpoints" / "checkpoint-00000002"
    assert not list(checkpoint.glob("custom_checkpoint_*.pkl"))

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save(Evil(), checkpoint / "custom_checkpoint_0.pkl")  # a crafted file in someone else's checkpoint
    resume = ["train.max_steps=3", f"train.resume={checkpoint}", f"train.output_dir={tmp_path}"]
    with pytest.raises(ValueError, match="custom_checkpoint_0.pkl is a pickle"):
        module.main(load_config(CONFIGS / "tiny_tokenizer.yaml", TokenizerTrainingConfig, resume))
    assert not (tmp_path / "pwned").exists()


def test_dart_recipe_trains_logs_every_level_resumes_exactly_and_exports(tmp_path):
    from dart import DARTPipeline

    module = _load_recipe("train_dart")
    common = ["train.save_every=2", "optim.grad_accum=2", "train.sample_every=2"]
    straight = tmp_path / "a"
    module.main(
        load_config(
            CONFIGS / "tiny_dart.yaml",
            DARTTrainingConfig,
            [*common, "train.max_steps=4", f"train.output_dir={straight}"],
        )
    )
    run_b = [*common, f"train.output_dir={tmp_path / 'b'}"]
    module.main(load_config(CONFIGS / "tiny_dart.yaml", DARTTrainingConfig, [*run_b, "train.max_steps=2"]))
    module.main(
        load_config(
            CONFIGS / "tiny_dart.yaml",
            DARTTrainingConfig,
            [*run_b, "train.max_steps=4", "train.resume=latest"],
        )
    )
    assert _losses(straight) == _losses(tmp_path / "b")
    record = [r for r in read_jsonl(straight / "logs" / "train_log.jsonl") if "step" in r][-1]
    assert {f"level_{t}" for t in range(1, 5)} <= set(record)  # the loss of every level is logged
    assert (straight / "samples" / "step_00000002.png").is_file()
    pipe = DARTPipeline.from_pretrained(straight / "export" / "pipeline")
    assert pipe.id2label == {i: f"class_{i}" for i in range(4)}  # class names travel with the folder
    images = pipe([0, 3], generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert images.shape == (2, 3, 8, 8)


def test_split_codebook_stage_trains_resumes_and_exports_the_larger_codebook(pipeline_runs, tmp_path):
    from tokenizer import DARTokenizer

    module = _load_recipe("train_tokenizer")
    source = pipeline_runs["tok"] / "export" / "tokenizer"
    common = [
        "data.synthetic_size=16",
        "model.overrides={}",
        f"model.init_from={source}",
        "model.split_codebook=2",
        "train.save_every=2",
    ]

    def run(name, steps, *extra):
        overrides = [*common, f"train.max_steps={steps}", f"train.output_dir={tmp_path / name}", *extra]
        module.main(load_config(CONFIGS / "tiny_tokenizer.yaml", TokenizerTrainingConfig, overrides))

    run("a", 4)
    run("b", 2)
    run("b", 4, "train.resume=latest")
    assert _losses(tmp_path / "a") == _losses(
        tmp_path / "b"
    )  # the split is rebuilt, then the checkpoint wins
    before = DARTokenizer.from_pretrained(source).config
    after = DARTokenizer.from_pretrained(tmp_path / "a" / "export" / "tokenizer").config
    assert after == before.replace(codebook_size=2 * before.codebook_size)

    class Brightness:  # a stand-in judge for the learning curve, which rebuilds the split to load checkpoints
        def predict(self, images):
            return (images.mean(dim=(1, 2, 3)) > 0).long()

    from dar.bench.learning_curve import tokenizer_curve

    images = torch.rand(4, 3, after.image_size, after.image_size) * 2 - 1
    rows = tokenizer_curve(tmp_path / "a", images, torch.tensor([0, 1, 0, 1]), Brightness(), with_init=True)
    assert [r["step"] for r in rows] == [0, 2, 4]
    with pytest.raises(ValueError, match="set model.init_from"):
        load_config(CONFIGS / "tiny_tokenizer.yaml", TokenizerTrainingConfig, ["model.split_codebook=2"])
