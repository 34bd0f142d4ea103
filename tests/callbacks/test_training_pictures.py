"""TrainingPictures: pictures of the user's own classifier while it trains (issue 14, item 3)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks.training_pictures import TrainingPictures
from lightning_modules.errors import UserInputError
from lightning_modules.saliency import CaptumMethod, GradCAM, IntegratedGradients, SmoothGrad

# The test extra installs tensorboard.
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class TinyClassifier(pl.LightningModule):
    """A user's model: batch norm and dropout (a mode and the global generator matter)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.3), nn.Linear(32, 4))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        images, labels = batch
        return nn.functional.cross_entropy(self(images), labels)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        images, labels = batch
        self.log("val_loss", nn.functional.cross_entropy(self(images), labels))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def loaders() -> tuple[DataLoader, DataLoader]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(48, 3, 16, 16, generator=generator)
    labels = torch.randint(4, (48,), generator=generator)
    # Shuffling draws from the global generator: the callback must not move it.
    train = DataLoader(TensorDataset(images[:32], labels[:32]), batch_size=8, shuffle=True)
    return train, DataLoader(TensorDataset(images[32:], labels[32:]), batch_size=8)


def train(root: Path, callback: Optional[TrainingPictures], logger: object = None,
          epochs: int = 2) -> TinyClassifier:
    pl.seed_everything(0, verbose=False)
    model = TinyClassifier()
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", deterministic=True, default_root_dir=root,
        logger=logger if logger is not None else TensorBoardLogger(root, name="logs"),
        callbacks=[callback] if callback else [], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1)
    trainer.fit(model, *loaders())
    return model


def pictures(**options) -> TrainingPictures:
    defaults = dict(saliency_method="smoothgrad", saliency_options={"samples": 3},
                    classes=[0, "2"], class_steps=3, class_size=16, mean=MEAN, std=STD, seed=5)
    return TrainingPictures(**{**defaults, **options})


def event_images(run: Path) -> EventAccumulator:
    [event_file] = run.glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(event_file), size_guidance={"images": 0})
    accumulator.Reload()
    return accumulator


def test_training_ends_with_the_same_weights_with_and_without_it(tmp_path: Path) -> None:
    without = train(tmp_path / "without", None)
    with_pictures = train(tmp_path / "with", pictures())
    assert list((tmp_path / "with").rglob("saliency_epoch001.png"))  # it did draw
    for (name, a), (_, b) in zip(without.state_dict().items(),
                                 with_pictures.state_dict().items()):
        assert torch.equal(a, b), name  # bit-equal, batch-norm statistics included


def test_tensorboard_holds_its_pictures_as_on_disk(tmp_path: Path) -> None:
    train(tmp_path, pictures(every_n_epochs=1))
    [run] = (tmp_path / "logs").glob("version_*")
    accumulator = event_images(run)
    assert {"training_pictures/saliency", "training_pictures/classes"} <= set(
        accumulator.Tags()["images"])
    saliency = accumulator.Images("training_pictures/saliency")
    assert [event.step for event in saliency] == [4, 8]  # after each of the 2 epochs
    last = np.asarray(Image.open(io.BytesIO(saliency[-1].encoded_image_string)).convert("RGB"))
    on_disk = np.asarray(Image.open(run / "training_pictures" / "saliency_epoch001.png")
                         .convert("RGB"))
    assert np.array_equal(last, on_disk)
    assert len(accumulator.Images("training_pictures/classes")) == 2


def test_a_csv_logger_gets_the_pngs_in_its_folder(tmp_path: Path) -> None:
    callback = pictures(every_n_epochs=2, saliency_method="gradcam", saliency_options={},
                        target="predicted", model="net")
    train(tmp_path, callback, logger=CSVLogger(tmp_path, name="csv"))
    folder = tmp_path / "csv" / "version_0" / "training_pictures"
    assert sorted(p.name for p in folder.iterdir()) == ["classes_epoch001.png",
                                                        "saliency_epoch001.png"]


def test_it_leaves_gradients_modes_and_requires_grad_as_they_were(workdir: Path) -> None:
    model = TinyClassifier()
    images = torch.randn(3, 3, 16, 16)
    model.train()
    model.net[1].eval()  # a mixed state, as a user may leave it
    model.net[0].weight.requires_grad_(False)
    model(images).sum().backward()
    grads = {name: None if p.grad is None else p.grad.clone()
             for name, p in model.named_parameters()}
    modes = [module.training for module in model.modules()]
    callback = pictures(images=images, labels=[0, 1, 2], saliency_method="integrated_gradients",
                        saliency_options={"steps": 4, "baseline": "black"})
    state = torch.random.get_rng_state()
    written = callback.render(None, model)
    assert [path.name for path in written] == ["saliency_epoch000.png", "classes_epoch000.png"]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert [module.training for module in model.modules()] == modes
    assert not model.net[0].weight.requires_grad and model.net[3].weight.requires_grad
    for name, parameter in model.named_parameters():
        if grads[name] is None:
            assert parameter.grad is None, name
        else:
            assert torch.equal(parameter.grad, grads[name]), name


@pytest.mark.parametrize("method", ["vanilla", "gradcam++", "scorecam", "guided_gradcam"])
def test_every_method_draws_a_sheet(workdir: Path, method: str) -> None:
    callback = TrainingPictures(images=torch.randn(2, 3, 16, 16), labels=[1, 3],
                                saliency_method=method, mean=MEAN, std=STD,
                                model="net", saliency_options={"layer": "3"}
                                if method != "vanilla" else {})
    [sheet] = callback.render(None, TinyClassifier())
    assert Image.open(sheet).width > 100


@pytest.mark.parametrize("name, options, method", [
    ("smoothgrad", {"samples": 3, "noise_level": 0.3}, SmoothGrad(noise_level=0.3, samples=3)),
    ("gradcam", {"layer": "3"}, GradCAM(layer="3")),
    # As its function had it: Integrated Gradients from the zero baseline, its rule `method`.
    ("integrated_gradients", {"steps": 4, "method": "riemann_left"},
     IntegratedGradients(baseline="zero", steps=4, integration="riemann_left")),
    # Any method of the one registry draws here too, Captum's included.
    ("captum:Saliency", {"reduction": "abs_max"},
     CaptumMethod("Saliency", baseline="zero", reduction="abs_max")),
])
def test_a_method_object_draws_the_sheet_of_its_short_name(tmp_path: Path, name: str,
                                                           options: dict, method) -> None:
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    sheets = []
    for index, given in enumerate([(name, options), (method, None)]):
        callback = TrainingPictures(images=images, labels=[1, 3], saliency_method=given[0],
                                    saliency_options=given[1], mean=MEAN, std=STD, model="net",
                                    seed=4)
        callback.directory = tmp_path / str(index)
        torch.manual_seed(0)
        [sheet] = callback.render(None, TinyClassifier())
        sheets.append(np.asarray(Image.open(sheet)))
    assert np.array_equal(sheets[0], sheets[1])


def test_a_method_object_takes_no_saliency_options() -> None:
    with pytest.raises(UserInputError, match="saliency_options are for a method given by its "
                                             "short name; SmoothGrad takes its options itself"):
        pictures(saliency_method=SmoothGrad(), saliency_options={"samples": 3})


@pytest.mark.parametrize("options, message", [
    ({"every_n_epochs": 0}, "every_n_epochs must be a whole number of at least 1"),
    ({"class_size": 4}, "class_size must be a whole number of at least 8"),
    ({"saliency_method": "gradcam+"}, "Unknown saliency method 'gradcam+'"),
    ({"saliency_method": None, "classes": None}, "nothing to draw"),
    ({"saliency_options": {"sample": 3}}, "Unknown saliency_options entry 'sample'"),
    ({"class_options": {"image_size": 3}}, "Unknown class_options entry 'image_size'"),
    ({"target": "label"}, "Unknown target 'label'"),
    ({"images": torch.zeros(2, 1, 8, 8)}, "images must be normalized images [N, 3, H, W]"),
    ({"labels": [1, 2]}, "labels must come with images"),
])
def test_bad_options_are_one_sentence(options: dict, message: str) -> None:
    with pytest.raises(UserInputError) as error:
        pictures(**options)
    assert message in str(error.value) and str(error.value).count(". ") == 0


def test_an_unknown_class_or_layer_fails_before_training(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="Class index 9 is out of range"):
        train(tmp_path, pictures(classes=[9]), epochs=1)
    with pytest.raises(UserInputError, match="Unknown CAM layer"):
        train(tmp_path, pictures(saliency_method="gradcam", saliency_options={"layer": "conv"}),
              epochs=1)


def test_true_target_without_labels_says_what_to_do(workdir: Path) -> None:
    callback = TrainingPictures(images=torch.randn(2, 3, 16, 16), mean=MEAN, std=STD)
    with pytest.raises(UserInputError, match="give labels= or set target='predicted'"):
        callback.render(None, TinyClassifier())
