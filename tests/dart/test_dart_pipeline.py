"""DARTPipeline end to end on tiny random models: call, stream, class names, save / load, the latent (VAE) option."""

import json

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput

from dart import DARTModel, DARTPipeline, DARTStreamStep

NAMES = {0: "cat", 1: "dog", 2: "cow, cattle", 3: "bird"}


def _pipeline(make_model, variant="dart"):
    pipe = DARTPipeline(transformer=make_model(variant, id2label=NAMES))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _tiny_vae():
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=16,
    ).eval()


@pytest.fixture(scope="module")
def pipe(make_model):
    return _pipeline(make_model)


def _gen(seed=7):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("variant", ["dart", "dart_ar", "dart_fm"])
def test_last_stream_step_equals_the_call(make_model, variant):
    pipe = _pipeline(make_model, variant)
    out = pipe([0, "dog"], cfg_scale=2.0, generator=_gen(), output_type="pt")
    assert isinstance(out, ImagePipelineOutput)
    images = out.images
    assert images.shape == (2, 3, 8, 8) and 0 <= float(images.min()) and float(images.max()) <= 1
    steps = list(pipe.stream([0, "dog"], cfg_scale=2.0, generator=_gen(), output_type="pt"))
    assert [s.index for s in steps] == [0, 1, 2, 3] and [s.level for s in steps] == [4, 3, 2, 1]
    assert all(isinstance(s, DARTStreamStep) for s in steps)
    torch.testing.assert_close(steps[-1].preview, images)
    torch.testing.assert_close(steps[-1].sample, images * 2 - 1)
    assert steps[-1].sample.shape == (2, 3, 8, 8) and float(steps[-1].sample.abs().max()) <= 1
    assert not torch.equal(steps[0].preview, steps[-1].preview)


def test_output_types_and_tuple_return(pipe):
    pil = pipe([1, 2], generator=_gen()).images
    assert len(pil) == 2 and isinstance(pil[0], PIL.Image.Image) and pil[0].size == (8, 8)
    array = pipe([1, 2], generator=_gen(), output_type="np").images
    assert isinstance(array, np.ndarray) and array.shape == (2, 8, 8, 3)
    (tensor,) = pipe([1, 2], generator=_gen(), output_type="pt", return_dict=False)
    np.testing.assert_allclose(array, tensor.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="output_type"):
        pipe([1], output_type="latent")


def test_guidance_scale_alias_and_cfg_options(pipe):
    a = pipe([1], cfg_scale=3.0, generator=_gen(), output_type="pt").images
    b = pipe([1], guidance_scale=3.0, generator=_gen(), output_type="pt").images
    default = pipe([1], generator=_gen(), output_type="pt").images
    four = pipe([1], cfg_scale=4.0, generator=_gen(), output_type="pt").images
    assert torch.equal(a, b) and torch.equal(default, four)
    with pytest.raises(ValueError, match="alias"):
        pipe([1], cfg_scale=2.0, guidance_scale=3.0)
    steps = list(
        pipe.stream([1], cfg_schedule="linear", cfg_scale_start=1.0, cfg_scale=4.0, generator=_gen())
    )
    assert [s.cfg_scale for s in steps] == [1.0, 2.0, 3.0, 4.0]


def test_num_images_per_prompt_and_noise(pipe):
    images = pipe([0, 3], num_images_per_prompt=2, generator=_gen(), output_type="pt").images
    assert images.shape == (4, 3, 8, 8) and not torch.equal(images[0], images[1])
    noise = torch.randn(2, 3, 8, 8)
    x = pipe([0, 3], noise=noise, generator=_gen(1), output_type="pt").images
    y = pipe([0, 3], noise=noise, generator=_gen(1), output_type="pt").images
    assert torch.equal(x, y)
    with pytest.raises(ValueError, match="num_images_per_prompt"):
        pipe([0], num_images_per_prompt=0)


def test_class_names(pipe):
    assert pipe.num_classes == 4 and pipe.id2label == NAMES
    assert pipe.get_label_ids(["DOG", "cattle", "cow"]) == [1, 2, 2]
    with pytest.raises(ValueError, match="Known names: cat, dog"):
        pipe.get_label_ids("horse")
    with pytest.raises(ValueError, match="out of range: this model knows classes 0..3"):
        pipe([4])
    with pytest.raises(ValueError, match="empty"):
        pipe([])


def test_save_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "model_index.json").exists() and (tmp_path / "transformer" / "config.json").exists()
    loaded = DARTPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.vae is None and loaded.id2label == NAMES
    a = pipe(["cat", 1], generator=_gen(), output_type="pt").images
    b = loaded(["cat", 1], generator=_gen(), output_type="pt").images
    torch.testing.assert_close(b, a)
    steps = list(loaded.stream(["cat", 1], generator=_gen(), output_type="pt"))
    torch.testing.assert_close(steps[-1].preview, b)


def test_loading_errors_name_the_file_and_never_guess_the_hub(pipe, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    for missing in ("runs/missing", "./missing", str(tmp_path / "missing")):  # local paths: no Hub lookup
        with pytest.raises(FileNotFoundError, match="no DART pipeline folder at"):
            DARTPipeline.from_pretrained(missing)
    with pytest.raises(FileNotFoundError, match="not a local folder.*pass a local folder"):
        DARTPipeline.from_pretrained("no-such-owner-x/no-such-dart")  # an owner/name id, offline
    pipe.save_pretrained(tmp_path / "good")
    shutil.copytree(tmp_path / "good", tmp_path / "index")
    (tmp_path / "index" / "model_index.json").write_text("{oops")
    with pytest.raises(ValueError, match="model_index.json is not valid JSON"):
        DARTPipeline.from_pretrained(tmp_path / "index")
    weights = next((tmp_path / "good" / "transformer").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"{weights.name} is damaged.*re-export"):
        DARTPipeline.from_pretrained(tmp_path / "good")


def test_latent_space_with_a_tiny_vae(make_model, tmp_path):
    vae = _tiny_vae()
    model = make_model(space="latent", image_size=16, in_channels=4, latent_factor=2)
    pipe = DARTPipeline(transformer=model, vae=vae)
    pipe.set_progress_bar_config(disable=True)
    images = pipe([0, 1], generator=_gen(), output_type="pt").images
    assert images.shape == (2, 3, 16, 16)
    steps = list(pipe.stream([0, 1], generator=_gen(), output_type="pt"))
    assert steps[-1].x0.shape == (2, 4, 8, 8)
    torch.testing.assert_close(steps[-1].preview, images)
    # the VAE's own scaling factor maps the model's latents back: decode(x0 / scaling_factor)
    with torch.no_grad():
        expected = vae.decode(steps[-1].x0 / vae.config.scaling_factor).sample.clamp(-1, 1)
    torch.testing.assert_close(steps[-1].sample, expected)
    latents = pipe.encode_images(torch.rand(2, 3, 16, 16) * 2 - 1, generator=_gen())
    assert latents.shape == (2, 4, 8, 8)
    losses = model.training_losses(latents, torch.tensor([0, 1]))
    assert losses.per_level.shape == (4,)
    pipe.save_pretrained(tmp_path)
    loaded = DARTPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.vae, AutoencoderKL)
    torch.testing.assert_close(loaded([0, 1], generator=_gen(), output_type="pt").images, images)


def test_components_must_match():
    latent = DARTModel.from_preset("tiny", space="latent", image_size=16, in_channels=4, latent_factor=2)
    with pytest.raises(ValueError, match="pass the AutoencoderKL"):
        DARTPipeline(transformer=latent)
    with pytest.raises(ValueError, match="pair the model with the VAE"):
        DARTPipeline(
            transformer=latent.__class__.from_preset(
                "tiny", space="latent", image_size=32, in_channels=4, latent_factor=4
            ),
            vae=_tiny_vae(),
        )
    with pytest.raises(ValueError, match="without a vae"):
        DARTPipeline(transformer=DARTModel.from_preset("tiny"), vae=_tiny_vae())
    with pytest.raises(TypeError, match="dart.DARTModel"):
        DARTPipeline(transformer=torch.nn.Linear(2, 2))


def test_encode_images_in_pixel_space(pipe):
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(pipe.encode_images(images), images)
    with pytest.raises(ValueError, match="\\[-1, 1\\]"):
        pipe.encode_images(images * 3)


def test_default_cfg_scale_travels_with_the_folder_and_applies_when_a_call_gives_none(make_model, tmp_path):
    model = make_model("dart", id2label=NAMES)
    pipe = DARTPipeline(transformer=model, default_cfg_scale=7.0)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path)
    loaded = DARTPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.default_cfg_scale == 7.0
    implicit = loaded([0, 1], generator=_gen(), output_type="pt").images
    explicit = loaded([0, 1], cfg_scale=7.0, generator=_gen(), output_type="pt").images
    plain = loaded([0, 1], cfg_scale=4.0, generator=_gen(), output_type="pt").images
    torch.testing.assert_close(implicit, explicit)
    assert not torch.allclose(implicit, plain)
    assert [s.cfg_scale for s in loaded.stream([0], generator=_gen())] == [7.0] * model.config.num_levels
    index = tmp_path / "model_index.json"  # a folder saved before the option existed keeps guidance 4
    index.write_text(
        json.dumps({k: v for k, v in json.loads(index.read_text()).items() if k != "default_cfg_scale"})
    )
    assert DARTPipeline.from_pretrained(tmp_path).config.default_cfg_scale == 4.0


@pytest.mark.parametrize("bad", [0.5, float("nan"), "7", True])
def test_default_cfg_scale_is_validated(make_model, bad):
    with pytest.raises(ValueError, match="default_cfg_scale"):
        DARTPipeline(transformer=make_model("dart", id2label=NAMES), default_cfg_scale=bad)
