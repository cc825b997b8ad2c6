"""Datasets: bundled real data packs, dataset versions (manifest + splits), and torch loading."""
