"""Sampling token sequences: the JAX sampler (`sampler`) and the numpy reference with the seed's draw order."""
