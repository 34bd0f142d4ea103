"""Throughput over a dataset, side by side: our dataset run (through the CLI, batched) against
Captum and pytorch-grad-cam each looping over the same DataLoader, and one metric against
Quantus on the same maps.

Make the images first (``benchmarks/make_dataset.py``), then::

    python benchmarks/make_dataset.py /tmp/ds1200 --count 1200
    python benchmarks/dataset_throughput.py --data /tmp/ds1200/dataset.csv --work /tmp/throughput \\
        --images 1000

The first ``--images`` images (224 px, batches of ``--batch-size``; ``--sampling-images`` for
IG and SmoothGrad, default the same) are explained by, each side in a fresh child process, the
sides interleaved (ours, peer, ours, peer ... ``--repeats`` times):

* **Grad-CAM** at EfficientNet-Lite0's last feature layer: ours
  ``cli.py predict --config saliency_dataset --model.methods [gradcam]``; pytorch-grad-cam's
  ``GradCAM`` as its README shows (``with GradCAM(model, target_layers) as cam``, a model whose
  weights require grad, ``ClassifierOutputTarget`` per image).
* **Integrated Gradients**, 32 Gauss-Legendre points, black baseline, 64 path points per pass:
  ours ``IntegratedGradients(steps=32, internal_batch_size=64)`` (the config's); Captum's
  ``IntegratedGradients.attribute(..., n_steps=32, internal_batch_size=64)``.
* **SmoothGrad**, 16 noisy samples: ours ``SmoothGrad(samples=16)`` (one noisy copy of the
  batch per pass); Captum's ``NoiseTunnel(Saliency)`` with ``nt_samples=16`` and
  ``nt_samples_batch_size=1`` (the same passes).

Ours runs with ``--model.metrics []`` and ``--model.controls []``, and writes its map shards,
index and sheets as a user's run does (its report is off: with no metric there is nothing to
report). The peers' loop reads the same :class:`~datamodules.image_dataset.DatasetImages`
DataLoader (the same pixels, batches and targets: the images' true classes) and keeps nothing.

Figures: images/s over the loop (ours: from the predict loop's start to its end, by a callback
in the run; the whole command's wall time too), and memory of each child process: its peak
resident memory (``VmHWM``) and the growth of it over the loop (``VmHWM`` reset through
``/proc/self/clear_refs`` at the loop's start, as ``attribution.py`` measures a call). Ratios
are ours / peer: images/s above 1 is faster, memory below 1 leaner.

Then the metric: our pixel-flipping (deletion) curve,
:func:`lightning_modules.saliency.evaluation.perturbation_curves` with a zero substrate, batched,
against ``quantus.PixelFlipping`` (``perturb_baseline=0``, softmax, the same number of steps) on
the same ``--metric-images`` images and Grad-CAM maps, in this process; and ROAD most relevant
first (:class:`~lightning_modules.saliency.metrics.road.ROADMoRF`, Quantus' 50 percentages and
noise) against ``quantus.ROAD`` on the first ``--road-images`` of them, ours also with one
thread solving (as Quantus' SciPy solve; the forward passes keep torch's threads). Quantus
0.6.0's ROAD ranks a map broadcast over the colour channels and then indexes pixels with those
ranks (an IndexError on colour images), so both sides get the images in grey, one channel (the
mean of the three normalized channels), and the same network reading it copied to three
channels (ours folded, as for pixel flipping).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SIZE = 224
METHODS = {
    "Grad-CAM": ("gradcam", "pytorch-grad-cam GradCAM"),
    "Integrated Gradients, 32 steps": (
        "{class_path: lightning_modules.saliency.IntegratedGradients, "
        "init_args: {steps: 32, internal_batch_size: 64}}",
        "Captum IntegratedGradients"),
    "SmoothGrad, 16 samples": (
        "{class_path: lightning_modules.saliency.SmoothGrad, init_args: {samples: 16}}",
        "Captum NoiseTunnel(Saliency)"),
}


def status_kib(key: str) -> int:
    return int(re.search(key + r":\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def start_loop_clock() -> dict[str, float]:
    """Reset the peak resident memory to the current and note the time."""
    Path("/proc/self/clear_refs").write_text("5")
    return {"start": time.perf_counter(), "rss_start": status_kib("VmRSS") * 1024}


def stop_loop_clock(clock: dict[str, float], images: int) -> dict[str, float]:
    import torch

    seconds = time.perf_counter() - clock["start"]
    peak = status_kib("VmHWM") * 1024
    return {"seconds": seconds, "images": images, "peak_rss": peak,
            "growth": peak - clock["rss_start"], "threads": torch.get_num_threads()}


try:  # the callback our run loads by class path (benchmarks.dataset_throughput.LoopClock)
    import pytorch_lightning as pl

    class LoopClock(pl.Callback):
        """Times the predict loop of our run and reads its memory; writes JSON to ``out``."""

        def __init__(self, out: str) -> None:
            self.out = out
            self.images = 0

        def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
            self.clock = start_loop_clock()

        def on_predict_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, *args: Any
                                 ) -> None:
            self.images += len(outputs.index)

        def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
            # After the writer's on_predict_end (it comes first in --trainer.callbacks): the
            # whole index is timed too.
            Path(self.out).write_text(json.dumps(stop_loop_clock(self.clock, self.images)))
except ImportError:  # pragma: no cover
    pass


# --- the sides -------------------------------------------------------------------------------

def ours(args: argparse.Namespace, method: str, images: Path, number: int) -> dict[str, float]:
    """Our dataset run through the CLI, in its own folder."""
    work = args.work / f"ours_{number:03d}"
    work.mkdir(parents=True)
    out = work / "loop.json"
    callbacks = json.dumps([
        {"class_path": "callbacks.dataset_writer.DatasetWriter", "init_args": {"report": False}},
        {"class_path": "benchmarks.dataset_throughput.LoopClock", "init_args": {"out": str(out)}}])
    command = [sys.executable, str(REPO / "cli.py"), "predict", "--config", "saliency_dataset",
               "--data.images", str(images), "--data.batch_size", str(args.batch_size),
               "--data.image_size", str(SIZE), "--model.methods", f"[{method}]",
               "--model.metrics", "[]", "--model.controls", "[]",
               "--trainer.enable_progress_bar", "false", "--trainer.callbacks", callbacks,
               *args.ours_options.split()]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"our run failed:\n{' '.join(command)}\n{done.stderr[-3000:]}")
    result = json.loads(out.read_text())
    result["wall"] = wall
    result["command"] = " ".join(command[1:])
    return result


def peer_in_child(args: argparse.Namespace, group: str, images: Path) -> dict[str, float]:
    command = [sys.executable, __file__, "--peer", group, "--peer-images", str(images),
               "--batch-size", str(args.batch_size), "--work", str(args.work)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"the peer failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall"] = wall
    return result


def dataset_loader(images: Path, batch_size: int) -> Any:
    """The same DataLoader as our run's: :class:`DatasetImages`, one process."""
    from datamodules.image_dataset import DatasetImages

    data = DatasetImages(images=str(images), image_size=SIZE, batch_size=batch_size)
    data.setup("predict")
    return data.predict_dataloader()


def run_peer(args: argparse.Namespace) -> None:
    """The child: one peer's loop over the DataLoader; JSON on stdout."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    from lightning_modules.backbones import load_backbone

    backbone = load_backbone("efficientnet_lite0")
    loader = dataset_loader(Path(args.peer_images), args.batch_size)
    group = args.peer
    if group == "Grad-CAM":
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        model = backbone.requires_grad_(True).eval()  # as the README: a trainable model
        clock, count = start_loop_clock(), 0
        with GradCAM(model=model, target_layers=[model.features[-1]]) as cam:
            for batch in loader:
                targets = [ClassifierOutputTarget(backbone.class_index(label))
                           for label in batch["labels"]]
                cam(input_tensor=backbone.normalize(batch["pixels"]), targets=targets)
                count += len(batch["index"])
    else:
        from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

        ig, tunnel = IntegratedGradients(backbone), NoiseTunnel(Saliency(backbone))
        black = backbone.normalize(torch.zeros(1, 3, SIZE, SIZE))
        clock, count = start_loop_clock(), 0
        for batch in loader:
            inputs = backbone.normalize(batch["pixels"])
            target = torch.tensor([backbone.class_index(label) for label in batch["labels"]])
            if group.startswith("Integrated"):
                ig.attribute(inputs, baselines=black, target=target, n_steps=32,
                             internal_batch_size=64)
            else:
                # Our noise level, 0.15 of the value range (here the batch's: Captum takes one
                # sigma per input tensor).
                sigma = 0.15 * (inputs.amax() - inputs.amin()).item()
                tunnel.attribute(inputs, nt_type="smoothgrad", nt_samples=16,
                                 nt_samples_batch_size=1, stdevs=sigma, target=target)
            count += len(batch["index"])
    print(json.dumps(stop_loop_clock(clock, count)))


# --- the metric against Quantus --------------------------------------------------------------

def interleaved(calls: dict[str, Any], repeats: int) -> tuple[dict[str, list[float]], dict]:
    """Each call's wall times over ``repeats`` interleaved rounds, and its last result."""
    times: dict[str, list[float]] = {side: [] for side in calls}
    results = {}
    for _ in range(repeats):
        for side, call in calls.items():
            started = time.perf_counter()
            results[side] = call()
            times[side].append(time.perf_counter() - started)
    return times, results


def metric_comparison(args: argparse.Namespace, images: Path) -> None:
    import copy
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    from lightning_modules.backbones import load_backbone
    from lightning_modules.saliency.cam import grad_cam

    backbone = load_backbone("efficientnet_lite0")
    inputs, targets = [], []
    for batch in dataset_loader(images, args.batch_size):
        inputs.append(backbone.normalize(batch["pixels"]))
        targets += [backbone.class_index(label) for label in batch["labels"]]
    inputs, targets = torch.cat(inputs), torch.tensor(targets)
    maps = torch.cat([grad_cam(inputs[i:i + 16], targets[i:i + 16], backbone).detach()
                      for i in range(0, len(inputs), 16)])
    # Grad-CAM's maps are 0 wherever the ReLU cut: a tiny noise breaks the ties, the same for
    # both sides (Quantus' unstable argsort and our reading order would order them otherwise).
    maps = maps + 1e-6 * torch.rand(maps.shape, generator=torch.Generator().manual_seed(0))
    # Ours as the dataset run has it: batch norms folded, channels-last (the same curves up to
    # float rounding); Quantus gets the network as a user hands it over.
    fast = copy.deepcopy(backbone).fold_batch_norm().use_channels_last()
    pixel_flipping_comparison(args, backbone, fast, inputs, targets, maps)
    if args.road_images:
        count = min(args.road_images, len(inputs))
        road_comparison(args, backbone, fast, inputs[:count], maps[:count])


def pixel_flipping_comparison(args: argparse.Namespace, backbone: Any, fast: Any, inputs: Any,
                              targets: Any, maps: Any) -> None:
    """Prints our pixel-flipping curves' time against ``quantus.PixelFlipping``'s on the same
    maps (``fast``: our folded network; ``backbone``: the network as loaded, Quantus')."""
    import numpy as np
    import quantus
    import torch

    from lightning_modules.saliency.evaluation import perturbation_curves

    steps = args.metric_steps
    # Quantus counts channel values (3 a pixel), and its step must divide H * W.
    metric = quantus.PixelFlipping(features_in_step=3 * SIZE * SIZE // steps,
                                   perturb_baseline=0.0, normalise=False, disable_warnings=True)
    times, results = interleaved({
        "ours": lambda: perturbation_curves(fast, inputs, torch.zeros_like(inputs), maps,
                                            targets, steps, args.batch_size)[1],
        "quantus": lambda: np.asarray(metric(
            model=backbone, x_batch=inputs.numpy(), y_batch=targets.numpy(),
            a_batch=maps[:, None].numpy(), device="cpu", softmax=True,
            batch_size=args.batch_size))}, args.metric_repeats)
    difference = float(np.abs(results["ours"][:, 1:].numpy() - results["quantus"]).max())
    print(f"\n## Pixel flipping (deletion) against Quantus {quantus.__version__}\n\n"
          f"{len(inputs)} images at {SIZE} px, their Grad-CAM maps, {steps} steps of "
          f"{3 * SIZE * SIZE // steps} channel values (zero substrate), softmax of the target; "
          f"ours batched {args.batch_size} perturbed images a pass (and step 0, unperturbed, "
          f"which Quantus leaves out: 1 pass in {steps + 1} more); median of "
          f"{args.metric_repeats} interleaved calls each [min-max].\n")
    print_metric_table(times, len(inputs), "ours (`perturbation_curves`)",
                       "quantus.PixelFlipping", "max abs curve difference", f"{difference:.1e}")


def road_comparison(args: argparse.Namespace, backbone: Any, fast: Any, inputs: Any,
                    maps: Any) -> None:
    """Prints our ROAD (most relevant first) time against ``quantus.ROAD``'s on the same maps,
    in grey, and ours once more with one thread solving (Quantus' SciPy solve uses one)."""
    import numpy as np
    import quantus
    import torch

    from lightning_modules.saliency.metrics import road
    from lightning_modules.saliency.metrics.base import MetricInputs
    from lightning_modules.saliency.metrics.road import ROADMoRF

    class GreyReader(torch.nn.Module):
        """A colour network reading a one-channel image copied to its three channels."""

        def __init__(self, network: Any) -> None:
            super().__init__()
            self.network = network

        def forward(self, images: Any) -> Any:
            return self.network(images.expand(-1, 3, -1, -1))

    grey = inputs.mean(dim=1, keepdim=True)
    quantus_model, our_model = GreyReader(backbone).eval(), GreyReader(fast).eval()
    with torch.no_grad():
        targets = quantus_model(grey).argmax(dim=1)  # the class the network sees in grey
    ours = ROADMoRF(batch_size=args.batch_size)  # Quantus' percentages (1, 3, ..., 99) and noise
    metric = quantus.ROAD(percentages=ours.percentages, noise=ours.noise, normalise=False,
                          disable_warnings=True)

    def run_ours() -> Any:
        batch = MetricInputs(our_model, grey, targets, maps, explain=None,
                             generator=torch.Generator().manual_seed(0))
        return ours.curves(batch).mean(dim=0).numpy()

    def run_ours_one_thread() -> Any:
        threads = road._solver_threads
        road._solver_threads = lambda: 1  # the forward passes keep torch's threads
        try:
            return run_ours()
        finally:
            road._solver_threads = threads

    def run_quantus() -> Any:
        accuracy = metric(model=quantus_model, x_batch=grey.numpy(), y_batch=targets.numpy(),
                          a_batch=maps[:, None].numpy(), device="cpu",
                          batch_size=args.batch_size)
        return np.array([accuracy[p] for p in ours.percentages])

    times, results = interleaved({"ours": run_ours, "quantus": run_quantus,
                                  "ours_one_thread": run_ours_one_thread}, args.metric_repeats)
    print(f"\n## ROAD (most relevant first) against Quantus {quantus.__version__}\n\n"
          f"{len(inputs)} images at {SIZE} px in grey (one channel: Quantus' ROAD fails on colour "
          f"images), their Grad-CAM maps, {len(ours.percentages)} percentages "
          f"({min(ours.percentages)} to {max(ours.percentages)} %), noisy linear imputation "
          f"(noise {ours.noise}), accuracy of the grey image's own top class; ours batched "
          f"{args.batch_size} imputed images a pass through the folded network (Quantus': "
          f"the network as loaded), {torch.get_num_threads()} threads solving (and 1, last row); "
          f"median of {args.metric_repeats} interleaved calls each [min-max].\n")
    means = f"{results['ours'].mean():.3f} / {results['quantus'].mean():.3f}"
    print_metric_table(times, len(inputs), "ours (`ROADMoRF`)", "quantus.ROAD",
                       "score, ours / Quantus (noise drawn apart)", means)
    seconds = statistics.median(times["ours_one_thread"])
    print(f"| ours, 1 thread solving | {seconds:.1f} [{min(times['ours_one_thread']):.1f}-"
          f"{max(times['ours_one_thread']):.1f}] | {len(inputs) / seconds:.2f} | "
          f"**{statistics.median(times['quantus']) / seconds:.1f}** | "
          f"{results['ours_one_thread'].mean():.3f} |", flush=True)


def print_metric_table(times: dict[str, list[float]], images: int, ours_name: str,
                       quantus_name: str, agreement_header: str, agreement: str) -> None:
    """The two sides' seconds, images/s and the ratio Quantus / ours, as a Markdown table."""
    ours_seconds, quantus_seconds = (statistics.median(times[side]) for side in ("ours", "quantus"))
    spans = {side: f"[{min(t):.1f}-{max(t):.1f}]" for side, t in times.items()}
    print(f"| side | seconds | images/s | Quantus / ours, time | {agreement_header} |")
    print("|---|---|---|---|---|")
    print(f"| {ours_name} | {ours_seconds:.1f} {spans['ours']} | {images / ours_seconds:.2f} "
          "| | |")
    print(f"| {quantus_name} | {quantus_seconds:.1f} {spans['quantus']} | "
          f"{images / quantus_seconds:.2f} | **{quantus_seconds / ours_seconds:.1f}** | "
          f"{agreement} |", flush=True)


# --- main ------------------------------------------------------------------------------------

def first_images(data: Path, count: int, out: Path) -> Path:
    """A CSV of the dataset's first ``count`` images (path, label; absolute paths)."""
    with open(data, newline="") as handle:
        table = list(csv.DictReader(handle))
    if len(table) < count:
        sys.exit(f"{data} has {len(table)} images, fewer than {count}")
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label"])
        writer.writeheader()
        for row in table[:count]:
            writer.writerow({"path": str((data.parent / row["path"]).resolve()),
                             "label": row["label"]})
    return out


def mib(count: float) -> str:
    return f"{count / 2**20:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="make_dataset.py's dataset.csv")
    parser.add_argument("--work", type=Path, required=True, help="folder for the runs (fresh)")
    parser.add_argument("--images", type=int, default=1000, help="images (Grad-CAM)")
    parser.add_argument("--sampling-images", type=int, default=0,
                        help="images for IG and SmoothGrad (0: --images)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds per method")
    parser.add_argument("--only", nargs="*",
                        help="methods whose name starts with one of these (Grad, Integrated, "
                             "Smooth): a word inside a name would pick Grad-CAM's 'Grad' out of "
                             "'Integrated Gradients' too")
    parser.add_argument("--metrics-only", action="store_true",
                        help="no throughput rows: only the metrics against Quantus")
    parser.add_argument("--metric-images", type=int, default=64,
                        help="images for pixel flipping against Quantus (ROAD takes the first "
                             "--road-images of them; 0: neither)")
    parser.add_argument("--metric-steps", type=int, default=24,
                        help="a multiple of 3 (Quantus counts channel values per step)")
    parser.add_argument("--metric-repeats", type=int, default=2)
    parser.add_argument("--road-images", type=int, default=8,
                        help="images for ROAD against Quantus (0: no ROAD row; Quantus takes "
                             "about 20 s an image here)")
    parser.add_argument("--ours-options", default="",
                        help="more options of our run, e.g. '--model.fold_batch_norm false' "
                             "(our module folds the batch norms by default)")
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    parser.add_argument("--peer-images", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if args.peer:
        return run_peer(args)
    if args.work.exists() and any(args.work.iterdir()):
        sys.exit(f"{args.work} is not empty: give a fresh folder")
    args.work.mkdir(parents=True, exist_ok=True)
    import platform

    import torch

    load = os.getloadavg()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the start; EfficientNet-Lite0, "
          f"{SIZE} px, batches of {args.batch_size}, {args.repeats} interleaved round(s)\n",
          flush=True)
    sampling = args.sampling_images or args.images
    if not args.metrics_only:
        print("| method | side | images | images/s (loop) [min-max] | ours / peer, images/s | "
              "whole command s | peak RSS | RSS growth over the loop | ours / peer, growth |")
        print("|---|---|---|---|---|---|---|---|---|")
    number = 0
    for group, (method, peer) in METHODS.items():
        if args.metrics_only or (args.only and not any(
                group.lower().startswith(word.lower()) for word in args.only)):
            continue
        count = args.images if group == "Grad-CAM" else sampling
        images = first_images(args.data, count, args.work / f"images_{count}.csv")
        results: dict[str, list[dict[str, float]]] = {"ours": [], peer: []}
        for _ in range(args.repeats):
            results["ours"].append(ours(args, method, images, number))
            number += 1
            results[peer].append(peer_in_child(args, group, images))
        rate = {side: [r["images"] / r["seconds"] for r in runs] for side, runs in results.items()}
        growth = {side: statistics.median(r["growth"] for r in runs)
                  for side, runs in results.items()}
        for side, runs in results.items():
            median = statistics.median(rate[side])
            ratio = "" if side == "ours" else f"**{statistics.median(rate['ours']) / median:.2f}**"
            grown = "" if side == "ours" else f"{growth['ours'] / max(growth[side], 1):.2f}"
            print(f"| {group} | {side} | {runs[0]['images']} | {median:.2f} [{min(rate[side]):.2f}-"
                  f"{max(rate[side]):.2f}] | {ratio} | "
                  f"{statistics.median(r['wall'] for r in runs):.0f} | "
                  f"{mib(statistics.median(r['peak_rss'] for r in runs))} | "
                  f"{mib(growth[side])} | {grown} |", flush=True)
        print(f"<!-- threads in the loop: ours {[r.get('threads') for r in results['ours']]}, "
              f"peer {[r.get('threads') for r in results[peer]]}; load "
              f"{os.getloadavg()[0]:.1f} -->", flush=True)
        print(f"<!-- ours: {results['ours'][0]['command']} -->", flush=True)
    if args.metric_images:
        metric_comparison(args, first_images(args.data, args.metric_images,
                                             args.work / f"images_{args.metric_images}.csv"))
    load = os.getloadavg()
    print(f"\nLoad average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")


if __name__ == "__main__":
    main()
