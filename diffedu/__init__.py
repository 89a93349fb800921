"""diffedu: learn diffusion models by building them.

The modules, in layers: each imports only from the layers below it.

    cli          python -m diffedu train | sample | fid | bench | student
    check        the checks of the lessons' exercises;  classroom: the student edition
    bench        pixel vs latent, DDPM vs DDIM: time, memory, FID/KID;  report: its markdown tables
    pipelines    a model made ready to sample: Diffusion, LatentDiffusion, load_pipeline
    profiles     DIFFEDU_PROFILE (smoke | cpu | gpu): how much a lesson does, and its recipes
    recipes      how to train each model, by name: kind, architecture, steps, batch, learning rate
    pretrained   shipped checkpoints by name, and their cards
    widgets      sliders for noising and sampling trajectories, the latent explorer
    training     the epsilon loss, EMA, the Trainer (resumable, saves on Ctrl-C)
    checkpoint   safetensors + JSON, written atomically, with clear errors
    latent       scaled latents: the data set encoded once, the scale factor
    metrics      PSNR, and FID / KID with the TF-Inception network;  measure: FLOPs, time, memory
    samplers     DDPM and DDIM schedulers, the sampling loop, inversion, slerp
    nets, vae    the UNet and an exact denoiser for Gaussian data; the VAE
    schedules    beta schedules, alpha-bar, SNR, posterior, q_sample
    data, viz    CIFAR-10 as one uint8 tensor; image grids and loss curves
    env, errors  the home folder and its caches, the device, seeds; the errors a user can fix
"""
__version__ = "0.1.0"
