"""Tests of the shared base: jobs and chunks, metrics, parameterizations, update rules, the one
data path, checkpoint contents, naming, and the layering rules (functional code without
Lightning, modules that write no file and import no callback)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from callbacks import FoolingReport
from datamodules import StepLoader, StyleTransferData
from lightning_modules import StyleTransfer
from lightning_modules.errors import DivergedError, UserInputError
from lightning_modules.fooling import FoolingImage, ProjectedStep, SeedStep
from lightning_modules.image_optimization import (
    FourierImage,
    GradientAscent,
    JobPlan,
    LossRecord,
    PixelImage,
    make_parameterization,
    size_groups,
)
from lightning_modules.naming import class_file_name, safe_name, unique_names

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- jobs
def test_job_plan_shares_each_chunk_between_processes() -> None:
    jobs = list("abcde")
    plans = [JobPlan(jobs, batch_size=2, world_size=2, rank=rank) for rank in (0, 1)]
    assert plans[0].chunks == [[0, 1, 2, 3], [4]]
    assert [plan.current() for plan in plans] == [["a", "c"], ["b", "d"]]
    for plan in plans:
        plan.chunk = 1
    # Rank 1 has nothing in the last chunk: it repeats rank 0's job and is idle.
    assert [plan.indices for plan in plans] == [[4], [4]]
    assert [plan.idle for plan in plans] == [False, True]
    assert plans[1].chunk_size == 1


def test_job_plan_keeps_sizes_apart_and_refuses_no_jobs() -> None:
    plan = JobPlan(list("abcd"), sizes=[(8, 8), (9, 9), (8, 8), (9, 9)], batch_size=4)
    assert plan.chunks == [[0, 2], [1, 3]]
    with pytest.raises(UserInputError, match="nothing to optimize"):
        JobPlan([])


def test_size_groups_give_each_job_a_row_of_its_size() -> None:
    slots, groups = size_groups(["a", "b", "c"], [(8, 8), (9, 9), (8, 8)])
    assert [(s.name, s.group, s.row) for s in slots] == [("a", 0, 0), ("b", 1, 0), ("c", 0, 1)]
    assert groups == [[0, 2], [1]]


# --------------------------------------------------------------------------- metrics
def test_loss_record_keeps_rows_and_stops_on_nan() -> None:
    record = LossRecord()
    record.append(1, {"a_loss": torch.tensor(2.0), "loss": torch.tensor(3.0)}, scale=0.5)
    record.append(2, {"a_loss": torch.tensor(4.0), "loss": torch.tensor(6.0)}, scale=0.5)
    assert record.flush().tolist() == [2.0, 3.0]
    assert record.take_rows() == [{"step": 1.0, "a_loss": 1.0, "loss": 1.5},
                                  {"step": 2.0, "a_loss": 2.0, "loss": 3.0}]
    record.append(3, {"a_loss": torch.tensor(float("nan")), "loss": torch.tensor(1.0)}, 1.0)
    with pytest.raises(DivergedError, match="step 2"):
        record.flush()


# --------------------------------------------------------------------------- parameterizations
def test_parameterizations_render_keep_valid_and_smooth_on_their_own_terms() -> None:
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)
    low, high = -mean / std, (1 - mean) / std
    generator = torch.Generator().manual_seed(0)
    pixel = PixelImage(init_std=3.0)
    image = pixel.start(2, 8, 8, low, high, generator)
    assert image.min() >= low.min() and image.max() <= high.max()
    moved = image + 10
    pixel.project_(moved, low, high)
    assert torch.equal(moved, high.expand_as(moved))
    noisy = torch.randn(1, 3, 8, 8, generator=generator)
    smoothed = noisy.clone()
    pixel.smooth_(smoothed, 1.0)
    assert smoothed.std() < noisy.std()
    fourier = FourierImage()
    spectrum = fourier.start(2, 8, 8, low, high, generator) * 500
    before = spectrum.clone()
    fourier.project_(spectrum, low, high)
    fourier.smooth_(spectrum, 1.0)
    assert torch.equal(spectrum, before)  # a spectrum needs neither: its sigmoid keeps pixels valid
    pixels = fourier.to_pixels(spectrum, mean, std)
    assert pixels.shape == (2, 3, 8, 8) and 0 <= pixels.min() and pixels.max() <= 1
    torch.testing.assert_close(fourier.to_inputs(spectrum, mean, std), (pixels - mean) / std)
    assert pixel.normalized_lr != fourier.normalized_lr
    with pytest.raises(UserInputError, match="Unknown parameterization 'wavelet'"):
        make_parameterization("wavelet")


@pytest.mark.parametrize("width, decay_power", [(13, 1.0), (10, 1.0), (11, 0.5)])
def test_a_picture_encoded_as_a_spectrum_renders_back_as_itself(width, decay_power) -> None:
    """Image-seeded runs (style transfer, each coarse-to-fine scale) start from a picture's
    spectrum; odd and even widths share a spectrum shape, so the width is given."""
    mean, std = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    pixels = 0.05 + 0.9 * torch.rand(2, 3, 9, width, generator=torch.Generator().manual_seed(0))
    fourier = FourierImage(decay_power)
    spectrum = fourier.encode(pixels, mean, std)
    assert spectrum.shape == (2, 3, 9, width // 2 + 1, 2)
    torch.testing.assert_close(fourier.to_pixels(spectrum, mean, std, width), pixels,
                               atol=1e-5, rtol=0)
    other = width + 1 if width % 2 == 0 else width - 1  # the same spectrum shape
    assert fourier.to_pixels(spectrum, mean, std, other).shape[-1] == other
    pixel = PixelImage()
    torch.testing.assert_close(pixel.to_pixels(pixel.encode(pixels, mean, std), mean, std), pixels)


# --------------------------------------------------------------------------- update rules
def test_steps_leave_a_row_with_zero_gradient_exactly_as_it_is() -> None:
    mean, std = (0.5,) * 3, (0.25,) * 3
    for make in (lambda p: GradientAscent(p, lr=1.0), lambda p: SeedStep(p, 1.0, mean, std),
                 lambda p: ProjectedStep(p, 0.1, 0.05, "linf", mean, std)):
        image = torch.nn.Parameter(torch.rand(2, 3, 4, 4) - 0.5)
        before = image.detach().clone()
        image.grad = torch.zeros_like(image)
        image.grad[1] = torch.randn(3, 4, 4)
        make([image]).step()
        assert torch.equal(image[0], before[0])
        assert not torch.equal(image[1], before[1])


# --------------------------------------------------------------------------- the data path
def test_jobs_reach_a_module_through_set_jobs_without_a_datamodule(content_image: Path,
                                                                  tmp_path: Path) -> None:
    data = StyleTransferData(content=str(content_image), style=None, image_size=16)
    data.setup("fit")
    from lightning_modules import FeatureInversion

    module = FeatureInversion(backbone="tiny", weights="random", content_layers=[2])
    module.set_jobs(data.jobs)
    pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, default_root_dir=tmp_path).fit(
        module, train_dataloaders=StepLoader())
    assert [slot.name for slot in module.slots] == ["content"]


def test_a_module_without_its_data_says_which_it_needs(tmp_path: Path) -> None:
    module = StyleTransfer(backbone="tiny", weights="random", content_layers=[2],
                           style_layers=[1, 2], style_weights=[1.0, 1.0])
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=tmp_path)
    with pytest.raises(UserInputError, match="needs a StyleTransferData datamodule"):
        trainer.fit(module, train_dataloaders=StepLoader())


def test_fooling_report_comes_with_the_module_and_is_right_whatever_the_order(
        tmp_path: Path) -> None:
    """FoolingImage brings its report (one, replacing the Trainer's); it judges each job on the
    8-bit picture that ImageWriter saves, so before or after the writer its CSV is the same, and
    agrees with the PNG read back. A run that saves no pictures writes no CSV either."""
    import csv

    from callbacks import ImageWriter
    from datamodules import LabeledImageData
    from datamodules.images import image_to_tensor, load_image

    orders = {"writer_first": lambda: [ImageWriter(), FoolingReport()],
              "report_first": lambda: [FoolingReport(), ImageWriter()],
              "module_brings_it": lambda: [ImageWriter()],
              "saves_nothing": lambda: []}
    for folder, callbacks in orders.items():
        module = FoolingImage(backbone="tiny", weights="random", target=3)
        trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             default_root_dir=tmp_path / folder, callbacks=callbacks())
        trainer.fit(module, LabeledImageData(image_size=16))
        assert sum(isinstance(c, FoolingReport) for c in trainer.callbacks) == 1, folder
    assert not (tmp_path / "saves_nothing").exists()
    results = {folder: (tmp_path / folder / "fooling_results.csv").read_text()
               for folder in orders if folder != "saves_nothing"}
    assert len(set(results.values())) == 1, results
    rows = list(csv.DictReader(results["report_first"].splitlines()))
    assert len(rows) == 3
    with torch.no_grad():
        for row, job in zip(rows, module.jobs):
            saved = image_to_tensor(load_image(tmp_path / "report_first" / f"{row['name']}.png"))
            probabilities = module.backbone(module.backbone.normalize(saved[None])).softmax(1)[0]
            assert float(row["p_target"]) == pytest.approx(
                float(probabilities[job.target_class]), abs=1e-5)
            assert float(row["linf"]) == pytest.approx(float((saved - job.pixels).abs().max()),
                                                       abs=1e-6)


def test_one_image_writer_writes_the_results_of_every_fit_it_watches(
        content_image: Path, style_image: Path, tmp_path: Path) -> None:
    """A callback that finished chunk 0 of one fit must finish chunk 0 of the next one too."""
    import csv

    from callbacks import ImageWriter, LossHistory

    writer, history = ImageWriter(), LossHistory()
    for folder in ("first", "second"):
        module = StyleTransfer(backbone="tiny", weights="random", content_layers=[2],
                               style_layers=[1, 2], style_weights=[1.0, 1.0])
        trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             default_root_dir=tmp_path / folder, callbacks=[writer, history])
        trainer.fit(module, StyleTransferData(content=str(content_image),
                                              style=str(style_image), image_size=16))
        assert (tmp_path / folder / "content__style.png").is_file(), folder
        rows = list(csv.DictReader(open(tmp_path / folder / "losses.csv")))
        assert [row["step"] for row in rows] == ["1", "2"], folder  # not the first fit's too


# --------------------------------------------------------------------------- checkpoints
def test_checkpoint_holds_images_jobs_and_losses_but_not_the_backbone(
        content_image: Path, style_image: Path, tmp_path: Path) -> None:
    module = StyleTransfer(backbone="tiny", weights="random", content_layers=[2],
                           style_layers=[1, 2], style_weights=[1.0, 1.0])
    trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, log_every_n_steps=1)
    trainer.fit(module, StyleTransferData(content=str(content_image), style=str(style_image),
                                          image_size=16))
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    saved = torch.load(tmp_path / "run.ckpt", weights_only=False)
    assert list(saved["state_dict"]) == ["images.0"]
    assert saved["image_jobs"] == {"chunk": 0, "world_size": 1,
                                   "slots": [["content__style", 0, 0]], "optimizer": "Adam"}
    assert [row["step"] for row in saved["loss_rows"]] == [1.0, 2.0, 3.0]


# --------------------------------------------------------------------------- naming
def test_one_rule_for_names() -> None:
    assert safe_name("my photo (1).v2") == "my_photo_1_.v2"
    assert safe_name("...") == "image"
    assert class_file_name(207, "golden retriever") == "0207_golden_retriever"
    assert class_file_name(948, "Granny Smith") == "0948_granny_smith"
    assert unique_names(["a", "b", "a", "a", "a_2"]) == ["a", "b", "a_2", "a_3", "a_2_2"]


def test_unique_names_never_write_over_a_derived_file_or_a_run_file() -> None:
    # x_sheet.png is x's sheet; loss_curve.png is the run's; A.png is a.png on a Mac.
    assert unique_names(["x", "x_sheet"]) == ["x", "x_sheet_2"]
    assert unique_names(["x_sheet", "x"]) == ["x_sheet", "x_2"]
    assert unique_names(["c__x", "c__x_interrupted_step000003"]) == [
        "c__x", "c__x_interrupted_step000003_2"]
    assert unique_names(["loss_curve", "losses", "classes_sheet", "sheet_0001"]) == [
        "loss_curve_2", "losses_2", "classes_sheet_2", "sheet_0001_2"]
    assert unique_names(["A", "a"]) == ["A", "a_2"]


# --------------------------------------------------------------------------- layering
def test_only_the_api_imports_it_and_importing_it_costs_no_callbacks() -> None:
    for path in (ROOT / "lightning_modules").rglob("*.py"):
        if path.name != "api.py":
            assert not re.search(r"^\s*from lightning_modules.api import|import lightning_modules.api",
                                 path.read_text(), re.M), path
    code = ("import sys\nimport lightning_modules.api\n"
            "assert not [m for m in sys.modules if m.startswith(('callbacks', 'pytorch_lightning'))]\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_functional_code_imports_no_lightning() -> None:
    code = ("import sys\n"
            "import lightning_modules.style_transfer.functional, "
            "lightning_modules.class_visualization.functional, "
            "lightning_modules.fooling.functional, lightning_modules.saliency.functional\n"
            "from lightning_modules import gram_matrix, create_class_visualization\n"
            "assert not [m for m in sys.modules if m.startswith(('pytorch_lightning', "
            "'lightning_fabric'))], 'Lightning was imported'\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def _callback_imports_outside_configure_callbacks(tree: ast.AST) -> list[int]:
    """Lines that import ``callbacks`` anywhere but in a ``configure_callbacks`` method."""
    allowed = {id(node) for function in ast.walk(tree)
               if isinstance(function, ast.FunctionDef) and function.name == "configure_callbacks"
               for node in ast.walk(function)}
    lines = []
    for node in ast.walk(tree):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if any(name.split(".")[0] == "callbacks" for name in names) and id(node) not in allowed:
            lines.append(node.lineno)
    return lines


def test_no_module_imports_callbacks_or_writes_files() -> None:
    for path in (ROOT / "lightning_modules").rglob("*.py"):
        text = path.read_text()
        # A technique names the reports it brings (configure_callbacks) and nothing else of
        # the callbacks; api.py runs the command line's builder, which adds the writers.
        if path.name != "api.py" or path.parent.name != "lightning_modules":
            assert not _callback_imports_outside_configure_callbacks(ast.parse(text)), path
        # Opening an in-memory buffer (a JPEG round trip) touches no file.
        assert not re.search(r"save_png|open\((?!io\.BytesIO)|savefig|\.write_text|\.mkdir",
                             text), path


def test_class_report_needs_the_image_writer_before_it(tmp_path: Path) -> None:
    from callbacks import ClassReport
    from datamodules import ClassListData
    from lightning_modules import ClassVisualization

    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=tmp_path,
                         callbacks=[ClassReport()])
    with pytest.raises(UserInputError, match="ImageWriter before it"):
        trainer.fit(ClassVisualization(backbone="tiny", weights="random", image_size=16),
                    ClassListData([1]))


def test_a_second_fit_keeps_the_pgd_budget_around_the_photo(tmp_path: Path) -> None:
    from datamodules import LabeledImageData

    eps = 0.03
    module = FoolingImage(backbone="tiny", weights="random", target=3, method="pgd", eps=eps,
                          step_size=eps)
    data = LabeledImageData(image_size=16)
    for _ in range(2):
        pl.Trainer(max_steps=4, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False,
                   default_root_dir=tmp_path).fit(module, data)
    pixels = torch.stack([job.pixels for job in module.jobs])
    moved = module.backbone.denormalize(module.images[0].detach()) - pixels
    assert moved.abs().max() <= eps + 1e-5
