"""Do the shipped diffusion models fit their training images? Each one's denoising loss on training images and on as
many CIFAR-10 test images it never saw, at the same timesteps and noise (`evaluation.denoising_gap`): a model that
learns from its data denoises both alike; one that memorises it denoises its own better.

    .venv/bin/python benchmarks/generalisation_gap.py --out data/bench/generalisation_gap.json
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffedu import data, env  # noqa: E402
from diffedu.evaluation import denoising_gap  # noqa: E402
from diffedu.latent import cached_latents  # noqa: E402
from diffedu.nets import count_parameters  # noqa: E402
from diffedu.pipelines import LatentDiffusion, load_pipeline  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["ldm-cifar10", "ddpm-cifar10"])
    p.add_argument("--images", type=int, default=1017, help="training and test images each (default: 1017)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", type=Path, help="write the losses here as JSON")
    args = p.parse_args()
    device = env.get_device(args.device)
    test = data.load_cifar10(train=False).images[: args.images]
    train = data.load_cifar10().images[: len(test)]  # all trained on by every shipped model
    table: dict = {"images": len(test), "models": {}}
    for name in args.models:
        pipe = load_pipeline(name, device)
        if isinstance(pipe, LatentDiffusion):  # the latents it trained on: the encoder's means, scaled
            seen, unseen = (cached_latents(pipe.vae, images, flips=False) for images in (train, test))
        else:
            seen, unseen = data.to_float(train), data.to_float(test)
        rows = denoising_gap(pipe, seen, unseen)
        table["models"][name] = {"parameters": count_parameters(pipe.unet), "values": seen[0].numel(), "rows": rows}
        print(f"{name}: held-out loss / training loss, {len(test)} images each")
        for r in rows:
            print(
                f"  t = {r['t']:4d}: training {r['training']:.4f}, held-out {r['held-out']:.4f}, "
                f"ratio {r['ratio']:.3f} ± {r['se']:.3f}"
            )
    if args.out:
        env.write_json({**table, "machine": env.machine(device)}, args.out)


if __name__ == "__main__":
    main()
