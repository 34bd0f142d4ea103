"""The numbers of the dataset report: means with intervals, controls, ranks, disagreements.

Pure functions over the index table of a dataset run (rows: images; columns
``<method>.<metric>``, NaN where a metric is undefined) and the metrics' descriptions from
``explanation.json`` (``family``, ``higher_is_better``). No files, no Lightning:
:mod:`callbacks.dataset_report` reads the run folder and lays the numbers out.

What is computed, and how:

- per method (controls included) and metric: the mean over the images where the metric is
  defined (NaN cells left out, their count ``n`` reported) with a 95 % interval: Student's t by
  default (conservative for the few images of a quick run), or a percentile bootstrap with a
  fixed seed;
- per metric, each method against each control (a random map, an edge map, a centred Gaussian):
  the mean *paired* difference (method minus control, over the images where both are defined)
  with its interval; the method beats the control when the whole interval lies on the better
  side of zero, and loses to it when the whole interval lies on the worse side. Each interval is
  95 % on its own: no correction for the many comparisons;
- the methods' rank per metric (1 = best mean; ties share the better rank);
- where metrics disagree: pairs of metrics whose rankings of the methods have Kendall's tau-b
  at or below zero, or that name a different best method;
- the best and worst images of each method by one metric (default: the first faithfulness
  metric).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from lightning_modules.errors import UserInputError

# The intervals this module computes (``interval=``).
INTERVALS = ("t", "bootstrap")

# Bootstrap resamples are drawn in blocks of about this many values: flat memory for 10^5 images.
_BOOTSTRAP_BLOCK_VALUES = 4_000_000

Table = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Interval:
    """A mean over images with its confidence interval.

    Attributes:
        mean: The mean of the defined values (NaN when none is).
        low: The interval's lower end (NaN with fewer than two values).
        high: The interval's upper end (NaN with fewer than two values).
        n: How many values were defined (NaN cells are left out).
    """

    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class ControlComparison:
    """One method against one control on one metric, image by image.

    Attributes:
        control: The control's name (``"random"``).
        control_estimate: The control's own mean and interval.
        difference: Mean of (method - control) over the images where both are defined, with
            its interval.
        beats: The whole interval lies on the better side of zero.
        loses: The whole interval lies on the worse side of zero (the control is better).
    """

    control: str
    control_estimate: Interval
    difference: Interval
    beats: bool
    loses: bool


@dataclass
class MetricSummary:
    """One method's (or control's) result on one metric.

    Attributes:
        method: The method or control.
        metric: The metric's short name.
        family: The metric's family (``"faithfulness"``, ...).
        higher_is_better: Whether a better map scores higher.
        estimate: The mean and its interval.
        rank: Rank among the methods (1 = best), None for a control or an undefined mean.
        is_control: The row is a control's.
        comparisons: Per control, the paired comparison (empty for a control's row).
    """

    method: str
    metric: str
    family: str
    higher_is_better: bool
    estimate: Interval
    rank: Optional[int]
    is_control: bool = False
    comparisons: dict[str, ControlComparison] = field(default_factory=dict)


@dataclass(frozen=True)
class Disagreement:
    """Two metrics that order the methods differently.

    Attributes:
        first: One metric.
        second: The other metric.
        tau: Kendall's tau-b between their rankings of the methods (NaN if undefined).
        best_first: The best method(s) by ``first``.
        best_second: The best method(s) by ``second``.
        order_first: The methods from best to worst by ``first``.
        order_second: The methods from best to worst by ``second``.
    """

    first: str
    second: str
    tau: float
    best_first: tuple[str, ...]
    best_second: tuple[str, ...]
    order_first: tuple[str, ...]
    order_second: tuple[str, ...]

    def describe(self) -> str:
        """The disagreement in one sentence."""
        reasons = []
        if not math.isnan(self.tau) and self.tau <= 0:
            reasons.append(f"their rankings are not positively related (Kendall tau = "
                           f"{self.tau:+.2f})")
        if set(self.best_first) != set(self.best_second):
            reasons.append(f"{self.first} finds {' and '.join(self.best_first)} best, "
                           f"{self.second} {' and '.join(self.best_second)}")
        ranked = (f"{self.first} ranks {' > '.join(self.order_first)}; {self.second} ranks "
                  f"{' > '.join(self.order_second)}")
        return f"{self.first} and {self.second} disagree: {'; '.join(reasons)} ({ranked})."


@dataclass(frozen=True)
class Extremes:
    """A method's best and worst images by one metric.

    Attributes:
        metric: The metric that ranks the images.
        best: Row indices of the best images, best first.
        worst: Row indices of the worst images, worst first.
    """

    metric: str
    best: tuple[int, ...]
    worst: tuple[int, ...]


@dataclass
class DatasetStatistics:
    """Everything the dataset report shows, as numbers.

    Attributes:
        methods: The explanation methods, in the run's order.
        controls: The controls present in the table.
        metrics: The metrics present, in the run's order, with their descriptions.
        summaries: One per (method or control, metric).
        disagreements: The pairs of metrics that order the methods differently.
        interval: How the intervals were computed (``"t"`` or ``"bootstrap"``).
        confidence: The intervals' confidence (0.95).
        ranking_metric: The metric that picks each method's best and worst images.
        extremes: Per method, its best and worst images.
    """

    methods: list[str]
    controls: list[str]
    metrics: dict[str, dict[str, Any]]
    summaries: list[MetricSummary]
    disagreements: list[Disagreement]
    interval: str
    confidence: float
    ranking_metric: Optional[str]
    extremes: dict[str, Extremes]

    def summary(self, method: str, metric: str) -> MetricSummary:
        """The summary of one method (or control) on one metric."""
        for summary in self.summaries:
            if summary.method == method and summary.metric == metric:
                return summary
        raise KeyError(f"{method}.{metric}")

    def control_wins(self) -> list[str]:
        """Each case where a control scores better than a method, in one sentence each."""
        sentences = []
        for summary in self.summaries:
            for comparison in summary.comparisons.values():
                if comparison.loses:
                    difference = comparison.difference
                    sentences.append(
                        f"On {summary.metric} ({direction(summary.higher_is_better)}), the "
                        f"{comparison.control} control scores better than {summary.method}: "
                        f"difference {difference.mean:+.4g} [{difference.low:+.4g}, "
                        f"{difference.high:+.4g}] over {difference.n} images.")
        return sentences

    def unbeaten_controls(self) -> list[str]:
        """Per metric, the controls that no method beats, in one sentence each."""
        sentences = []
        for metric in self.metrics:
            rows = [s for s in self.summaries if s.metric == metric and not s.is_control]
            for control in self.controls:
                compared = [s.comparisons[control] for s in rows if control in s.comparisons]
                if compared and not any(comparison.beats for comparison in compared):
                    sentences.append(f"On {metric}, no method beats the {control} control.")
        return sentences


def direction(higher_is_better: bool) -> str:
    """``"higher is better"`` or ``"lower is better"``."""
    return "higher is better" if higher_is_better else "lower is better"


def table_from_rows(rows: Iterable[Mapping[str, str]], columns: Sequence[str]) -> dict[str,
                                                                                        np.ndarray]:
    """Numeric columns of CSV rows: float64 arrays, an empty or unparsable cell NaN.

    Args:
        rows: The rows as read by ``csv.DictReader``.
        columns: The columns to keep.

    Returns:
        Each column's values, one per row.
    """
    rows = list(rows)
    table = {}
    for column in columns:
        values = np.full(len(rows), np.nan)
        for index, row in enumerate(rows):
            cell = (row.get(column) or "").strip()
            try:
                values[index] = float(cell) if cell else np.nan
            except ValueError:
                pass  # a cell that is not a number counts as undefined, like an empty one
        table[column] = values
    return table


def _t_quantile(probability: float, degrees_of_freedom: int) -> float:
    # scipy arrives with scikit-image, a declared dependency; imported here: slow, needed late.
    from scipy import stats

    return float(stats.t.ppf(probability, degrees_of_freedom))


def mean_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95,
                  interval: str = "t", samples: int = 2000, seed: int = 0) -> Interval:
    """The mean of the defined values and its confidence interval.

    Args:
        values: One value per image; NaN (undefined) values are left out.
        confidence: The interval's coverage.
        interval: ``"t"``: Student's t interval, mean +- t(n-1) * sd / sqrt(n);
            ``"bootstrap"``: the percentile interval of ``samples`` resampled means.
        samples: Bootstrap resamples.
        seed: The bootstrap's random seed (the same interval in every run).

    Returns:
        The mean, the interval (NaN ends with fewer than two values) and the count.
    """
    if interval not in INTERVALS:
        raise UserInputError(f"Unknown interval {interval!r}: expected one of "
                             f"{', '.join(INTERVALS)}.")
    if not 0 < confidence < 1:
        raise UserInputError(f"The confidence must lie between 0 and 1, got {confidence}.")
    data = np.asarray(values, dtype=np.float64)
    data = data[np.isfinite(data)]
    count = int(data.size)
    if count == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(data.mean())
    if count < 2:
        return Interval(mean, math.nan, math.nan, count)
    tail = (1 - confidence) / 2
    if interval == "t":
        half_width = _t_quantile(1 - tail, count - 1) * float(data.std(ddof=1)) / math.sqrt(count)
        return Interval(mean, mean - half_width, mean + half_width, count)
    generator = np.random.default_rng(seed)
    block = max(1, _BOOTSTRAP_BLOCK_VALUES // count)
    means = []
    for start in range(0, samples, block):
        draws = generator.integers(0, count, size=(min(block, samples - start), count))
        means.append(data[draws].mean(axis=1))
    low, high = np.quantile(np.concatenate(means), [tail, 1 - tail])
    return Interval(mean, float(low), float(high), count)


def paired_difference(values: np.ndarray, reference: np.ndarray, **options: Any) -> Interval:
    """Mean of ``values - reference`` over the images where both are defined, with its interval.

    Args:
        values: A method's value per image.
        reference: A control's value per image (the same images, the same order).
        **options: Passed to :func:`mean_interval`.
    """
    return mean_interval(np.asarray(values, np.float64) - np.asarray(reference, np.float64),
                         **options)


def beats(difference: Interval, higher_is_better: bool) -> bool:
    """Whether a paired difference (method - control) lies wholly on the better side of zero."""
    if math.isnan(difference.low):
        return False
    return difference.low > 0 if higher_is_better else difference.high < 0


def oriented(value: float, higher_is_better: bool) -> float:
    """A score where higher is always better: the value, or its negative."""
    return value if higher_is_better else -value


def rank_methods(means: Mapping[str, float], higher_is_better: bool) -> dict[str, Optional[int]]:
    """Competition ranks (1 = best; tied means share the better rank; NaN: None)."""
    scores = {method: oriented(mean, higher_is_better) for method, mean in means.items()}
    defined = [score for score in scores.values() if not math.isnan(score)]
    return {method: None if math.isnan(score) else 1 + sum(other > score for other in defined)
            for method, score in scores.items()}


def kendall_tau(first: Sequence[float], second: Sequence[float]) -> float:
    """Kendall's tau-b between two scorings of the same items (ties counted; NaN if undefined).

    Args:
        first: One score per item.
        second: Another score per item, in the same order.
    """
    pairs = [(a, b) for a, b in zip(first, second) if not (math.isnan(a) or math.isnan(b))]
    concordant_minus_discordant, untied_first, untied_second = 0, 0, 0
    for i in range(len(pairs)):
        for j in range(i + 1, len(pairs)):
            sign_first = np.sign(pairs[i][0] - pairs[j][0])
            sign_second = np.sign(pairs[i][1] - pairs[j][1])
            concordant_minus_discordant += int(sign_first * sign_second)
            untied_first += int(sign_first != 0)
            untied_second += int(sign_second != 0)
    if untied_first == 0 or untied_second == 0:
        return math.nan
    return concordant_minus_discordant / math.sqrt(untied_first * untied_second)


def _order(scores: Mapping[str, float]) -> tuple[str, ...]:
    defined = [(method, score) for method, score in scores.items() if not math.isnan(score)]
    return tuple(method for method, _ in sorted(defined, key=lambda pair: -pair[1]))


def disagreements(scores: Mapping[str, Mapping[str, float]]) -> list[Disagreement]:
    """Pairs of metrics that order the methods differently.

    Args:
        scores: Per metric, each method's mean oriented so that higher is better
            (:func:`oriented`).

    Returns:
        Each pair of metrics (in the given order) that both rank at least two common methods and
        whose rankings have Kendall's tau-b <= 0 or a different best method.
    """
    found = []
    metrics = list(scores)
    for index, first in enumerate(metrics):
        for second in metrics[index + 1:]:
            common = [method for method in scores[first] if method in scores[second]
                      and not math.isnan(scores[first][method])
                      and not math.isnan(scores[second][method])]
            if len(common) < 2:
                continue
            first_scores = {method: scores[first][method] for method in common}
            second_scores = {method: scores[second][method] for method in common}
            tau = kendall_tau(list(first_scores.values()), list(second_scores.values()))
            best_first = tuple(m for m, s in first_scores.items()
                               if s == max(first_scores.values()))
            best_second = tuple(m for m, s in second_scores.items()
                                if s == max(second_scores.values()))
            if (not math.isnan(tau) and tau <= 0) or set(best_first) != set(best_second):
                found.append(Disagreement(first, second, tau, best_first, best_second,
                                          _order(first_scores), _order(second_scores)))
    return found


def default_ranking_metric(metrics: Mapping[str, Mapping[str, Any]]) -> Optional[str]:
    """The first faithfulness metric (else the first metric; None if there is none)."""
    for name, info in metrics.items():
        if info.get("family") == "faithfulness":
            return name
    return next(iter(metrics), None)


def extreme_images(values: np.ndarray, higher_is_better: bool, count: int,
                   metric: str = "") -> Extremes:
    """The rows of the best and worst values (NaN rows left out; ties keep the data's order;
    with fewer than ``2 * count`` defined values, an image is never both best and worst).

    Args:
        values: One method's value per image.
        higher_is_better: Whether a better map scores higher.
        count: How many best and how many worst images.
        metric: The metric's name, kept in the result.
    """
    values = np.asarray(values, np.float64)
    defined = np.flatnonzero(np.isfinite(values))
    scores = np.array([oriented(v, higher_is_better) for v in values[defined]])
    best = [int(i) for i in defined[np.argsort(-scores, kind="stable")][:count]]
    worst = [int(i) for i in defined[np.argsort(scores, kind="stable")] if i not in best]
    return Extremes(metric, tuple(best), tuple(worst[:count]))


def dataset_statistics(table: Table, methods: Sequence[str], controls: Sequence[str],
                       metrics: Mapping[str, Mapping[str, Any]], confidence: float = 0.95,
                       interval: str = "t", samples: int = 2000, seed: int = 0,
                       ranking_metric: Optional[str] = None,
                       images_per_method: int = 3) -> DatasetStatistics:
    """All the numbers of the dataset report.

    Args:
        table: Column ``<method>.<metric>`` -> one value per image (NaN: undefined).
        methods: The explanation methods, in order.
        controls: The controls (``random``, ``edges``, ``center``); those without a column are
            left out.
        metrics: Per metric its description (``family``, ``higher_is_better``), in order;
            metrics without any column in the table are left out.
        confidence: The intervals' coverage.
        interval: ``"t"`` or ``"bootstrap"`` (:func:`mean_interval`).
        samples: Bootstrap resamples.
        seed: The bootstrap's seed.
        ranking_metric: The metric that picks the best and worst images (default:
            :func:`default_ranking_metric`).
        images_per_method: How many best and how many worst images per method.

    Returns:
        The statistics.
    """
    options = {"confidence": confidence, "interval": interval, "samples": samples, "seed": seed}
    present = {name: dict(info) for name, info in metrics.items()
               if any(f"{method}.{name}" in table for method in [*methods, *controls])}
    present_controls = [control for control in controls
                        if any(f"{control}.{name}" in table for name in present)]
    if ranking_metric is None:
        ranking_metric = default_ranking_metric(present)
    elif ranking_metric not in present:
        raise UserInputError(f"Unknown ranking metric {ranking_metric!r}: the run has "
                             f"{', '.join(present) or 'no metrics'}.")
    summaries, oriented_means = [], {}
    for name, info in present.items():
        higher = bool(info.get("higher_is_better", True))
        family = str(info.get("family", ""))
        control_estimates = {control: mean_interval(table[f"{control}.{name}"], **options)
                             for control in present_controls if f"{control}.{name}" in table}
        method_rows = []
        for method in methods:
            column = f"{method}.{name}"
            if column not in table:
                continue
            comparisons = {}
            for control, control_estimate in control_estimates.items():
                difference = paired_difference(table[column], table[f"{control}.{name}"],
                                               **options)
                comparisons[control] = ControlComparison(
                    control, control_estimate, difference, beats(difference, higher),
                    beats(difference, not higher))
            method_rows.append(MetricSummary(method, name, family, higher,
                                             mean_interval(table[column], **options), None,
                                             comparisons=comparisons))
        ranks = rank_methods({row.method: row.estimate.mean for row in method_rows}, higher)
        for row in method_rows:
            row.rank = ranks[row.method]
        oriented_means[name] = {row.method: oriented(row.estimate.mean, higher)
                                for row in method_rows}
        summaries += method_rows
        summaries += [MetricSummary(control, name, family, higher, estimate, None, True)
                      for control, estimate in control_estimates.items()]
    extremes = {}
    if ranking_metric is not None:
        higher = bool(present[ranking_metric].get("higher_is_better", True))
        for method in methods:
            column = f"{method}.{ranking_metric}"
            if column in table:
                extremes[method] = extreme_images(table[column], higher, images_per_method,
                                                  ranking_metric)
    return DatasetStatistics(list(methods), present_controls, present, summaries,
                             disagreements(oriented_means), interval, confidence,
                             ranking_metric, extremes)
