"""Aperture photometry of IRAC images as a pure library: arrays in, measurements out (no I/O)."""
