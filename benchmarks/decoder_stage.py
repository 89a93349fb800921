"""What the adversarial decoder stage (diffedu.adversarial) bought: the L1 decoder against the retrained one,
on the targets of the latent-quality work. Measured on a CPU:

    .venv/bin/python benchmarks/decoder_stage.py                     # vae-cifar10 vs vae-cifar10-gan, ~12 min, 2 cores
    .venv/bin/python benchmarks/decoder_stage.py --vae runs/x --seeds 1   # a run of yours, quicker

For each decoder, at `--samples` images against all the training images (TF-Inception, the quality table's protocol):
1. reconstructions of test images: PSNR, fine detail (relative to the real images'), FID, KID;
2. test latents with Gaussian noise of std 0.3 (scaled units, the size of the latent model's errors), decoded;
3. ldm-cifar10's samples (DDIM 50) decoded by it, over `--seeds` seeds (KID's spread across them beside its mean);
4. memorisation: the median distance of each sample to its nearest training image, in Inception feature space and
   in pixels, relative to real test images' (1.0: as far from the training set as unseen real images are).
Pixel DDIM 50 (ddpm-cifar10) is scored over the same seeds, as the bar the latent model has to meet.
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffedu import data, evaluation, metrics  # noqa: E402
from diffedu.latent import decode_latents, encode_latents  # noqa: E402
from diffedu.metrics import fine_detail, psnr  # noqa: E402
from diffedu.pipelines import load_pipeline, load_vae  # noqa: E402


def nearest(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Each row's Euclidean distance to its nearest row of `reference`."""
    return torch.cat([torch.cdist(chunk.double(), reference.double()).min(dim=1).values for chunk in x.split(250)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data")
    p.add_argument("--vae", nargs="+", default=["vae-cifar10", "vae-cifar10-gan"], help="the decoders to compare")
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--seeds", type=int, default=3, help="sampling seeds for the generated rows (default: 3)")
    args = p.parse_args()
    n = args.samples
    train, test = data.load_cifar10(args.data), data.load_cifar10(args.data, train=False)
    train_features = metrics.cached_features(train.images)
    train_pixels = data.to_float(train.images).flatten(1)
    real = data.to_float(test.images[:n])
    real_features = metrics.inception_features(real)
    real_nn = (
        nearest(real_features, train_features).median().item(),
        nearest(real.flatten(1), train_pixels).median().item(),
    )
    real_detail = fine_detail(real)

    def report(name: str, images: list[torch.Tensor], extra: str = "") -> None:
        """FID/KID of each seed's images (mean and spread over seeds), detail and memorisation of the first."""
        scores, first = [], None
        for batch in images:
            features = metrics.inception_features(batch)
            scores.append(metrics.scores_of(features, train_features))
            first = (features, batch) if first is None else first
        fid, kid = [s["fid"] for s in scores], [1000 * s["kid"] for s in scores]
        spread = (
            f" (seeds: {', '.join(f'{k:.1f}' for k in kid)}; std {statistics.stdev(kid):.1f})"
            if len(kid) > 1
            else f" ± {1000 * scores[0]['kid_se']:.2f} (standard error)"
        )
        nn_features = nearest(first[0], train_features).median().item() / real_nn[0]
        nn_pixels = nearest(first[1].flatten(1), train_pixels).median().item() / real_nn[1]
        print(
            f"  {name:34s} FID {statistics.mean(fid):6.2f}  KID x 1000 {statistics.mean(kid):6.2f}{spread}; "
            f"detail {fine_detail(first[1]) / real_detail:.2f}; nearest-training distance vs real test images: "
            f"{nn_features:.2f} (Inception), {nn_pixels:.2f} (pixels){extra}",
            flush=True,
        )

    print(f"{n} images per row against all {len(train)} training images; {args.seeds} seed(s) for generated rows")
    report("real test images (the yardstick)", [real])
    seeds = [1000 * s for s in range(args.seeds)]
    pixel = load_pipeline("ddpm-cifar10", "cpu")
    report("ddpm-cifar10, DDIM 50 (the bar)", [evaluation.sample_images(pixel, n, steps=50, seed=s) for s in seeds])
    for name in args.vae:
        vae = load_vae(name, "cpu")
        print(f"\n{name}")
        z = encode_latents(vae, real)
        reconstructions = decode_latents(vae, z)
        report("reconstructions", [reconstructions], f"; PSNR {psnr(reconstructions, real).mean():.2f} dB")
        noisy = z + 0.3 * torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
        report("test latents + noise 0.3, decoded", [decode_latents(vae, noisy)])
        ldm = load_pipeline("ldm-cifar10", "cpu", vae=name)
        report("ldm-cifar10, DDIM 50", [evaluation.sample_images(ldm, n, steps=50, seed=s) for s in seeds])


if __name__ == "__main__":
    main()
