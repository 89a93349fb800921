"""Why the shipped latent model is behind the pixel one: the VAE, or the latent UNet? Measured on a CPU:

    .venv/bin/python benchmarks/latent_gap.py                       # about 5 minutes on 2 cores
    .venv/bin/python benchmarks/latent_gap.py --vae vae-cifar10     # with the L1 decoder, as lesson 05's first table

1. The latent space: statistics of vae-cifar10's scaled latents over the training images, and how much noise
   the decoder saw in training (the encoder's posterior std, in the same scaled units).
2. The latent UNet on its own, where the decoder cannot blur anything: the Frechet distance between 1,000 of
   ldm-cifar10's latents (DDIM 50) and the training images' latents (256 values each), beside the test images'
   latents (the yardstick: a perfect model), test latents with Gaussian noise of known size added, and the
   same UNet trained on half as many examples (ldm-cifar10-cond, unguided).
3. The decoder under the errors a diffusion model makes: test latents plus noise of std sigma, decoded. PSNR
   against the real images, sharpness (the energy of the image's Laplacian relative to real images': 1.0 = as
   much fine detail as a photo, less = blur), and FID / KID of 500 of them against all the training images
   (sigma 0 is the VAE's reconstruction floor).
4. Sharpness of what each model makes: the VAE's reconstructions, ldm-cifar10's and ddpm-cifar10's samples.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffedu import data, metrics  # noqa: E402
from diffedu.latent import decode_latents, encode_latents  # noqa: E402
from diffedu.metrics import fine_detail as detail  # noqa: E402
from diffedu.metrics import frechet_distance, gaussian_fit, psnr
from diffedu.pipelines import load_pipeline  # noqa: E402
from diffedu.samplers import sample_trajectory  # noqa: E402


def latent_fd(latents: torch.Tensor, reference: torch.Tensor) -> float:
    return frechet_distance(*gaussian_fit(latents.flatten(1).double()), *gaussian_fit(reference.flatten(1).double()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data")
    p.add_argument("--vae", help="the VAE to decode with (default: the one ldm-cifar10 names, vae-cifar10-gan)")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--pixel-samples", type=int, default=64, help="ddpm-cifar10 samples for the sharpness row (DDIM 50)")
    args = p.parse_args()
    torch.manual_seed(0)
    train, test = data.load_cifar10(args.data), data.load_cifar10(args.data, train=False)
    ldm = load_pipeline("ldm-cifar10", "cpu", vae=args.vae)
    vae, n = ldm.vae, args.samples
    scale = vae.config.scale_factor

    with torch.inference_mode():
        x_train = data.to_float(train.images)
        mean, logvar = vae.encode(x_train)
        z_train = mean * scale
        z_test = encode_latents(vae, data.to_float(test.images[:n]))
    std = z_train.std(dim=(0, 2, 3))
    centred = z_train - z_train.mean(dim=(0, 2, 3), keepdim=True)
    kurtosis = centred.pow(4).mean(dim=(0, 2, 3)) / centred.pow(2).mean(dim=(0, 2, 3)).pow(2) - 3
    neighbours = torch.corrcoef(torch.stack([centred[..., :-1].flatten(), centred[..., 1:].flatten()]))[0, 1]
    posterior = (0.5 * logvar).exp().mean() * scale
    print("1. the latent space (scaled latents of the 5,170 training images)")
    print(
        f"   std per channel {', '.join(f'{s:.2f}' for s in std)}; excess kurtosis per channel "
        f"{', '.join(f'{k:.2f}' for k in kurtosis)} (0 for a Gaussian)"
    )
    print(
        f"   correlation of horizontal neighbours {neighbours:.2f}; encoder's posterior std {posterior:.4f} "
        f"(the noise the decoder saw in training, in the same units)"
    )

    def latents_of(pipe) -> torch.Tensor:  # the sampler without the decoder
        with torch.inference_mode():
            return torch.cat(
                [
                    sample_trajectory(pipe.unet, pipe.scheduler("ddim", 50), pipe.noise(100, g), 0, g, False).images
                    for g in (torch.Generator().manual_seed(i) for i in range(0, n, 100))
                ]
            )[:n]

    generated = latents_of(ldm)
    reference = z_train[torch.randperm(len(z_train))[:n]]
    print(f"\n2. the latent UNet alone: Frechet distance in latent space, {n} latents vs {n} training latents")
    rows = {
        "test images' latents (a perfect model)": z_test,
        "ldm-cifar10, DDIM 50": generated,
        # the same UNet trained on half as many examples (batch 128, not 256), sampled without guidance
        "ldm-cifar10-cond at w = 0, DDIM 50": latents_of(load_pipeline("ldm-cifar10-cond", "cpu")),
    }
    for sigma in (0.1, 0.2, 0.3, 0.5):
        rows[f"test latents + noise of std {sigma}"] = z_test + sigma * torch.randn_like(z_test)
    for name, z in rows.items():
        print(f"   {name:40s} {latent_fd(z, reference):8.2f}   std {z.std():.2f}")

    print("\n3. the decoder under latent errors: test latents + noise, decoded (detail 1.0 = real images')")
    real = data.to_float(test.images[:n])
    real_detail = detail(real)
    train_features = metrics.cached_features(train.images)
    with torch.inference_mode():
        for sigma in (0.0, 0.1, 0.2, 0.3, 0.5):
            decoded = decode_latents(vae, z_test + sigma * torch.randn_like(z_test))
            scores = metrics.score(decoded[:500], train_features)
            print(
                f"   sigma {sigma:.1f}: PSNR {psnr(decoded, real).mean():5.2f} dB, "
                f"detail {detail(decoded) / real_detail:.2f}, "
                f"FID {scores['fid']:6.2f}, KID x 1000 {1000 * scores['kid']:6.2f}"
            )

    print("\n4. detail of what each model makes, relative to real test images")
    with torch.inference_mode():
        pixel = load_pipeline("ddpm-cifar10", "cpu").sample(
            args.pixel_samples, 50, generator=torch.Generator().manual_seed(0), progress=False
        )
        print(
            f"   VAE reconstructions {detail(decode_latents(vae, z_test)) / real_detail:.2f}; "
            f"ldm-cifar10 samples {detail(decode_latents(vae, generated)) / real_detail:.2f}; "
            f"ddpm-cifar10 samples (DDIM 50, {args.pixel_samples}) {detail(pixel) / real_detail:.2f}"
        )


if __name__ == "__main__":
    main()
