"""The generative model: the autoencoder or principal-component codec, the denoiser, diffusion,
sampling, and the sets of generated models on disk."""
