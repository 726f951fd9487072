"""Networks beyond nnU-Net's own, built on ``dynamic-network-architectures`` modules."""
