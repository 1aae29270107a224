"""The demo-domain judge: shapes, feature extractor contract, and that it learns a separable toy problem."""

import pytest
import torch

from dar.demo.classifier import ShapeClassifier, per_class_accuracy, shift_augment, train_classifier
from dar.evaluation.features import ClassifierFeatureExtractor


def _toy_data(n_per_class=24, size=16):
    """Class 0: bright left half; class 1: bright right half (plus noise)."""
    g = torch.Generator().manual_seed(0)
    images = torch.full((2 * n_per_class, 3, size, size), -1.0)
    images[:n_per_class, :, :, : size // 2] = 1.0
    images[n_per_class:, :, :, size // 2 :] = 1.0
    images += 0.3 * torch.randn(images.shape, generator=g)
    labels = torch.arange(2).repeat_interleave(n_per_class)
    return images, labels


def test_shapes_and_validation():
    model = ShapeClassifier(num_classes=3, image_size=16, width=4, num_features=8).eval()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    assert model(images).shape == (2, 3)
    assert model.features(images).shape == (2, 8)
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\)"):
        model(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="float"):
        model(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="multiple of 8"):
        ShapeClassifier(image_size=12)


def test_feature_extractor_gives_the_classifier_features_and_logits_of_uint8_images():
    model = ShapeClassifier(num_classes=2, image_size=16, width=4, num_features=8).eval()
    extractor = ClassifierFeatureExtractor(model)
    assert extractor.num_features == 8 and extractor.has_logits
    as_uint8 = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    features, logits = extractor.features_and_logits(as_uint8)
    torch.testing.assert_close(features, model.features(as_uint8.float() / 127.5 - 1))
    torch.testing.assert_close(logits, model(as_uint8.float() / 127.5 - 1))
    with pytest.raises(ValueError, match="uint8"):
        extractor(as_uint8.float())


def test_shift_augment_is_a_seeded_translation():
    images = torch.rand(4, 3, 8, 8)
    a = shift_augment(images, 2, torch.Generator().manual_seed(1))
    b = shift_augment(images, 2, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == images.shape
    assert torch.equal(shift_augment(images, 0), images)


def test_learns_a_separable_problem():
    images, labels = _toy_data()
    model = ShapeClassifier(num_classes=2, image_size=16, width=4, num_features=8)
    history = train_classifier(
        model, images, labels, epochs=12, batch_size=16, generator=torch.Generator().manual_seed(0)
    )
    assert history[-1] < history[0]
    predictions = model.predict(images)
    assert min(per_class_accuracy(predictions, labels, 2)) > 0.9
