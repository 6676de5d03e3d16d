"""STAC for the exports: the Item of one export, its footprint, and a Collection over many."""
