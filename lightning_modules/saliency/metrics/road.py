"""ROAD: RemOve And Debias (Rong, Leemann et al. 2022, "A Consistent and Efficient Evaluation
Strategy for Attribution Methods", ICML).

Deleting pixels by a map's order puts the image off the training distribution, and the
classifier's drop then measures the shift as much as the map (a random map beat every method on
our deletion AUC). ROAD removes pixels by *noisy linear imputation*: each removed pixel becomes
the weighted mean of its eight neighbours (1/6 for the four sides, 1/12 for the four corners;
neighbours that are removed too are unknowns of the same system), plus a little Gaussian noise,
so that the removed region carries no edge that would leak which pixels were removed.

Most relevant first (MoRF, ``road_morf``) removes the map's most salient pixels: a faithful map
makes the classifier wrong soon, so lower is better. Least relevant first (LeRF, ``road_lerf``)
removes the least salient: a faithful map keeps it right, so higher is better.

**The score** of an image is the *mean* over the percentages (Quantus' default 1, 3, ..., 99 %)
of whether the classifier still predicts the target (1 or 0) after the removal: the fraction of
percentages at which it stays right. Quantus 0.6.0's ``ROAD`` returns, per percentage, the
accuracy over the images (``{percentage: accuracy}``); the mean of our per-image scores over the
images is the mean of Quantus' accuracies over the percentages (not a trapezoid AUC). With
``measure="probability"`` the score is the mean softmax probability of the target instead (finer
per image; not in Quantus).

Against Quantus 0.6.0: the imputation equals ``noisy_linear_imputation`` (a sparse linear
system). On the CPU it is solved directly, as Quantus does, but written as the symmetric positive
definite system it is, its unknowns in a nested-dissection order of the grid (computed once per
image size), factorized by SuperLU without pivoting, one factorization per image for its three
channels, the images of a batch on as many threads as torch uses: at 224 px with all 50
percentages, 1.8-2.6 s an image where SciPy's default solve took 5.3-8.7 s and Quantus' about
16 s (on 2 cores). On a GPU it is solved by a Jacobi-preconditioned conjugate gradient batched
over images and percentages, to a relative residual of ``tolerance`` (on the CPU that takes
far longer than the direct solve: its iterations grow with the removed region's width).
Quantus ranks the map broadcast over the channels, which fails (IndexError) for a one-channel
map of a colour image; ours ranks pixels (all channels removed together, ties in reading order),
which is Quantus' behaviour on one-channel images. LeRF is Quantus' ROAD of the negated map.
"""

from __future__ import annotations

import functools
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional, Sequence

import numpy as np

import torch
import torch.nn.functional as F

from lightning_modules.errors import UserInputError, check_choice
from lightning_modules.saliency.evaluation import check_positive_integer, pixel_ranks
from lightning_modules.saliency.metrics.base import MetricInputs, SaliencyMetric

# ROAD's neighbour weights: sides 1/6, corners 1/12 (they sum to 1 inside the image).
NEIGHBOUR_WEIGHTS = torch.tensor([[1 / 12, 1 / 6, 1 / 12],
                                  [1 / 6, 0.0, 1 / 6],
                                  [1 / 12, 1 / 6, 1 / 12]])
MEASURES = ("accuracy", "probability")
# Blocks of at most this many pixels are not cut further (at 224 px: 16 and 64 time alike, 256
# is 30 % slower, 1024 2.5x).
_DISSECTION_LEAF = 64


def _neighbour_sum(values: torch.Tensor) -> torch.Tensor:
    """Weighted sum of each pixel's in-image neighbours, per channel: ``[N, C, H, W]``.

    Eight shifted views of the zero-padded values (a depthwise convolution is ten times slower
    in float64 on the CPU).
    """
    height, width = values.shape[-2:]
    padded = F.pad(values, (1, 1, 1, 1))
    total = torch.zeros_like(values)
    for row in range(3):
        for column in range(3):
            weight = NEIGHBOUR_WEIGHTS[row, column].item()
            if weight:
                total = total + weight * padded[..., row:row + height, column:column + width]
    return total


def noisy_linear_imputation(images: torch.Tensor, removed: torch.Tensor, noise: float = 0.01,
                            generator: Optional[torch.Generator] = None,
                            tolerance: float = 1e-4, max_iterations: Optional[int] = None
                            ) -> torch.Tensor:
    """ROAD's imputation: removed pixels become the solution of their neighbours' linear system.

    Each removed pixel ``i`` satisfies ``x_i * sum_j w_ij = sum_j w_ij x_j`` over its in-image
    neighbours ``j`` (kept neighbours are known, removed ones unknowns), per channel. The system
    is symmetric positive definite whenever a pixel is kept, and conjugate gradients solve all
    images and channels of the batch at once.

    Args:
        images: ``[N, C, H, W]``.
        removed: ``[N, H, W]`` (or ``[N, 1, H, W]``) bool, the pixels to impute.
        noise: Standard deviation of the Gaussian noise added to the imputed values.
        generator: Draws the noise.
        tolerance: Stop when every system's residual norm is at most this times its right-hand
            side's.
        max_iterations: Conjugate-gradient iterations at most; given, the CPU too solves by
            conjugate gradients instead of SciPy's direct solve (default ``4 * (H + W) + 50``,
            enough for the default tolerance at 224 px; the error of an unfinished solve is small
            and smooth). A relative residual of 1e-4 leaves the imputed values within about 5e-4
            of SciPy's direct solution at 224 px with 99 % removed (1e-6: within 1e-5), far below
            the 0.01 noise.

    Returns:
        The images with the removed pixels imputed, ``[N, C, H, W]``.
    """
    work = images.double() if images.device.type == "cpu" else images.float()
    mask = removed.reshape(images.shape[0], 1, *images.shape[-2:]).to(work)
    if images.device.type == "cpu" and max_iterations is None:
        # On the CPU a sparse direct solve is far faster than conjugate gradients, whose
        # iterations grow with the removed region's width.
        solution = _direct_fill(work, mask)
    else:
        iterations = (max_iterations if max_iterations is not None
                      else 4 * sum(images.shape[-2:]) + 50)
        solution = _harmonic_fill(work, mask, tolerance, iterations)
    if noise:
        solution = solution + noise * torch.randn(
            solution.shape, generator=generator, device="cpu" if generator is None
            else generator.device, dtype=torch.float32).to(solution)
    return torch.where(mask.bool(), solution, work).to(images.dtype)


@functools.lru_cache(maxsize=4)
def _dissection_ranks(height: int, width: int) -> np.ndarray:
    """Each pixel's place in a nested-dissection order of the ``height x width`` grid.

    The grid is cut in two by its middle row or column (whichever is shorter), each half ordered
    the same way, then the cut: eliminating the unknowns in this order keeps the sparse factor's
    fill low, and since a cut through the grid is also a cut through any subset of its pixels,
    the order of one grid serves every removal mask. SuperLU's own orderings, computed per
    system, cost more time than they saved (at 224 px, 96-105 ms a factorization against 71 ms;
    the minimum-degree one fills less on a scattered removal, as much on a region).

    Args:
        height: Rows of the image.
        width: Columns of the image.

    Returns:
        ``[height * width]`` int64, a permutation of ``0 .. height * width - 1``: the halves of
        every cut before the cut.
    """
    ranks = np.empty(height * width, dtype=np.int64)
    index = np.arange(height * width).reshape(height, width)
    placed = 0
    stack = [(index, False)]  # (block, whether it is a cut: placed whole)
    while stack:
        block, is_cut = stack.pop()
        rows, columns = block.shape
        if not is_cut and rows * columns > _DISSECTION_LEAF:
            middle = (rows if rows >= columns else columns) // 2
            if rows >= columns:
                first, cut, second = block[:middle], block[middle], block[middle + 1:]
            else:
                first, cut, second = block[:, :middle], block[:, middle], block[:, middle + 1:]
            # Popped last-in first-out: the halves, then the cut.
            stack += [(cut.reshape(1, -1), True), (second, False), (first, False)]
            continue
        ranks[block.ravel()] = np.arange(placed, placed + block.size)
        placed += block.size
    return ranks


def _imputation_system(removed: np.ndarray, values: np.ndarray, height: int, width: int
                       ) -> tuple[Any, np.ndarray, np.ndarray]:
    """ROAD's linear system for one image: the removed pixels' values are its unknowns.

    Args:
        removed: Flat bool ``[H * W]``.
        values: The image, ``[C, H * W]`` float64.

    Returns:
        The symmetric positive definite matrix (CSC, the unknowns in nested-dissection order;
        row ``i``: ``x_i`` times the weights of all its in-image neighbours, minus ``w_ij x_j``
        for each removed neighbour ``j``), the right-hand sides ``[unknowns, C]`` (the kept
        neighbours' weighted sums), and the unknowns' flat pixel indices in the same order.
    """
    import scipy.sparse

    unknown = np.flatnonzero(removed)
    unknown = unknown[np.argsort(_dissection_ranks(height, width)[unknown], kind="stable")]
    variable = np.full(height * width, -1, dtype=np.int64)  # pixel -> its unknown's index
    variable[unknown] = np.arange(len(unknown))
    variable = variable.reshape(height, width)
    pixel = np.arange(height * width).reshape(height, width)
    diagonal = np.zeros(len(unknown))
    right = np.zeros((len(unknown), values.shape[0]))
    rows, columns, entries = [np.arange(len(unknown))], [np.arange(len(unknown))], []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            weight = float(NEIGHBOUR_WEIGHTS[dy + 1, dx + 1])
            if not weight:
                continue
            # Each pixel (centre) against its neighbour at (dy, dx), both inside the image.
            centre = (slice(max(0, -dy), height - max(0, dy)),
                      slice(max(0, -dx), width - max(0, dx)))
            other = (slice(max(0, dy), height - max(0, -dy)),
                     slice(max(0, dx), width - max(0, -dx)))
            here, there = variable[centre].ravel(), variable[other].ravel()
            is_unknown = here >= 0
            diagonal[here[is_unknown]] += weight
            both = is_unknown & (there >= 0)
            rows.append(here[both])
            columns.append(there[both])
            entries.append(np.full(int(both.sum()), -weight))
            kept = is_unknown & (there < 0)
            # Each unknown has at most one neighbour per offset: a plain add is exact.
            right[here[kept]] += weight * values[:, pixel[other].ravel()[kept]].T
    matrix = scipy.sparse.csc_matrix(
        (np.concatenate([diagonal] + entries), (np.concatenate(rows), np.concatenate(columns))),
        shape=(len(unknown), len(unknown)))
    return matrix, right, unknown


def _solve_one(removed: np.ndarray, values: np.ndarray, height: int, width: int) -> np.ndarray:
    """The removed pixels' values of one image.

    Args:
        removed: Flat bool ``[H * W]``.
        values: The image, ``[C, H * W]`` float64.
        height: Rows of the image.
        width: Columns of the image.

    Returns:
        ``[C, H * W]``: the solution at the removed pixels, zero where kept.
    """
    import scipy.sparse.linalg

    solution = np.zeros_like(values)
    if not removed.any() or removed.all():
        # Nothing to impute, or nothing known to impute from (the system is singular; the
        # conjugate gradients give 0 there too).
        return solution
    matrix, right, unknown = _imputation_system(removed, values, height, width)
    # Symmetric positive definite: the diagonal pivots are safe, and the nested-dissection order
    # is kept (NATURAL: the columns are already in it).
    factor = scipy.sparse.linalg.splu(matrix, permc_spec="NATURAL", diag_pivot_thresh=0.0,
                                      options={"SymmetricMode": True})
    solution[:, unknown] = factor.solve(right).T
    return solution


def _solver_threads() -> int:
    """Threads for the direct solves: as many as torch uses (1 in a DataLoader worker; a
    DDP process gets its share of the cores)."""
    return torch.get_num_threads()


def _direct_fill(work: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The removed pixels' values by sparse direct solves, image by image (all channels at
    once: they share the system), the images on as many threads as torch uses (SuperLU releases
    the GIL while it factorizes; the pool lives for one call, so no thread outlives its factors
    or meets a fork).

    Args:
        work: Images ``[N, C, H, W]``, float64 on the CPU.
        mask: ``[N, 1, H, W]``, 1 at the removed pixels.

    Returns:
        ``[N, C, H, W]`` float64: the solution at the removed pixels, zero elsewhere.
    """
    images, channels, height, width = work.shape
    values = work.reshape(images, channels, -1).numpy()
    removed = mask.reshape(images, -1).numpy() > 0
    workers = max(1, min(images, _solver_threads()))
    arguments = [(removed[image], values[image], height, width) for image in range(images)]
    if workers == 1:
        solutions = [_solve_one(*each) for each in arguments]
    else:
        with ThreadPoolExecutor(workers) as pool:
            solutions = list(pool.map(lambda each: _solve_one(*each), arguments))
    return torch.from_numpy(np.stack(solutions)).view(images, channels, height, width)


def _harmonic_fill(work: torch.Tensor, mask: torch.Tensor, tolerance: float,
                   iterations: int) -> torch.Tensor:
    """The removed pixels' values (zero elsewhere) that solve the neighbour system, by
    conjugate gradients on the device, every image and channel at once."""
    diagonal = _neighbour_sum(torch.ones_like(work[:1, :1]))  # the in-image neighbours' weight
    rhs = mask * _neighbour_sum((1 - mask) * work)
    solution = rhs / diagonal  # started from the weighted mean of the kept neighbours

    def operator(values: torch.Tensor) -> torch.Tensor:
        return mask * (diagonal * values - _neighbour_sum(mask * values))

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(dim=(2, 3), keepdim=True)

    # Jacobi-preconditioned conjugate gradients.
    residual = rhs - operator(solution)
    preconditioned = residual / diagonal
    direction = preconditioned.clone()
    product = dot(residual, preconditioned)
    limit = tolerance ** 2 * dot(rhs, rhs)
    for iteration in range(iterations):
        # Checking convergence costs a device sync: every 4 iterations is enough.
        if iteration % 4 == 0 and bool((dot(residual, residual) <= limit).all()):
            break
        applied = operator(direction)
        curvature = dot(direction, applied)
        step = torch.where(curvature > 0, product / curvature, torch.zeros_like(curvature))
        solution = solution + step * direction
        residual = residual - step * applied
        preconditioned = residual / diagonal
        new_product = dot(residual, preconditioned)
        ratio = torch.where(product > 0, new_product / product, torch.zeros_like(product))
        direction = preconditioned + ratio * direction
        product = new_product
    return solution


class _ROAD(SaliencyMetric):
    """ROAD with the order of removal left to the subclass."""

    family = "faithfulness"
    most_relevant_first: bool = True

    def __init__(self, percentages: Optional[Sequence[float]] = None, noise: float = 0.01,
                 measure: str = "accuracy", batch_size: int = 16, tolerance: float = 1e-4) -> None:
        """Args:
            percentages: Percent of the pixels removed at each point, each in (0, 100]
                (default Quantus': 1, 3, 5, ..., 99; ``int(H * W * p / 100)`` pixels).
            noise: Standard deviation of the imputation's Gaussian noise, in normalized input
                units (Quantus' default 0.01).
            measure: Per image and percentage, ``"accuracy"`` (whether the prediction is still
                the target, Quantus') or ``"probability"`` (the target's softmax probability).
            batch_size: Most imputed images per forward pass.
            tolerance: Relative residual at which the imputation's solver stops.
        """
        percentages = list(range(1, 100, 2)) if percentages is None else percentages
        if (isinstance(percentages, (str, bytes)) or not len(percentages) or any(
                isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 100
                for p in percentages)):
            raise UserInputError("percentages must be a non-empty list of numbers in (0, 100], "
                                 f"got {percentages!r}.")
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not (
                math.isfinite(noise) and noise >= 0):
            raise UserInputError(f"noise must be a finite number of at least 0, got {noise!r}.")
        check_choice("measure", measure, MEASURES)
        check_positive_integer("batch_size", batch_size)
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not (
                0 < tolerance < 1):
            raise UserInputError(f"tolerance must be a number in (0, 1), got {tolerance!r}.")
        self.percentages = [float(p) if isinstance(p, float) else p for p in percentages]
        self.noise = float(noise)
        self.measure = measure
        self.batch_size = batch_size
        self.tolerance = float(tolerance)

    @property
    def perturbation(self) -> str:
        which = "most" if self.most_relevant_first else "least"
        return (f"the map's {which} salient pixels (all channels), at {len(self.percentages)} "
                f"percentages from {min(self.percentages)} to {max(self.percentages)} %, are "
                "replaced by ROAD's noisy linear imputation (each the weighted mean of its 8 "
                f"neighbours, plus Gaussian noise of std {self.noise} in normalized units); score: "
                f"the mean over the percentages of the target's {self._measure_words}")

    @property
    def _measure_words(self) -> str:
        return ("correct prediction (1 or 0)" if self.measure == "accuracy"
                else "softmax probability")

    @property
    def normalisation(self) -> str:
        return "none: only the order of the map's pixels counts (ties in reading order)"

    def removal_counts(self, pixels: int) -> list[int]:
        """Pixels removed at each percentage (Quantus' ``int(pixels * p / 100)``)."""
        return [int(pixels * p / 100) for p in self.percentages]

    def curves(self, batch: MetricInputs) -> torch.Tensor:
        """Per image and percentage, the measure after removal: ``[B, P]`` float."""
        inputs = batch.inputs.detach()
        device = inputs.device
        images, height, width = inputs.shape[0], inputs.shape[-2], inputs.shape[-1]
        pixels = height * width
        ranks = pixel_ranks(batch.maps.to(device)).view(images, height, width)
        if not self.most_relevant_first:
            ranks = pixels - 1 - ranks  # the least salient pixel comes first
        counts = torch.tensor(self.removal_counts(pixels), device=device)
        targets = torch.as_tensor(batch.targets, device=device).long()
        steps = len(counts)
        results = torch.empty(images * steps, dtype=torch.float32, device=device)
        for start in range(0, images * steps, self.batch_size):
            index = torch.arange(start, min(start + self.batch_size, images * steps), device=device)
            image, step = index // steps, index % steps
            removed = ranks[image] < counts[step].view(-1, 1, 1)
            imputed = noisy_linear_imputation(inputs[image], removed, self.noise, batch.generator,
                                              self.tolerance)
            with torch.no_grad():
                logits = batch.model(imputed).float()
            if self.measure == "accuracy":
                value = (logits.argmax(dim=1) == targets[image]).float()
            else:
                value = logits.softmax(dim=1).gather(1, targets[image][:, None])[:, 0]
            results[start:start + len(index)] = value
        return results.view(images, steps)

    def score(self, batch: MetricInputs) -> torch.Tensor:
        return self.curves(batch).mean(dim=1)


class ROADMoRF(_ROAD):
    """ROAD, most relevant first: the mean over percentages of the target still being predicted
    after the most salient pixels are imputed (lower is better). Options: see :class:`_ROAD`."""

    name = "road_morf"
    higher_is_better = False
    most_relevant_first = True


class ROADLeRF(_ROAD):
    """ROAD, least relevant first: the same with the least salient pixels imputed (higher is
    better). Options: see :class:`_ROAD`."""

    name = "road_lerf"
    higher_is_better = True
    most_relevant_first = False
