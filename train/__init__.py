"""invad trainer: the diffusion UNet over backbone feature maps (see train/README.md).

Run as ``/usr/bin/python3 -m train {fit,export,schedule} ...`` with cwd = the package root.
Importing this package does not import torch.
"""

__version__ = "0.1.0"
