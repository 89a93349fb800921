"""diffedu: learn diffusion models by building them.

    profiles    DIFFEDU_PROFILE (smoke | cpu | gpu), device, seeds
    data        CIFAR-10 as one uint8 tensor; batches on tensors
    schedules   beta schedules, alpha-bar, SNR, posterior, q_sample
    nets        the UNet, and an exact denoiser for Gaussian data
    samplers    DDPM and DDIM (scheduler objects and plain functions)
    training    the epsilon loss, EMA, the Trainer
    checkpoint  safetensors + JSON, with clear errors
    viz         image grids and loss curves
    widgets     sliders for noising and sampling trajectories
    cli         python -m diffedu train | sample
"""
__version__ = "0.1.0"
