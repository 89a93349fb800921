"""Why the second-order samplers score worse on the shipped model: they add fine detail the data does not have.

    .venv/bin/python benchmarks/sampler_detail.py      # about 4 minutes on 2 cores

For 64 images of ddpm-cifar10 from the quality table's seeded noise: how far each sampler lands from the ODE's
solution (DDIM in 500 steps stands in for it: mean absolute difference per pixel, images in [-1, 1]), and the fine
detail (diffedu.metrics.fine_detail: the mean square of the grey-level Laplacian) of its images, against that of 64
real test images; and
the same for Heun with its last correction left out (Euler's step into t = 0, so that the model is never asked at
t = 0, where sigma = 0.01), which tests the diagnosis that the excess comes from the model's predictions there.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffedu import data, evaluation  # noqa: E402
from diffedu.metrics import fine_detail  # noqa: E402
from diffedu.pipelines import load_pipeline  # noqa: E402
from diffedu.samplers import HeunScheduler, StepOutput, ddim_update, sample  # noqa: E402


class HeunEulerIntoZero(HeunScheduler):
    """Heun's steps, but Euler's alone into the last timestep, t = 0: the model is never asked there."""

    def sample_step(self, model, x, t, generator=None) -> StepOutput:
        if self.prev_timestep(t) != 0:
            return super().sample_step(model, x, t, generator)
        x0, eps = self.predict(model(x, torch.full((len(x),), t, device=x.device)), t, x)
        return StepOutput(ddim_update(x0, eps, self.alpha_bar(0, x)), x0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data")
    p.add_argument("--images", type=int, default=64)
    args = p.parse_args()
    real = data.to_float(data.load_cifar10(args.data, train=False).images[: args.images])
    pipe = load_pipeline("ddpm-cifar10", "cpu")
    noise = pipe.noise(args.images, torch.Generator().manual_seed(0))  # the first batch of every quality row
    solution = pipe.sample(steps=500, x_T=noise, progress=False)
    print(f"{args.images} images: distance to DDIM 500 | fine detail (real test images: {fine_detail(real):.3f})")
    for label in (
        "DDIM 10",
        "DDIM 20",
        "DDIM 50",
        "DDIM 250",
        "DPM-Solver++(2M) 10",
        "DPM-Solver++(2M) 20",
        "DPM-Solver++(2M) 50",
        "Heun 10",
        "Heun 25",
        "DPM-Solver++(2M) 10 log-SNR",
        "DPM-Solver++(2M) 20 log-SNR",
        "Heun 10 log-SNR",
    ):
        method = evaluation.Method.named(label)
        images = pipe.sample(
            steps=method.steps, sampler=method.sampler, spacing=method.spacing, x_T=noise, progress=False
        )
        print(f"  {label:>26}: {(images - solution).abs().mean():.3f} | {fine_detail(images):.3f}", flush=True)
    for steps in (10, 25):
        images = sample(pipe.unet, HeunEulerIntoZero(pipe.schedule).set_timesteps(steps), noise, progress=False)
        print(
            f"  {f'Heun {steps}, Euler into t = 0':>26}: {(images - solution).abs().mean():.3f} | "
            f"{fine_detail(images):.3f}"
        )


if __name__ == "__main__":
    main()
