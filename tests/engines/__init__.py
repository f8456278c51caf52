"""Tests of the engines that run the Flower apps (in-process grid, Ray wrapper)."""
