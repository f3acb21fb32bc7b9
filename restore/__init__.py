"""restore: imaging inverse problems solved with diffusion priors.

Images are tensors (B, C, H, W) in [-1, 1] throughout the library; files are
converted at I/O (restore.io).
"""

__version__ = "0.1.0"
