"""diffedu: learn diffusion models by building them.

    profiles    DIFFEDU_PROFILE (smoke | cpu | gpu), device, seeds
    data        CIFAR-10 as one uint8 tensor; batches on tensors
    schedules   beta schedules, alpha-bar, SNR, posterior, q_sample
    nets        the UNet, and an exact denoiser for Gaussian data
    samplers    DDPM and DDIM (scheduler objects and plain functions)
    training    the epsilon loss, EMA, the Trainer
    checkpoint  safetensors + JSON, with clear errors
    vae         the VAE 32x32x3 <-> 8x8x4, its KL term and loss
    latent      the data set encoded once, the scale factor, LatentDiffusion
    metrics     PSNR, and FID / KID with the TF-Inception network
    bench       pixel vs latent, DDPM vs DDIM: time, memory, FID/KID side by side
    pretrained  shipped checkpoints by name, their cards and recipes
    viz         image grids and loss curves
    widgets     sliders for noising and sampling trajectories
    cli         python -m diffedu train | sample | bench
"""
__version__ = "0.1.0"
